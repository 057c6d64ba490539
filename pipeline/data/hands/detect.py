"""MediaPipe Hands on photos (`Detector`: training, `predict`) and on video streams (`Tracker`: the live app, `spell`):
both pad the image alike and set MediaPipe up alike, so the keypoints a stream gives are the ones training saw.

MediaPipe 0.10.9-0.10.21 ships its hand detector and landmark models inside the wheel (`mp.solutions.hands`), so
this works offline; later releases dropped them. Those releases need numpy < 2, hence an optional extra:
`pip install -e '.[hands]'`. A photo's `detection` (features.py says what it holds) is `detection(path)`.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

from ...core.errors import PipelineError
from .features import no_detection

PAD = 0.25              # black border (fraction of the longer side): the palm detector misses hands filling the frame
MIN_CONFIDENCE = 0.3    # MediaPipe's detection threshold (its default 0.5 misses more of the dim training photos)
RETRY_GAMMA = 0.5       # no hand found: look again with the image brightened (v ** 0.5): finds ~half the misses,
                        # mostly dark hands against a bright window
RETRY_TURNS = (1, 3, 2)  # still none: look again with the image turned 90, 270, 180 degrees (np.rot90's k), plain then
                         # brightened; the palm detector misses hands pointing down (grassknoted's M, N, T; Massey's Q)
RETRY_PADS = (0.6, 0.0)  # still none: look again zoomed out (a wider border) and in (none): the palm detector misses
                         # hands too big or too small for it (a third of the Roboflow and grassknoted misses)
RETRY_CONFIDENCE = 0.1   # last: the same squares and turns with this detection threshold (a grey or dim hand)
INSTALL = "pip install -e '.[hands]'  (MediaPipe 0.10.9-0.10.21, whose wheels carry the hand models)"


def require():
    """The `mediapipe` module, or a one-line error saying how to install a release that has the hand models."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: warnings and up only
    try:
        import mediapipe as mp
    except ImportError:
        raise PipelineError(f"hand landmarks need MediaPipe: {INSTALL}") from None
    if not hasattr(mp, "solutions"):
        raise PipelineError(f"MediaPipe {mp.__version__} does not ship the hand models (mp.solutions was removed "
                            f"after 0.10.21): {INSTALL}")
    return mp


def frame_detection(photo, detector) -> tuple:
    """(its detection, the upright RGB PIL image, the keypoints) of one photo (a path, with a `Detector`) or one frame
    of a stream (an RGB array, with a `Tracker`); (None, None, None) with no hand. The detection stops after the
    keypoints (a `Tracker` gives no world landmarks): what a crop needs of it."""
    import numpy as np
    from PIL import Image

    points, handedness, score = detector(photo)
    if points is None:
        return None, None, None
    found = [True, handedness, score] + [float(v) for q in points for v in q]
    pixels = load_rgb(photo) if isinstance(photo, (str, Path)) else np.asarray(photo)
    return found, Image.fromarray(pixels), points


def load_rgb(path):
    """`path` as an upright (EXIF-applied) 8-bit RGB array, as the image models see it."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def unturn(points, k: int) -> list:
    """Keypoints found in a square image turned by `np.rot90(image, k)` (k quarter turns anticlockwise), in the
    unturned image's normalised coordinates (depth and handedness do not change under a turn)."""
    back = {0: lambda x, y: (x, y), 1: lambda x, y: (1 - y, x), 2: lambda x, y: (1 - x, 1 - y),
            3: lambda x, y: (y, 1 - x)}[k % 4]
    return [[*back(x, y), z] for x, y, z in points]


def unturn_world(points, k: int) -> list:
    """World landmarks (metric, about the hand's centre, x right and y down as in the image) found in a square image
    turned by `np.rot90(image, k)`, in the unturned image's axes: `unturn` for vectors rather than positions."""
    back = {0: lambda x, y: (x, y), 1: lambda x, y: (-y, x), 2: lambda x, y: (-x, -y), 3: lambda x, y: (y, -x)}[k % 4]
    return [[*back(x, y), z] for x, y, z in points]


