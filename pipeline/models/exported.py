"""The engines' side of an exported model: `Engine`, what every engine answers (`FastaiEngine` here,
`onnx_engine.OnnxModel`), and `open_engine`, which checks the file's sha256 before anything runs it and opens it
under the engine asked for (`--engine`, `evaluate.engine`). It knows no model kind: `kinds.load` pairs the engine
with the kind that turns photos into what the engine takes (`Exported`, in `pipeline/kinds/__init__.py`). An engine
is safe to share between threads (serve reads several photos at once): it runs its model one call at a time where
the model needs that.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import NamedTuple, Protocol

from ..core.errors import PipelineError
from .card import BATCH, ENGINES, given


class Predictions(NamedTuple):
    """What a batched prediction gives, one entry per image, in order (from either engine)."""
    labels: list
    confidences: list
    probs: object               # (n, len(vocab)) numpy float32
    hand_found: list | None     # a model that finds hands first: whether MediaPipe found one; else None


class Engine(Protocol):
    """What every engine answers, whichever model it runs: one call, `run`. A kind's `probs` and `read` offer the
    inputs they can make (`card.INPUTS`, a value or a function that makes it) and never ask which engine they hold;
    the engine takes those its model `reads`. `run` is safe to call from several threads at once: an engine whose
    model is not thread-safe (a fastai learner) holds `lock` around each call."""
    name: str                       # "fastai" or "onnx": `--engine`
    vocab: list                     # the classes, in the order of the probabilities' columns
    reads: tuple                    # the named inputs (`card.INPUTS`) its model takes
    image_size: int | None          # the side of the square the model reads (its card's), or None
    lock: object                    # a re-entrant lock: held around every call into a model that is not thread-safe

    def run(self, inputs: dict, batch_size: int = BATCH, log=print, tta: int = 0):
        """float32 probabilities (n, len(vocab)) for `inputs` (name -> value or a function making it), `batch_size`
        items a step; `tta` passes of test-time augmentation where the engine has them (fastai on image files)."""


class FastaiEngine:
    """A verified fastai learner as an `Engine`, one call at a time (a fastai learner is not thread-safe), while the
    decoding and hand finding around it run in parallel. What it reads follows from the learner: its own `reads`
    where it answers them itself (`answer`), `rows` for a tabular learner, else image `files`."""
    name = "fastai"

    def __init__(self, learn, card: dict | None = None):
        self.learn, self.lock = learn, threading.RLock()
        self.vocab = list(learn.dls.vocab)
        self.image_size = (card or {}).get("image_size") or getattr(learn, "image_size", None)
        if hasattr(learn, "answer"):
            self.reads = tuple(learn.reads)
        elif getattr(learn.dls, "cont_names", None):
            self.reads = ("rows",)
        else:
            self.reads = ("files",)

    def run(self, inputs: dict, batch_size: int = BATCH, log=print, tta: int = 0):
        from . import inference

        what = f"this {type(self.learn).__name__}"
        if self.reads == ("files",):
            paths = [Path(p) for p in given(inputs, "files", what)]
            with self.lock:
                return inference.predict_images(self.learn, paths, batch_size, tta, log).numpy()
        if tta:
            raise PipelineError("test-time augmentation augments pixels: this model reads none")
        if self.reads == ("rows",):
            rows = given(inputs, "rows", what)
            with self.lock:
                return inference.predict_rows(self.learn, rows, batch_size).numpy()
        values = {name: given(inputs, name, what) for name in self.reads}
        with self.lock:
            return self.learn.answer(values, batch_size, log).numpy()


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
    if path.is_dir():
        raise PipelineError(f"{path} is a folder: name an export file (exports/RUN.pkl)")
    if engine == "onnx":
        from . import onnx_engine

        if sha256:
            raise PipelineError("--sha256 checks a .pkl; the onnx engine checks the .onnx against the sha256 in its "
                                "model card")
        model = onnx_engine.load_verified(path, trust=trust, threads=threads, reading=reading)
        return model, model.card, model.path
    from . import inference

    learn = inference.load_verified(path, trust=trust, sha256=sha256)
    card = _card(path)
    return FastaiEngine(learn, card), card, path
