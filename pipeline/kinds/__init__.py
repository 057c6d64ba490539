"""The model kinds: one class per kind of model, as timm registers one entry point per model. A kind is everything
that differs from one kind of model to another, in one place:

- its description, class attributes read without importing torch (config's checks, download, a card, the app):
  `name` (the card's `family`), `input` (the value of `datablock.input` it reads), `archs` (the `train.arch` names
  it builds; () for any backbone name no kind claims), `pixels`, `finds_hands`, `writes`, `params`, ...;
- datablock's work for it: `keep` (before the split), `prepare` (after it), `warm` (its per-photo stores);
- its model: `dataloaders`, `learner` (built by `make_learner`, the one factory), `recognises` (a loaded learner),
  `probs` and `read` (photos to probabilities under either engine), `onnx_plan` (its ONNX graph).

Each kind has its package, with the same file names in each: `kind.py` (the class), `data.py` (what datablock
prepares, no torch), `model.py` (the network and learner, the classes its export pickles), `graph.py` (its ONNX
graph); `shared/` holds what several kinds share. Methods import their model code where used (torch only when a
model is built or run; a stage that prepares data does not count it in its fingerprint). `of(cfg)` is the kind of a
config, `input_of(learn)` that of a loaded learner, `reading(name)` the one that reads a card's ONNX graph; `load`
opens an export under an engine and pairs it with its kind (`Exported`). A new kind: its package, and its class in
`KINDS` below (or, for a kind kept outside this package, one `register(MyKind())`).
"""
from __future__ import annotations

from pathlib import Path

from ..core.errors import PipelineError
from ..models.card import BATCH
from ..models.exported import Engine, Predictions, open_engine
from .base import Kind
from .hand_crop.kind import HandCrop
from .hand_fused.kind import HandFused
from .hand_net.kind import HandNet, HandNetLate
from .images.kind import Baseline, Images
from .landmarks.kind import Landmarks

# every kind, in the order `input_of` asks them about a loaded learner and `reading` picks the reader of an input
KINDS = (Images(), Baseline(), Landmarks(), HandCrop(), HandFused(), HandNet(), HandNetLate())
INPUTS = tuple(dict.fromkeys(k.input for k in KINDS))  # the values of datablock.input


def register(kind: Kind) -> Kind:
    """Add `kind` (an instance of a `Kind` subclass defined anywhere: a kind's package outside this one, imported) to
    `KINDS`, last, and its input to `INPUTS`: the one line a kind of one's own needs."""
    global KINDS, INPUTS
    KINDS = (*KINDS, kind)
    INPUTS = tuple(dict.fromkeys(k.input for k in KINDS))
    return kind


def _claimed() -> set[str]:
    return {a for k in KINDS for a in k.archs}


def find(input: str, arch: str) -> Kind | None:
    """The kind that builds `arch` on `input` (a name no kind claims: the backbone kind of that input), or None."""
    named = [k for k in KINDS if k.input == input and arch in k.archs]
    if named:
        return named[0]
    if arch in _claimed():
        return None
    return next((k for k in KINDS if k.input == input and not k.archs), None)


def of(cfg) -> Kind:
    """The kind of model `cfg` trains (`check` has refused a pair no kind builds)."""
    found = find(cfg.datablock.input, cfg.train.arch)
    if found is None:
        check(cfg)
    return found


def check(cfg) -> None:
    """Refuse, in one line, a config whose `datablock.input` is unknown or does not go with `train.arch`."""
    if cfg.datablock.input not in INPUTS:
        raise PipelineError(f"datablock.input must be {' or '.join(INPUTS)}, got {cfg.datablock.input!r}")
    found = find(cfg.datablock.input, cfg.train.arch)
    if found is None:
        input, arch = cfg.datablock.input, cfg.train.arch
        readers = [k for k in KINDS if arch in k.archs] or [k for k in KINDS if not k.archs]  # else: a backbone
        reads = " or ".join(f'"{i}"' for i in dict.fromkeys(k.input for k in readers))
        same = [k for k in KINDS if k.input == input]
        goes = [f'"{a}"' for k in same for a in k.archs] + (["a backbone"] if any(not k.archs for k in same) else [])
        raise PipelineError(f'datablock.input = "{input}" and train.arch = "{arch}" do not go together: "{arch}" '
                            f'reads {reads}; "{input}" goes with {" or ".join(goes)}')
    problems = found.problems(cfg)
    if problems:
        raise PipelineError(problems[0])


def check_arch(cfg) -> None:
    """Refuse, in one line, a `train.arch` that `cfg`'s kind could not build (before any stage starts)."""
    of(cfg).check_arch(cfg.train.arch, also=f", or one of {named_archs()}")


def reading(input: str) -> Kind | None:
    """The kind that reads a graph of `input` (a card's `onnx.family`, its `input`), or None for a name no kind
    reads."""
    return next((k for k in KINDS if k.input == input), None)


def input_of(learn) -> Kind:
    """The kind of a loaded (exported) learner; a one-line error for a learner no kind here made."""
    for kind in KINDS:
        if kind.recognises(learn):
            return kind
    raise PipelineError(f"no model kind here reads this learner ({type(learn).__name__} over "
                        f"{type(learn.dls).__name__}): only " + ", ".join(dict.fromkeys(k.title for k in KINDS)))


def named_archs() -> str:
    """The arch names the kinds other than the backbones' accept, for an error message."""
    return ", ".join(dict.fromkeys(a for k in KINDS for a in k.archs))


# --- an export, loaded: its engine and its kind -------------------------------------------------------------------
class Exported:
    """An exported model under one engine: `predict` for many photos, `read` for one; `vocab`; `card` (the model
    card beside the file, {} where there is none); `finds_hands` (photos go through MediaPipe first, and serving
    draws the keypoints); `detector()` (a detector of its own for `read`, or None)."""

    def __init__(self, path: Path, engine: Engine, kind, card: dict, file: Path | None = None):
        self.path, self.engine, self.kind, self.card = Path(path), engine, kind, card
        self.file = Path(file or path)  # the file the engine loaded: the .pkl, or the .onnx beside it
        self.vocab = list(engine.vocab)
        self.finds_hands, self.describe = kind.finds_hands, kind.title
        self.streams = self.finds_hands  # it can read a webcam stream: it follows the hand from frame to frame

    def predict(self, photos: list, batch_size: int = BATCH, tta: int = 0, log=print,
                folder: Path | None = None) -> Predictions:
        """Batched predictions for image files (`folder`: a data folder whose per-photo stores to reuse and fill)."""
        import numpy as np

        probs, found = self.kind.probs(self.engine, list(photos), batch_size, tta, log, folder)
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



def load(path, engine: str = "fastai", trust: bool = False, sha256: str | None = None,
         threads: int | None = None) -> Exported:
    """The export at `path` (`exports/RUN.pkl`; the onnx engine runs the `.onnx` beside it) under `engine`, its
    sha256 checked first: against `sha256` when given (fastai only), else against its model card; no check with
    `trust`. `threads`: onnxruntime's intra-op threads (default: the usable cores)."""
    model, card, file = open_engine(path, engine, trust, sha256, threads, reading)
    kind = reading(card["onnx"]["family"]) if engine == "onnx" else input_of(model.learn)
    return Exported(path, model, kind, card, file)
