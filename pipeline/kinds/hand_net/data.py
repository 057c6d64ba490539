"""MediaPipe's own hand network as a frozen feature extractor (`datablock.input = "hand_net"`): the pooled 1152-value
feature of `hand_landmark_full.tflite` (shipped in the MediaPipe wheel, trained on real hands), read through LiteRT
(`ai-edge-litert`), of the crop MediaPipe itself would feed it: rotated so the wrist → middle knuckle points up,
square, `SCALE` x the keypoints' box, `SIZE` px, RGB in [0, 1]; a left hand mirrored so it looks like a right one.

Each embedding is kept in a content store (`hand_net.sqlite`, in `run.data_dir`) under the photo's bytes, the
network file's sha256 and the crop settings, so a crossval computes each once. A photo with no hand has none (its
model sees zeros and the no-hand flag, as the keypoint model does). No torch here; `model.py` is the learner,
and its ONNX graph runs the network rebuilt in torch (`network.py`) on the uint8 crop (`pixels`).
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from ...core.errors import PipelineError
from ...data import content_store, hands
from ..shared.data import keypoint_pixels, plot_crops, png

STORE = "hand_net.sqlite"
NETWORK = "hand_landmark_full.tflite"
TENSOR = "model_1/model/global_average_pooling2d/Mean"  # the pooled feature its keypoint and handedness heads read
N_EMB = 1152
COLUMNS = hands.FEATURES + [f"emb{i:04d}" for i in range(N_EMB)]  # what its model reads: keypoints, then embedding
SIZE = 224          # the network's input side
SCALE = 2.0         # the crop's side: this times the longer side of the keypoints' box in the upright frame
INSTALL = "pip install -e '.[hands]'  (ai-edge-litert reads MediaPipe's hand network)"


def network_path() -> Path:
    """`hand_landmark_full.tflite` inside the installed MediaPipe wheel, or a one-line error."""
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "modules" / "hand_landmark" / NETWORK
        if path.is_file():
            return path
    raise PipelineError(f"MediaPipe's hand network {NETWORK} is not installed: {hands.INSTALL}")


_SHA: dict = {}


def network_sha256(path: Path) -> str:
    """The sha256 of the network file (read once per file, size and modification time)."""
    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        _SHA[key] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return _SHA[key]


def settings(path: Path | None = None) -> dict:
    """What changes an embedding: the network file, the tensor read, the crop and the keypoints (the store's key)."""
    path = path or network_path()
    return {"network": NETWORK, "sha256": network_sha256(path), "tensor": TENSOR, "size": SIZE, "scale": SCALE,
            "up": "wrist -> keypoint 9", "mirror": "handedness Right", "pixels": "rgb [0, 1]",
            "points": hands.store_settings()}


def store(folder: Path, log=print, path: Path | None = None) -> content_store.ContentStore:
    """The embeddings' store: float32 (N_EMB,) a photo (a value of another shape is computed again)."""
    return content_store.arrays(Path(folder) / STORE, settings(path), "float32", (N_EMB,), log)


def roi(det: list, width: int, height: int) -> tuple[float, float, float, float, float, bool]:
    """(centre x, centre y, side, up x, up y, mirrored) in the photo's pixels of the crop of a found `det`
    (`hands.detection`): `up` the unit vector wrist → keypoint 9, the side SCALE x the keypoints' box in that frame;
    mirrored for a left hand (MediaPipe says "Right": it names hands as in a mirrored selfie)."""
    import numpy as np

    xs, ys = keypoint_pixels(det, width, height)
    pts = np.stack([xs, ys], axis=1)
    up = pts[9] - pts[0]
    norm = float(np.hypot(*up))
    up = up / norm if norm > 1e-6 else np.array([0.0, -1.0])
    right = np.array([-up[1], up[0]])  # the crop's x axis: (1, 0) for a hand pointing straight up (up = (0, -1))
    a, b = pts @ right, pts @ -up     # the keypoints in the upright frame (x right, y down)
    ca, cb = (a.min() + a.max()) / 2, (b.min() + b.max()) / 2
    side = SCALE * max(a.max() - a.min(), b.max() - b.min(), 1.0)
    centre = ca * right + cb * -up
    return float(centre[0]), float(centre[1]), float(side), float(up[0]), float(up[1]), det[1] == "Right"


def pixels(img, det: list):
    """The network's input for the upright RGB PIL image `img` whose hand `det` found, as uint8 (SIZE, SIZE, 3) RGB:
    the hand upright (wrist at the bottom), mirrored if it is a left hand; black outside the photo. What the ONNX
    graph reads (it divides by 255 itself)."""
    import numpy as np
    from PIL import Image

    cx, cy, side, ux, uy, mirrored = roi(det, *img.size)
    k = side / SIZE
    # output pixel (u, v) -> photo pixel: centre + (u - SIZE/2) k right + (v - SIZE/2) k down (down = -up)
    ax, bx, ay, by = -k * uy, -k * ux, k * ux, -k * uy
    coeffs = (ax, bx, cx - SIZE / 2 * (ax + bx), ay, by, cy - SIZE / 2 * (ay + by))
    out = img.transform((SIZE, SIZE), Image.AFFINE, coeffs, resample=Image.BILINEAR)
    if mirrored:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(out, np.uint8)


def crop_image(img, det: list):
    """`pixels` as the network reads them: float32 (SIZE, SIZE, 3) in [0, 1]."""
    import numpy as np

    return np.asarray(pixels(img, det), np.float32) / 255.0


def photo_pixels(path, det: list):
    """`pixels` of the photo at `path` (upright: EXIF applied), or a one-line error for an unreadable image."""
    from PIL import Image

    try:
        return pixels(Image.fromarray(hands.load_rgb(path)), det)
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None


class Crops:
    """The uint8 `photo_pixels` crops of photos whose hands `dets` found (zeros where none was), made when a slice of
    them is asked for (an engine reads them a batch at a time), decoded in threads (PIL releases the GIL)."""

    def __init__(self, paths: list, dets: list):
        self.paths, self.dets = [str(p) for p in paths], dets

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, part: slice):
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np

        from ...core.machine import usable_cpus

        idx = range(len(self.paths))[part]
        out = np.zeros((len(idx), SIZE, SIZE, 3), np.uint8)
        with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:
            for j, px in enumerate(pool.map(lambda i: photo_pixels(self.paths[i], self.dets[i]) if self.dets[i][0]
                                            else None, idx)):
                if px is not None:
                    out[j] = px
        return out


