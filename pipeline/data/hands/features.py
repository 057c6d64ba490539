"""The hand's numbers, no MediaPipe needed: what one detection holds and the 64 features a keypoint model reads.

A `detection` (what `detect.detection` returns and the detection store keeps) is a list: found (bool),
handedness (MediaPipe's "Left"/"Right", "" with no hand), its score, the 21 `keypoints`' x, y, z in the padded
square's normalised coordinates, then the 21 world landmarks' x, y, z (metres about the hand's centre); all 0 when
no hand was found. The `features` are 64 numbers made from the keypoints (`canonical`); a `features_row` is a
landmarks.csv row: found, handedness, score, then the features.
"""
from __future__ import annotations

N_POINTS = 21
FEATURES = [f"lm{i:02d}_{axis}" for i in range(N_POINTS) for axis in "xyz"] + ["hand"]
N_FEATURES = len(FEATURES)  # 64: what a keypoint model (and the fused and hand-network ones' second input) reads
COLUMNS = ["hand_found", "handedness", "hand_score"]  # per image, beside the features in landmarks.csv
DETECTION_WIDTH = len(COLUMNS) + 6 * N_POINTS  # found, handedness, score, 21 keypoints x y z, 21 world x y z
# finger chains from the wrist (0): thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20
BONES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
         (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20)]


def no_detection() -> list:
    """The detection of a photo with no hand found."""
    return [False, "", 0.0] + [0.0] * (6 * N_POINTS)


def keypoints(detection: list, world: bool = False) -> list:
    """The 21 [x, y, z] keypoints of a `detection` (with `world`, its world landmarks)."""
    start = len(COLUMNS) + (3 * N_POINTS if world else 0)
    return [detection[start + 3 * i:start + 3 * i + 3] for i in range(N_POINTS)]


def canonical(points, handedness: str):
    """64 features from MediaPipe's 21 (x, y, z) image-normalised keypoints of one square image: wrist at the
    origin, mirrored if MediaPipe calls the hand "Right" (it assumes a mirrored selfie view, so an ordinary
    photo of a right hand is reported "Left"), scaled by the wrist-to-middle-knuckle distance in the image
    plane, then the found flag 1. None when the keypoints are too close together to scale."""
    import numpy as np

    p = np.asarray(points, dtype=np.float32) - np.asarray(points[0], dtype=np.float32)
    if handedness == "Right":
        p[:, 0] *= -1
    scale = float(np.linalg.norm(p[9, :2]))
    if not scale > 1e-6:
        return None
    return np.append((p / scale).ravel(), np.float32(1.0))


def features_row(detection: list) -> list:
    """The landmarks.csv row of a `detection`: found, handedness, score, then FEATURES (all 0 when no hand was found
    or its keypoints are too close together to scale)."""
    found, handedness, score = detection[:3]
    feats = canonical(keypoints(detection), handedness) if found else None
    if feats is None:
        return [False, "", 0.0] + [0.0] * N_FEATURES
    return [True, handedness, score] + [float(v) for v in feats]


def features_of(detections: list):
    """float32 (n, 64): the FEATURES of each `detection` (64 zeros, the no-hand flag included, where none was found)."""
    import numpy as np

    rows = np.asarray([features_row(d)[len(COLUMNS):] for d in detections], np.float32)
    return rows.reshape(len(detections), N_FEATURES)


def features_table(paths, detections: list):
    """landmarks.csv: `path` (as given), then COLUMNS + FEATURES, a `features_row` of each `detection`."""
    import pandas as pd

    table = pd.DataFrame([features_row(d) for d in detections], columns=COLUMNS + FEATURES)
    table.insert(0, "path", list(paths))
    return table


def is_detection(value) -> bool:
    """Whether `value` is a `detection`: found (bool), handedness (str), score and 126 more numbers (what the
    detection store holds)."""
    return (isinstance(value, list) and len(value) == DETECTION_WIDTH and isinstance(value[0], bool)
            and isinstance(value[1], str)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[2:]))
