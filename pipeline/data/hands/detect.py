"""Hand landmarks as model input: MediaPipe Hands finds the hand and its 21 keypoints; a small fastai tabular
learner classifies them (`datablock.input = "landmarks"`, `train.arch = "landmark_mlp"`).

Keypoints say nothing about the room, the lighting or the skin, which is what a model trained on one signer in
one room overfits to. Each hand becomes 64 numbers: the 21 keypoints relative to the wrist, mirrored so that
left and right hands look alike (a left-handed signer's letters are the mirror image of a right-handed one's),
scaled so the wrist-to-middle-knuckle distance is 1, plus a flag that is 0 when no hand was found (the
coordinates are then all 0, which the model learns as whatever classes have no visible hand, e.g. "nothing").

MediaPipe 0.10.9-0.10.21 ships its hand detector and landmark models inside the wheel (`mp.solutions.hands`), so
this works offline; later releases dropped them. Those releases need numpy < 2, hence an optional extra:
`pip install -e '.[hands]'`.

Photos (`Detector`, training and `predict`) and video streams (`Tracker`, the live app and `spell`) find hands here,
in one module over 300 lines, because both must pad, set up MediaPipe and compute the features (`canonical`) alike.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

from ..core.errors import PipelineError

N_POINTS = 21
FEATURES = [f"lm{i:02d}_{axis}" for i in range(N_POINTS) for axis in "xyz"] + ["hand"]
N_FEATURES = len(FEATURES)  # 64: a keypoint row, what a keypoint model (and the fused one's second input) reads
COLUMNS = ["hand_found", "handedness", "hand_score"]  # per image, beside the features in landmarks.csv
PAD = 0.25              # black border (fraction of the longer side): the palm detector misses hands filling the frame
MIN_CONFIDENCE = 0.3    # MediaPipe's detection threshold (its default 0.5 misses more of the dim training photos)
RETRY_GAMMA = 0.5       # no hand found: look again with the image brightened (v ** 0.5): finds ~half the misses,
                        # mostly dark hands against a bright window
RETRY_TURNS = (1, 3, 2)  # still none: look again with the image turned 90, 270, 180 degrees (np.rot90's k), plain then
                         # brightened; the palm detector misses hands pointing down (grassknoted's M, N, T; Massey's Q)
RETRY_PADS = (0.6, 0.0)  # still none: look again zoomed out (a wider border) and in (none): the palm detector misses
                         # hands too big or too small for it (a third of the Roboflow and grassknoted misses)
RETRY_CONFIDENCE = 0.1   # last: the same squares and turns with this detection threshold (a grey or dim hand)
# finger chains from the wrist (0): thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20
BONES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11), (11, 12),
         (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20)]
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
    """(the `detection` row, the upright RGB PIL image, the keypoints) of one photo (a path, with a `Detector`) or one
    frame of a stream (an RGB array, with a `Tracker`); (None, None, None) with no hand."""
    import numpy as np
    from PIL import Image

    points, handedness, score = detector(photo)
    if points is None:
        return None, None, None
    raw = [True, handedness, score] + [float(v) for q in points for v in q]
    pixels = load_rgb(photo) if isinstance(photo, (str, Path)) else np.asarray(photo)
    return raw, Image.fromarray(pixels), points


def load_rgb(path):
    """`path` as an upright (EXIF-applied) 8-bit RGB array, as the image models see it."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def canonical(points, handedness: str):
    """64 features from MediaPipe's 21 (x, y, z) image-normalised keypoints of one square image: wrist at the
    origin, mirrored if MediaPipe calls the hand "Right" (it assumes a mirrored selfie view, so an ordinary
    photo of a right hand is reported "Left"), scaled by the wrist-to-middle-knuckle distance in the image
    plane, then the found flag 1."""
    import numpy as np

    p = np.asarray(points, dtype=np.float32) - np.asarray(points[0], dtype=np.float32)
    if handedness == "Right":
        p[:, 0] *= -1
    scale = float(np.linalg.norm(p[9, :2]))
    if not scale > 1e-6:
        return None
    return np.append((p / scale).ravel(), np.float32(1.0))


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
    (RGB arrays) are padded as `Detector` pads a photo, so `canonical` of the keypoints is the training features'
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


_DETECTOR: Detector | None = None


def _init_worker():
    """In each extraction process: MediaPipe's C++ layers print a few lines of start-up chatter to the stderr
    file descriptor, which the pool's processes send to /dev/null (errors still reach the caller as
    exceptions); then build the detector."""
    global _DETECTOR
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _DETECTOR = Detector()