def crop(path, det: list):
    """`crop_image` of the photo at `path` (upright: EXIF applied)."""
    import numpy as np

    return np.asarray(photo_pixels(path, det), np.float32) / 255.0


def require():
    """LiteRT's interpreter class, or a one-line error saying how to install it."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise PipelineError(f"the hand-network embedding needs LiteRT: {INSTALL}") from None
    return Interpreter


class Network:
    """The hand network on one core, reading its pooled feature: call it on one `crop_image`; thread-safe (a lock:
    one interpreter runs one input at a time; a batch of 8 costs the same per photo on a CPU core)."""

    def __init__(self, path: Path | None = None):
        import warnings

        Interpreter = require()
        self.path = Path(path or network_path())
        with warnings.catch_warnings(), hands.native_stderr_silenced():
            warnings.simplefilter("ignore")  # "preserve_all_tensors ... for debugging": what reads the feature
            self._it = Interpreter(model_path=str(self.path), experimental_preserve_all_tensors=True, num_threads=1)
            self._it.allocate_tensors()
        self._input = self._it.get_input_details()[0]["index"]
        found = [t["index"] for t in self._it.get_tensor_details() if t["name"] == TENSOR]
        if not found:
            raise PipelineError(f"{self.path} has no tensor {TENSOR}: not the hand network this was made for")
        self._feature, self._lock = found[0], threading.Lock()

    def __call__(self, x):
        import numpy as np

        with self._lock:
            self._it.set_tensor(self._input, np.ascontiguousarray(x, np.float32)[None])
            self._it.invoke()
            return self._it.get_tensor(self._feature)[0].copy()


_NETWORK: Network | None = None


def network() -> Network:
    """One `Network` for this process, made when first needed."""
    global _NETWORK
    if _NETWORK is None:
        _NETWORK = Network()
    return _NETWORK


def embed(paths: list, dets: list, folder: Path | None, log=print, what: str = "images"):
    """float32 (n, N_EMB): the embedding of each photo whose hand `dets` found (`hands.detection`), through the store in
    `folder` when given (computed and stored where it lacks them); zeros for a photo with no hand."""
    import numpy as np

    paths = [str(p) for p in paths]
    out = np.zeros((len(paths), N_EMB), np.float32)
    have = [i for i, d in enumerate(dets) if d[0]]
    db = store(folder, log) if folder is not None else None

    def compute(todo):
        log(f"embedding {len(todo)} {what} with MediaPipe's hand network ({len(have) - len(todo)} in the store)")
        net = network()
        return (net(crop(paths[have[j]], dets[have[j]])) for j in todo)

    got, embed.computed = content_store.cached_map([paths[i] for i in have], db, compute, log, "embedded")
    if have and not embed.computed:  # what the last call cost, for tests and logs
        log(f"all {len(have)} hand-network embeddings of {what} in the store")
    for i, row in zip(have, got):
        out[i] = row
    return out


def client_settings() -> dict:
    """The model card's `hand_net`: how a client makes what this model reads from a photo."""
    return {"network": NETWORK, "sha256": network_sha256(network_path()), "tensor": TENSOR, "size": SIZE,
            "scale": SCALE, "how": "MediaPipe Hands' keypoints (pipeline.data.hands.Detector); the photo rotated so "
                                   "wrist -> keypoint 9 points up, the square of scale x the keypoints' box there, "
                                   "size x size bilinear, RGB / 255, mirrored when MediaPipe says Right: "
                                   "pipeline.kinds.hand_net.data.crop; the network's tensor read with LiteRT (the fastai "
                                   "export). The ONNX graph runs the network itself: it takes that crop as uint8, "
                                   "before / 255 (pipeline.kinds.hand_net.data.pixels)"}


