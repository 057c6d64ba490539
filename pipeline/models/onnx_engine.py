"""The ONNX Runtime inference engine: `predict --engine onnx`, `evaluate.engine = "onnx"` and `serve --onnx` run
the `.onnx` that train writes beside the `.pkl` (pipeline/models/onnx_export.py), with onnxruntime, PIL and numpy only:
no fastai, no torch, nothing unpickled. The model card beside it (`card.read`) gives the vocab and the input
contract; the graph's sha256 is checked against the card, as `inference.load_verified` checks the `.pkl`'s, and the
card's family, input and vocab against the graph (`card.check_graph`).

Images are decoded as fastai's validation pipeline decodes them (`load_image`: EXIF-upright, centre crop,
bilinear resize), so both engines see the same pixels and give the same labels.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..core.errors import PipelineError
from ..core.workspace import read_hashed
from ..data.hands import N_FEATURES
from . import card

INSTALL = "pip install -e .  (onnxruntime is a core dependency)"


def require():
    """The `onnxruntime` module, or a one-line error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise PipelineError(f"the onnx engine needs onnxruntime: {INSTALL}") from None
    return onnxruntime


def load_image(path, size: int, grayscale: bool = False):
    """`path` as uint8 (size, size, 3) RGB, pixel for pixel what fastai's validation pipeline feeds a model
    trained at `size`: converted to RGB (L for `grayscale`, then copied into three channels), turned upright by
    its EXIF tag, centre-cropped to a square and resized bilinearly (fastai's `Resize`, method crop)."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im.convert("L" if grayscale else "RGB"))
    w, h = im.size
    side = int(min(w, h) / size * size)  # fastai: m = the smaller of w/size, h/size; crop int(m * size) square
    left, top = int(0.5 * (w - side)), int(0.5 * (h - side))
    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return np.repeat(arr[:, :, None], 3, axis=2) if grayscale else arr


def session(path, threads: int | None = None):
    """An onnxruntime CPU session for `path` (a file, or a graph's bytes already read) with `threads` intra-op
    threads (default: the usable cores)."""
    from ..core.machine import usable_cpus

    ort = require()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or usable_cpus()
    opts.log_severity_level = 3
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """A verified `.onnx` and its model card, as an engine (`exported.Engine`; `kinds.load(..., engine="onnx")`
    wraps it): `run` for named inputs (the graph's, by their names), `probs` for one ready batch. An onnxruntime
    session is thread-safe, so calls run at once; `lock` is there for the protocol's callers."""
    name = "onnx"

    def __init__(self, path: Path, card: dict, threads: int | None = None, graph: bytes | None = None):
        self.lock = threading.RLock()
        self.session = session(path if graph is None else graph, threads)  # `graph`: the file's bytes, checked
        self.path, self.card = Path(path), card
        self.vocab = list(card["vocab"])
        self.input = card["onnx"]["input"]["name"]
        self.features_input = (card["onnx"].get("features") or {}).get("name")  # a second input: keypoint rows
        self.reads = (self.input,) + ((self.features_input,) if self.features_input else ())
        # a uint8 image input (rank 4) is decoded from image files when a kind offers those rather than pixels
        self.decodes = any(i.name == self.input and i.type == "tensor(uint8)" for i in self.session.get_inputs())
        self.image_size, self.grayscale = card["image_size"], bool(card.get("grayscale"))
        self.threads = self.session.get_session_options().intra_op_num_threads

    def probs(self, batch, features=None):
        """Probabilities (N, len(vocab)) for a uint8 (N, H, W, 3) image batch or a float32 (N, 64) feature batch,
        with the batch's float32 (N, 64) keypoint `features` for a graph that reads them too (the fused model)."""
        feeds = {self.input: batch}
        if self.features_input:
            if features is None:
                raise PipelineError(f"{self.path.name} also reads keypoint features ({self.features_input!r}, "
                                    f"the card's onnx.features): none were given")
            feeds[self.features_input] = features
        return self.session.run(None, feeds)[0]

    def load(self, path):
        return load_image(path, self.image_size, self.grayscale)

    def run(self, inputs: dict, batch_size: int = card.BATCH, log=print, tta: int = 0):
        """Probabilities for the graph's inputs (`reads`), `batch_size` items a step; a uint8 image input not given
        itself is decoded from image `files` in threads (PIL releases the GIL)."""
        import numpy as np

        if tta:
            raise PipelineError("test-time augmentation runs fastai's training transforms: use the fastai engine")
        what = f"the graph {self.path.name}"
        first = (card.given(inputs, self.input, what) if self.input in inputs or not self.decodes
                 else [str(p) for p in card.given(inputs, "files", what)])
        feats = card.given(inputs, self.features_input, what) if self.features_input else None
        out = []
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for i in range(0, len(first), batch_size):
                batch = first[i:i + batch_size]
                if isinstance(batch, list):
                    batch = np.stack(list(pool.map(self.load, batch)))
                out.append(self.probs(np.asarray(batch), None if feats is None else feats[i:i + batch_size]))
        return np.concatenate(out) if out else np.zeros((0, len(self.vocab)), np.float32)


def _runtime_errors(ort) -> tuple:
    """The exceptions onnxruntime raises for a file it cannot load (they derive from Exception alone)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("InvalidProtobuf", "InvalidGraph", "Fail", "InvalidArgument", "NoSuchFile", "NotImplemented",
             "RuntimeException")
    return tuple(getattr(state, n) for n in names if hasattr(state, n)) + (RuntimeError, OSError)


def load_verified(learner: Path, trust: bool = False, threads: int | None = None, reading=None) -> OnnxModel:
    """The `.onnx` beside `learner` (`exports/RUN.pkl` or `exports/RUN.onnx`) with its model card (`card.read`,
    checked against the graph by `card.check_graph`), after checking its sha256 against the card (skipped if
    `trust`). `reading` (`kinds.reading`, which `kinds.load` passes) checks the card's family and what its kind
    reads. The card and the graph are each read once: the graph's bytes hashed are the bytes onnxruntime loads.
    Nothing is unpickled; a file onnxruntime cannot load is one line."""
    import numpy as np

    learner = Path(learner)
    meta = card.read(learner, "onnx", reading)
    entry = meta["onnx"]
    path = card.onnx_path(learner, meta)
    if not path.exists():
        raise PipelineError(f"{path} does not exist: rerun `python -m pipeline run --stages train --force`, or "
                            f"use --engine fastai")
    try:
        graph, digest = read_hashed(path)
    except OSError as e:
        raise PipelineError(f"cannot read {path}: {e.strerror or e}") from None
    if not trust and digest != entry["sha256"]:
        raise PipelineError(f"{path} sha256 does not match its model card ({entry['sha256'][:12]}…): refusing "
                            f"to use it with that card's vocab (pass --trust-learner only for a file you trust)")
    ort = require()
    try:
        model = OnnxModel(path, meta, threads, graph)
        inputs = {i.name: i.shape for i in model.session.get_inputs()}
        types = {i.name: i.type for i in model.session.get_inputs()}  # e.g. tensor(uint8), tensor(float)
        width = model.session.get_outputs()[0].shape[-1]
        metadata = model.session.get_modelmeta().custom_metadata_map  # the graph's metadata_props
        if not isinstance(width, int) and model.input in inputs:  # a dynamic output: one blank item tells
            shape = [1] + [d if isinstance(d, int) else 1 for d in inputs[model.input][1:]]
            dtype = np.uint8 if types[model.input] == "tensor(uint8)" else np.float32
            feats = np.zeros((1, N_FEATURES), np.float32) if model.features_input else None
            width = model.probs(np.zeros(shape, dtype), feats).shape[-1]
    except _runtime_errors(ort) as e:
        reason = " ".join(str(e).split())[:200]
        raise PipelineError(f"cannot load {path} as an ONNX graph ({type(e).__name__}: {reason}): rerun train, or "
                            f"use --engine fastai") from None
    reads = reading(entry["family"]).graph_input if reading is not None else None
    card.check_graph(learner, meta, inputs, width, types, metadata, reads)
    return model