def detection(path: str, detector: Detector | None = None) -> list:
    """What MediaPipe found in `path` (by `detector`, else by this process's pool detector): found, handedness,
    score, the 21 keypoints' x, y, z in the padded square, then the 21 world landmarks' x, y, z (all 0 when no
    hand); `row_of` makes a landmarks.csv row of it (`world_row_of` one of world landmarks), and a hand crop
    (hand_crops.py) its box."""
    try:
        points, handedness, score, world = (detector or _DETECTOR)(path, world=True)
    except (OSError, ValueError) as e:  # PIL's errors for unreadable or truncated images
        raise PipelineError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
    if points is None:
        return [False, "", 0.0] + [0.0] * (6 * N_POINTS)
    return [True, handedness, score] + [float(v) for q in points + world for v in q]


def detection_or_none(path: str, detector: Detector | None = None) -> list | None:
    """`detection`, or None for an image that cannot be read (`warm` looks at images before datablock's verification)."""
    try:
        return detection(path, detector)
    except PipelineError:
        return None


def _row_or_none(path: str, detector: Detector | None = None) -> list | None:
    """`_row`, or None for an image that cannot be read."""
    raw = detection_or_none(path, detector)
    return None if raw is None else row_of(raw)


def row_of(raw: list) -> list:
    """The landmarks.csv row (found, handedness, score, then FEATURES, all 0 when no hand) of a `detection` detection."""
    found, handedness, score = raw[:3]
    feats = canonical([raw[3 + 3 * i:6 + 3 * i] for i in range(N_POINTS)], handedness) if found else None
    if feats is None:
        return [False, "", 0.0] + [0.0] * len(FEATURES)
    return [True, handedness, score] + [float(v) for v in feats]


def _is_detection(value, width: int) -> bool:
    """Whether `value` is found (bool), handedness (str), score and `width` more numbers: a `detection` or a `row_of`."""
    return (isinstance(value, list) and len(value) == 3 + width and isinstance(value[0], bool)
            and isinstance(value[1], str)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[2:]))


def is_row(value) -> bool:
    """Whether `value` is a `row_of` row (what the landmark store holds)."""
    return _is_detection(value, len(FEATURES))


def is_raw(value) -> bool:
    """Whether `value` is a `detection` detection (what the hand-points store holds)."""
    return _is_detection(value, 6 * N_POINTS)


def _row(path: str, detector: Detector | None = None) -> list:
    return row_of(detection(path, detector))  # one landmarks.csv row for `path`


def extraction_settings() -> dict:
    """Everything that changes the keypoints found in an image: the key under which `content_store.landmarks` keeps them."""
    import mediapipe

    return {"pad": PAD, "min_confidence": MIN_CONFIDENCE, "retry_gamma": RETRY_GAMMA, "retry_turns": RETRY_TURNS,
            "retry_pads": RETRY_PADS, "retry_confidence": RETRY_CONFIDENCE, "model_complexity": 1, "mediapipe": mediapipe.__version__, "row": COLUMNS + FEATURES}


def extract(paths: list, log=print, workers: int | None = None, what: str = "images", store=None):
    """A DataFrame (COLUMNS + FEATURES) with one row per path, in order, from `workers` processes (default:
    the cores this process may use, at most one per 50 images), logging progress about every 10 %. With a
    `content_store.landmarks` store, images whose keypoints it holds are not looked at again and new ones are
    added to it as they come; `df.attrs["extracted"]` counts the images MediaPipe looked at."""
    import pandas as pd

    require()
    paths = [str(p) for p in paths]
    rows = store.get(paths) if store is not None else [None] * len(paths)
    todo = [p for p, r in zip(paths, rows) if r is None]
    if store is not None and len(todo) < len(paths):
        log(f"{len(paths) - len(todo)} of {len(paths)} {what} already in the keypoint store {store.path}")
    found = iter(detect(todo, log, workers, what, store))
    rows = [r if r is not None else next(found) for r in rows]
    df = pd.DataFrame(rows, columns=COLUMNS + FEATURES)
    df.attrs["extracted"] = len(todo)
    log(f"hand found in {int(df['hand_found'].sum())} of {len(df)} {what} ({df['hand_found'].mean():.1%})")
    return df


def warm(paths: list, store, log=print) -> int:
    """The keypoint rows of `paths` into `store` (a `content_store.landmarks`; those it lacks; an unreadable image
    is skipped): one process's share of datablock's work in a distributed launch. Returns how many MediaPipe looked
    at."""
    require()
    paths = [str(p) for p in paths]
    todo = [p for p, r in zip(paths, store.get(paths)) if r is None]
    detect(todo, log, None, "images", store, fn=_row_or_none)
    return len(todo)