def _passes(img):
    """(detection threshold, border, quarter turns, image) to look for a hand in, in order: the image on its PAD
    square, brightened, both turned by each of RETRY_TURNS, then on the RETRY_PADS squares, then all the squares
    and the turns again at RETRY_CONFIDENCE. Lazy: most hands are found in the first, which then costs no copy."""
    import numpy as np

    canvas = square(img)
    yield MIN_CONFIDENCE, PAD, 0, canvas
    bright = (255 * (np.arange(256) / 255) ** RETRY_GAMMA).astype(np.uint8)[canvas]
    yield MIN_CONFIDENCE, PAD, 0, bright
    for k in RETRY_TURNS:
        yield MIN_CONFIDENCE, PAD, k, np.ascontiguousarray(np.rot90(canvas, k))
        yield MIN_CONFIDENCE, PAD, k, np.ascontiguousarray(np.rot90(bright, k))
    for pad in RETRY_PADS:
        yield MIN_CONFIDENCE, pad, 0, square(img, pad)
    for pad in (PAD,) + RETRY_PADS:
        yield RETRY_CONFIDENCE, pad, 0, square(img, pad)
    for k in RETRY_TURNS:
        yield RETRY_CONFIDENCE, PAD, k, np.ascontiguousarray(np.rot90(canvas, k))


def repad(points, h: int, w: int, pad: float) -> list:
    """Keypoints found in an h x w image centred on a square with border `pad` (`square(img, pad)`), in the
    normalised coordinates of its PAD square (where every caller reads them); z, on the x scale, rescaled alike."""
    if pad == PAD:
        return points
    side, top, left = padding(h, w, pad)
    std, std_top, std_left = padding(h, w)
    return [[(x * side - left + std_left) / std, (y * side - top + std_top) / std, z * side / std]
            for x, y, z in points]


_SILENCED = {"depth": 0, "saved": -1}  # blocks inside `native_stderr_silenced` now, and the descriptor put aside
_SILENCED_LOCK = threading.Lock()


@contextlib.contextmanager
def native_stderr_silenced():
    """MediaPipe's C++ (TFLite's "Created TensorFlow Lite XNNPACK delegate", absl's W0000 lines) and OpenCV's FFmpeg
    (`moov atom not found`) write straight to file descriptor 2, past any log level: within the block that
    descriptor goes to /dev/null. Threads (`serve`'s streams and photo reads) share it: the first block in puts
    stderr aside, the last one out puts it back (each putting back what it saw would leave it on /dev/null for good
    when two blocks overlap)."""
    with _SILENCED_LOCK:
        if _SILENCED["depth"] == 0:
            sys.stderr.flush()
            _SILENCED["saved"], devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _SILENCED["depth"] += 1
    try:
        yield
    finally:
        with _SILENCED_LOCK:
            _SILENCED["depth"] -= 1
            if _SILENCED["depth"] == 0:
                os.dup2(_SILENCED["saved"], 2)
                os.close(_SILENCED["saved"])


def padding(h: int, w: int, pad: float = PAD) -> tuple[int, int, int]:
    """(side, top, left) of the black square an h x w image is centred on: `pad` of its longer side wider each side."""
    side = int(max(h, w) * (1 + 2 * pad))
    return side, (side - h) // 2, (side - w) // 2


def square(img, pad: float = PAD):
    """RGB array `img` centred on a black square `pad` of its longer side wider on each side (x and y then get the
    same scale in MediaPipe's normalised coordinates, and a hand filling the photo leaves the palm detector a
    margin)."""
    import numpy as np

    h, w = img.shape[:2]
    side, top, left = padding(h, w, pad)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    canvas[top:top + h, left:left + w] = img
    return canvas


def _graph(static: bool, confidence: float = MIN_CONFIDENCE):
    """MediaPipe Hands for one hand at the training settings: `static` treats each image afresh, else it is a video
    stream's (the hand is found once, then followed from the last frame's keypoints)."""
    import numpy as np

    mp = require()
    with native_stderr_silenced():
        graph = mp.solutions.hands.Hands(static_image_mode=static, max_num_hands=1, model_complexity=1,
                                         min_detection_confidence=confidence)
        # the graph's calculators open on its own threads (TFLite prints "Created TensorFlow Lite XNNPACK delegate"
        # there, once in a while after the constructor has returned): one black frame waits for them in here
        graph.process(np.zeros((32, 32, 3), np.uint8))
    return graph


