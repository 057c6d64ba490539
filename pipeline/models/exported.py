"""An exported model, loaded: one object whichever engine runs it. `load(path, engine="fastai"|"onnx", trust=…)`
checks the file's sha256 before anything runs it, and returns an `Exported` that answers `predict(photos)`
(labels, confidences, probabilities, and for a hand model whether a hand was found in each) and `read(photo)`
(one photo, for serve). `predict`, `evaluate`, `serve`, crossval (through evaluate) and the benchmarks all load
through here, so the engine is chosen in one place and spelled one way (`--engine`, `evaluate.engine`).

An engine (`Engine`: `FastaiEngine` here, `onnx_engine.OnnxModel`) knows how to run the model; the model's kind
(`kinds.Kind`) knows how photos become what the engine takes. Neither knows the other's kinds. An engine is
safe to share between threads (serve reads several photos at once): it runs its model one call at a time where
the model needs that.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import NamedTuple, Protocol

from ..core.errors import PipelineError
from .card import BATCH, ENGINES


class Predictions(NamedTuple):
    """What a batched prediction gives, one entry per image, in order (from either engine)."""
    labels: list
    confidences: list
    probs: object               # (n, len(vocab)) numpy float32
    hand_found: list | None     # a model that finds hands first: whether MediaPipe found one; else None


class Engine(Protocol):
    """What every engine answers, whichever model it runs (a kind's `probs` and `read` ask only this).

    `images` and `features` are safe to call from several threads at once: an engine whose model is not
    thread-safe (a fastai learner) holds `lock` around each call, and code that runs `learn` itself takes `lock`
    too (the fused crop learner answers photos itself)."""
    name: str                       # "fastai" or "onnx": `--engine`
    vocab: list                     # the classes, in the order of the probabilities' columns
    learn: object                   # the fastai learner, or None (an engine that runs no learner: onnx)
    image_size: int | None          # the side of the square the model reads, where the engine knows it without a learner
    features_input: str | None      # the name of a second graph input of keypoint rows (onnx, fused), else None
    lock: object                    # a re-entrant lock: held around every call into a model that is not thread-safe

    def images(self, paths: list, batch_size: int = BATCH, tta: int = 0, log=print, **features):
        """Probabilities (n, len(vocab)) for image files (`features=` rows only where `features_input` is set)."""

    def features(self, x, batch_size: int = BATCH):
        """Probabilities (n, len(vocab)) for float32 keypoint feature rows (n, 64)."""


class FastaiEngine:
    """A verified fastai learner as an `Engine`: `images` for image files, `features` for keypoint rows; one call at
    a time (a fastai learner is not thread-safe), while the decoding and hand finding around it run in parallel."""
    name = "fastai"
    image_size = None  # the learner's own transforms know it
    features_input = None

    def __init__(self, learn):
        self.learn, self.lock = learn, threading.RLock()
        self.vocab = list(learn.dls.vocab)

    def images(self, paths: list, batch_size: int = BATCH, tta: int = 0, log=print):
        from . import inference

        with self.lock:
            return inference.predict_images(self.learn, [Path(p) for p in paths], batch_size, tta, log).numpy()

    def features(self, x, batch_size: int = BATCH):
        from . import hand_model

        with self.lock:
            return hand_model.feature_probs(self.learn, x, batch_size).numpy()


class Exported:
    """An exported model under one engine: `predict` for many photos, `read` for one; `vocab`; `card` (the model
    card beside the file, {} where there is none); `finds_hands` (photos go through MediaPipe first, and serving
    draws the keypoints); `detector()` (a detector of its own for `read`, or None) and `store(folder)` (the
    content store of per-photo work to reuse, or None)."""

    def __init__(self, path: Path, engine: Engine, kind, card: dict, file: Path | None = None):
        self.path, self.engine, self.kind, self.card = Path(path), engine, kind, card
        self.file = Path(file or path)  # the file the engine loaded: the .pkl, or the .onnx beside it
        self.vocab = list(engine.vocab)
        self.finds_hands, self.describe = kind.finds_hands, kind.title
        self.streams = self.finds_hands  # it can read a webcam stream: it follows the hand from frame to frame

    def predict(self, photos: list, batch_size: int = BATCH, tta: int = 0, log=print, store=None) -> Predictions:
        """Batched predictions for image files (`store`: a content store of per-photo work to reuse)."""
        import numpy as np

        probs, found = self.kind.probs(self.engine, list(photos), batch_size, tta, log, store)
        probs = np.asarray(probs, dtype=np.float32).reshape(len(photos), len(self.vocab))
        idx = probs.argmax(axis=1)
        return Predictions([self.vocab[i] for i in idx], probs.max(axis=1).astype(float).tolist(), probs, found)

    def read(self, photo, detector=None):
        """(probabilities over the vocab, or None for a hand model that finds no hand; the keypoints or None) for
        one photo (a path), or one frame of a stream (an RGB array) with a `tracker()`; a hand model needs a
        `detector()` or `tracker()` of its own."""
        return self.kind.read(self.engine, photo, detector)

    def detector(self):
        return self.kind.detector()

    def tracker(self, track: bool = True):
        return self.kind.tracker(track)

    def store(self, folder: Path, log=print):
        return self.kind.store(folder, log)


def _card(path: Path) -> dict:
    """The model card beside a `.pkl` the fastai engine loaded ({} where there is none: a file trusted or checked
    against a given sha256 needs none)."""
    from . import card

    try:
        return json.loads(card.path_for(path).read_text())
    except (OSError, ValueError):
        return {}


def load(path, engine: str = "fastai", trust: bool = False, sha256: str | None = None,
         threads: int | None = None) -> Exported:
    """The export at `path` (`exports/RUN.pkl`; the onnx engine runs the `.onnx` beside it) under `engine`, its
    sha256 checked first: against `sha256` when given (fastai only), else against its model card; no check with
    `trust`. `threads`: onnxruntime's intra-op threads (default: the usable cores)."""
    from . import kinds

    if engine not in ENGINES:
        raise PipelineError(f"engine must be {' or '.join(ENGINES)}, got {engine!r}")
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"{path} is a folder: name an export file (exports/RUN.pkl)")
    if engine == "onnx":
        from . import onnx_engine

        if sha256:
            raise PipelineError("--sha256 checks a .pkl; the onnx engine checks the .onnx against the sha256 in its "
                                "model card")
        model = onnx_engine.load_verified(path, trust=trust, threads=threads, reading=kinds.reading)
        return Exported(path, model, kinds.reading(model.card["onnx"]["family"]), model.card, model.path)
    from . import inference

    learn = inference.load_verified(path, trust=trust, sha256=sha256)
    return Exported(path, FastaiEngine(learn), kinds.input_of(learn), _card(path))
