"""Hands as model input: MediaPipe Hands finds the hand in a photo or a video frame, and what it found feeds every
hand kind (the keypoint MLP, the hand crops, the hand network).

One vocabulary throughout: a **detection** is what MediaPipe found in one photo (found, handedness, score, the 21
**keypoints**, the 21 world landmarks), kept once per photo in the detection store; the **features** are the 64
numbers a keypoint model reads, made from the keypoints on read (`features_row`, landmarks.csv's rows).

Keypoints say nothing about the room, the lighting or the skin, which is what a model trained on one signer in one
room overfits to: the features are the keypoints relative to the wrist, mirrored so that left and right hands look
alike, scaled so the wrist-to-middle-knuckle distance is 1, plus a flag that is 0 when no hand was found.

    features.py  what a detection holds, the features (no MediaPipe needed)
    detect.py    MediaPipe on one photo (`Detector`) or a stream (`Tracker`)
    batch.py     many photos: a pool of processes, through the detection store
    draw.py      the keypoints drawn on the photo

The names below are the package's interface; callers use `hands.X` (a test that stands in for MediaPipe patches `hands.batch.find`).
"""
from .batch import STORE, detections, extract, photo_features, store, store_settings, warm
from .detect import (INSTALL, MIN_CONFIDENCE, PAD, RETRY_CONFIDENCE, RETRY_GAMMA, RETRY_PADS, RETRY_TURNS, Detector,
                     Tracker, detection, frame_detection, load_rgb, native_stderr_silenced, padding, repad, require,
                     square, unturn, unturn_world)
from .draw import draw_keypoints, plot_landmarks
from .features import (BONES, COLUMNS, FEATURES, N_FEATURES, N_POINTS, canonical, features_of, features_row, features_table,
                       is_detection, keypoints, no_detection)

__all__ = ["BONES", "COLUMNS", "FEATURES", "INSTALL", "MIN_CONFIDENCE", "N_FEATURES", "N_POINTS", "PAD",
           "RETRY_CONFIDENCE", "RETRY_GAMMA", "RETRY_PADS", "RETRY_TURNS", "STORE", "Detector", "Tracker", "canonical",
           "detection", "detections", "draw_keypoints", "extract", "features_of", "features_row", "features_table", "frame_detection",
           "is_detection", "keypoints", "load_rgb", "native_stderr_silenced", "no_detection", "padding",
           "photo_features", "plot_landmarks", "repad", "require", "square", "store", "store_settings", "unturn", "unturn_world", "warm"]