def _hand(graph, img, world: bool = False) -> tuple | None:
    """(keypoints, handedness, its score) of the hand `graph` finds in RGB array `img`, or None; with `world`, then
    MediaPipe's world landmarks of the same hand (metres, about the hand's centre)."""
    with native_stderr_silenced():
        found = graph.process(img)
    if not found.multi_hand_landmarks:
        return None
    label = found.multi_handedness[0].classification[0]
    hand = [[q.x, q.y, q.z] for q in found.multi_hand_landmarks[0].landmark], label.label, float(label.score)
    if world:
        return *hand, [[q.x, q.y, q.z] for q in found.multi_hand_world_landmarks[0].landmark]
    return hand


class Detector:
    """MediaPipe Hands graphs (static images, one hand; a second at RETRY_CONFIDENCE, made when first needed); call
    it on an image path."""

    def __init__(self):
        self._graphs = {MIN_CONFIDENCE: _graph(static=True)}

    def __call__(self, path, world: bool = False) -> tuple:
        """(21 [x, y, z] keypoints in the padded square image's normalised coordinates, MediaPipe's handedness
        label, its score), or (None, "", 0.0) when no hand is found; with `world`, then the 21 world landmarks
        (`unturn_world`; None with no hand)."""
        img = load_rgb(path)
        for confidence, pad, k, canvas in _passes(img):
            if confidence not in self._graphs:
                self._graphs[confidence] = _graph(static=True, confidence=confidence)
            if (hand := _hand(self._graphs[confidence], canvas, world)) is not None:
                points, label, score = hand[:3]
                points = repad(unturn(points, k), *img.shape[:2], pad)
                return (points, label, score) + ((unturn_world(hand[3], k),) if world else ())
        return (None, "", 0.0) + ((None,) if world else ())

    def close(self):
        for graph in self._graphs.values():
            graph.close()


class Tracker:
    """One video stream's hand (the live app, `spell`): MediaPipe Hands in its video mode finds the hand once and then
    follows it from the last frame's keypoints; its palm detector runs again only when the track is lost. Frames
    (RGB arrays) are padded as `Detector` pads a photo, so `features.canonical` of the keypoints is the training features'
    computation (tests/test_live.py measures the two paths on still photos). Unlike `Detector`, a missed hand is not
    looked for again brightened or turned (up to 7 more detections a frame): the next frame looks again.
    `track=False` looks at every frame afresh (per-frame detection, what bench/live.py compares against). One per
    stream: it is not thread-safe, and frames of two streams would follow each other's hands."""

    def __init__(self, track: bool = True):
        self._hands = _graph(static=not track)

    def __call__(self, rgb) -> tuple[list | None, str, float]:
        """As `Detector`'s, for the RGB array `rgb` (the next frame of the stream)."""
        return _hand(self._hands, square(rgb)) or (None, "", 0.0)

    def reset(self):
        """Forget the hand being followed, as a new tracker would (one `serve` lends to the next stream: ~50 ms,
        where a new graph costs ~0.4 s and memory that glibc does not give back when it is closed)."""
        import numpy as np

        with native_stderr_silenced():
            self._hands.reset()
            self._hands.process(np.zeros((32, 32, 3), np.uint8))  # as `_graph`: its calculators start in here

    def close(self):
        self._hands.close()


def detection(path: str, detector: Detector) -> list:
    """The detection of the photo at `path` by `detector` (features.py: found, handedness, score, the 21 keypoints,
    the 21 world landmarks); many photos: `batch.detections`."""
    try:
        points, handedness, score, world = detector(path, world=True)
    except (OSError, ValueError) as e:  # PIL's errors for unreadable or truncated images
        raise PipelineError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
    if points is None:
        return no_detection()
    return [True, handedness, score] + [float(v) for q in points + world for v in q]


def detection_or_none(path: str, detector: Detector) -> list | None:
    """`detection`, or None for an image that cannot be read (`batch.warm` looks at images before datablock's
    verification)."""
    try:
        return detection(path, detector)
    except PipelineError:
        return None


def settings() -> dict:
    """Everything that changes what MediaPipe finds in an image: the key of the detection store (`batch.store`)."""
    import mediapipe

    return {"pad": PAD, "min_confidence": MIN_CONFIDENCE, "retry_gamma": RETRY_GAMMA, "retry_turns": RETRY_TURNS,
            "retry_pads": RETRY_PADS, "retry_confidence": RETRY_CONFIDENCE, "model_complexity": 1,
            "mediapipe": mediapipe.__version__}