def photo_features(paths: list, log=print, store=None):
    """(float32 FEATURES rows (n, 64), hand found per photo) for image files: what every hand model's engine
    classifies (`extract`, reusing `store`'s keypoints; a photo with no hand gives the all-0 row)."""
    import numpy as np

    feats = extract(paths, log, store=store)
    return feats[FEATURES].to_numpy(np.float32), feats["hand_found"].astype(bool).tolist()


def detect(paths: list[str], log, workers: int | None, what: str, store, fn=None) -> list:
    """`fn` (default `_row`, or `detection`) of each path, in order, from a pool of spawned MediaPipe processes (for fewer than 50 paths, or
    `workers` 1, from one detector in this process); each row goes to `store` (if any) as it arrives, so an
    interrupted extraction keeps what it found."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from ..core import distributed
    from ..core.machine import usable_cpus

    if not paths:
        return []
    fn = fn or _row
    workers = max(1, min(workers or usable_cpus() // distributed.world_size(), len(paths) // 50 + 1))
    rows, step, saved = [], max(1, len(paths) // 10), 0
    log(f"finding hands in {len(paths)} {what} with MediaPipe "
        + (f"({workers} processes)" if workers > 1 else "(in this process)"))
    if workers == 1:  # a few images: no pool to start, so a plain script needs no `if __name__ == "__main__":`
        pool, found = None, _rows_here(paths, fn)
    else:
        # spawn, not fork: a process forked after torch has run its thread pools can crash in MediaPipe's native
        # code (seen here: evaluate right after train). Like any spawning library, it needs a calling script to
        # guard its entry point with `if __name__ == "__main__":`.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        found = pool.map(fn, paths, chunksize=16)
    try:
        for i, row in enumerate(found, 1):
            rows.append(row)
            if store is not None and (i - saved >= 256 or i == len(paths)):
                store.put(paths[saved:i], rows[saved:i])  # a store that cannot keep them says so once
                saved = i
            if len(paths) >= 500 and i % step == 0 and i < len(paths):
                log(f"  {i}/{len(paths)} {what}, hand found in {sum(bool(r and r[0]) for r in rows) / i:.0%}")
    except BrokenProcessPool:
        raise PipelineError(f"a hand-finding process died (after {len(rows)} of {len(paths)} {what}): a script "
                            f"calling this needs an `if __name__ == \"__main__\":` guard; otherwise check the "
                            f"MediaPipe install: {INSTALL}") from None
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    return rows


def _rows_here(paths: list[str], fn):
    """`fn` of each path, in order, found by one detector in this process."""
    detector = Detector()
    try:
        for path in paths:
            yield fn(path, detector)
    finally:
        detector.close()


def draw(img, points):
    """RGB array `img` as a PIL image with the 21 keypoints and the bones between them drawn; `points` are in the
    padded square's normalised coordinates, as `Detector` and `Tracker` return them for that image."""
    from PIL import Image, ImageDraw

    out = Image.fromarray(img)
    w, h = out.size
    side, top, left = padding(h, w)  # `square`'s black square, the image centred in it
    xy = [(x * side - left, y * side - top) for x, y, _ in points]
    pen = ImageDraw.Draw(out)
    width = max(2, round(max(w, h) / 150))
    for a, b in BONES:
        pen.line([xy[a], xy[b]], fill=(0, 255, 0), width=width)
    for x, y in xy:
        pen.ellipse([x - 1.5 * width, y - 1.5 * width, x + 1.5 * width, y + 1.5 * width], fill=(255, 0, 0))
    return out


def plot_landmarks(paths: list, labels: list, path: Path, title: str = "hand landmarks") -> Path:
    """A grid of images with their keypoints and bones drawn (re-detected for display), each titled with its
    label: where the landmark model's input comes from, to check by eye."""
    from ..core.workspace import pyplot, save_figure

    plt = pyplot()

    n = len(paths)
    cols = min(4, max(1, n))
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(2.2 * cols, 2.4 * ((n + cols - 1) // cols)),
                             squeeze=False)
    detector = Detector()
    try:
        for ax, p, label in zip(axes.flat, paths, labels):
            img = load_rgb(p)
            h, w = img.shape[:2]
            side = max(h, w) * (1 + 2 * PAD)
            ax.imshow(img)
            points, _, _ = detector(p)
            if points is not None:  # back from the padded square to this image's pixels
                xy = [((x * side) - (side - w) / 2, (y * side) - (side - h) / 2) for x, y, _ in points]
                for a, b in BONES:
                    ax.plot([xy[a][0], xy[b][0]], [xy[a][1], xy[b][1]], color="lime", linewidth=1)
                ax.scatter([q[0] for q in xy], [q[1] for q in xy], s=4, color="red", zorder=3)
            ax.set_title(f"{label}{'' if points is not None else ' (no hand)'}", fontsize=8)
    finally:
        detector.close()
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)
