"""The engines' side of an exported model: `Engine`, what every engine answers (`FastaiEngine` here,
`onnx_engine.OnnxModel`), and `open_engine`, which checks the file's sha256 before anything runs it and opens it
under the engine asked for (`--engine`, `evaluate.engine`). It knows no model kind: `kinds.load` pairs the engine
with the kind that turns photos into what the engine takes (`kinds/loaded.py`). An engine is safe to share between
threads (serve reads several photos at once): it runs its model one call at a time where the model needs that.
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
        from . import inference

        with self.lock:
            return inference.predict_rows(self.learn, x, batch_size).numpy()


def _card(path: Path) -> dict:
    """The model card beside a `.pkl` the fastai engine loaded ({} where there is none: a file trusted or checked
    against a given sha256 needs none)."""
    from . import card

    try:
        return json.loads(card.path_for(path).read_text())
    except (OSError, ValueError):
        return {}


def open_engine(path, engine: str = "fastai", trust: bool = False, sha256: str | None = None,
                threads: int | None = None, reading=None) -> tuple[Engine, dict, Path]:
    """(the engine running the export at `path`, its model card, the file it loaded): `exports/RUN.pkl` under
    fastai, the `.onnx` beside it under onnx, its sha256 checked first: against `sha256` when given (fastai only),
    else against its model card; no check with `trust`. `threads`: onnxruntime's intra-op threads (default: the
    usable cores); `reading`: what the card's `onnx.family` says the graph reads (`kinds.reading`, for the onnx
    engine's check of the card). `kinds.load` pairs the engine with the model's kind."""
    if engine not in ENGINES:
        raise PipelineError(f"engine must be {' or '.join(ENGINES)}, got {engine!r}")
    path = Path(path)
    if engine == "onnx":
        from . import onnx_engine

        if sha256:
            raise PipelineError("--sha256 checks a .pkl; the onnx engine checks the .onnx against the sha256 in its "
                                "model card")
        model = onnx_engine.load_verified(path, trust=trust, threads=threads, reading=reading)
        return model, model.card, model.path
    from . import inference

    learn = inference.load_verified(path, trust=trust, sha256=sha256)
    return FastaiEngine(learn), _card(path), path