def inputs(dets: list, emb):
    """float32 (n, len(COLUMNS)): the features of each detection (`hands.features_of`) beside its embedding `emb`
    (n, N_EMB), zeroed where the keypoints' no-hand flag is 0 (what the ONNX graph does too)."""
    import numpy as np

    rows = hands.features_of(dets)
    return np.concatenate([rows, np.asarray(emb, np.float32).reshape(len(dets), N_EMB) * rows[:, -1:]], axis=1)


def photo_inputs(paths: list, folder: Path | None, log=print) -> tuple:
    """(float32 (n, len(COLUMNS)) rows, hand found per photo) for image files: MediaPipe's keypoints and the
    embedding, through the stores in `folder` when given, else found in this process."""
    paths = [str(p) for p in paths]
    dets, _ = hands.detections(paths, hands.store(folder, log) if folder is not None else None, log)
    return inputs(dets, embed(paths, dets, folder, log)), [bool(d[0]) for d in dets]


def warm(paths: list, folder: Path, log=print) -> int:
    """The detections of `paths` into the detection store in `folder`, and the embeddings of those with a hand into
    the embedding store (what they lack; an unreadable image is skipped): one process's share of datablock's work
    in a distributed launch. Returns how many MediaPipe looked at."""
    found, looked = hands.warm(paths, hands.store(folder, log), log)
    embed([p for p, _ in found], [d for _, d in found], folder, log)
    return looked


def prepare(df, root: Path, ws, log) -> list[Path]:
    """Every photo of the split's embedding in the store, landmarks.csv (the keypoint rows of the same detection),
    the detection rate per class in the log and batch.png: training crops as the network sees them."""
    import numpy as np
    from PIL import Image

    from ...core import artifacts
    from ...core.workspace import write_csv

    paths = [root / p for p in df["path"]]
    dets, _ = hands.detections(paths, hands.store(ws.data, log), log)
    embed(paths, dets, ws.data, log)
    feats = hands.features_table(df["path"], dets)
    rate = feats["hand_found"].groupby(df["label"].to_numpy()).mean().sort_values()
    log("hand found per class, lowest first: " + ", ".join(f"{k} {v:.0%}" for k, v in rate.head(6).items()))
    train = df[~df["is_valid"].to_numpy() & np.array([bool(d[0]) for d in dets])]
    train = train.sample(n=min(16, len(train)), random_state=0)
    pngs = [png(Image.fromarray(photo_pixels(paths[i], dets[i]))) for i in train.index]
    return [write_csv(ws.artifact("datablock", artifacts.LANDMARKS), feats),
            plot_crops(pngs, list(train["label"]), ws.artifact("datablock", artifacts.BATCH_PNG),
                                  f"training images: the hand network's upright crops, {SIZE}px")]
