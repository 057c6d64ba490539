"""The model kinds: one class per kind of model, as timm registers one entry point per model. A kind is everything
that differs from one kind of model to another, in one place:

- its description, class attributes read without importing torch (config's checks, download, a card, the app):
  `name` (the card's `family`), `input` (the value of `datablock.input` it reads), `archs` (the `train.arch` names
  it builds; () for any backbone name no kind claims), `pixels`, `finds_hands`, `writes`, `params`, ...;
- datablock's work for it: `keep` (before the split), `prepare` (after it), `warm` and `store` (per-photo stores);
- its model: `dataloaders`, `learner` (built by `make_learner`, the one factory), `recognises` (a loaded learner),
  `probs` and `read` (photos to probabilities under either engine), `onnx_plan` (its ONNX graph).

Methods import their model code where used (torch only when a model is built or run). `of(cfg)` is the kind of a
config, `input_of(learn)` that of a loaded learner, `reading(name)` the one that reads a card's ONNX graph. A new
kind: its module here (the class, a subclass of `base.Kind`), the module of the classes its export pickles, and its
name in `KINDS` below.
"""
from __future__ import annotations

from ...core.errors import PipelineError
from .base import Kind
from .crops import CropEmbedding, HandCrop
from .hand_net import HandNet, HandNetLate
from .images import Baseline, Images
from .landmarks import Landmarks

# every kind, in the order `input_of` asks them about a loaded learner and `reading` picks the reader of an input
KINDS = (Images(), Baseline(), Landmarks(), HandCrop(), CropEmbedding(), HandNet(), HandNetLate())
INPUTS = tuple(dict.fromkeys(k.input for k in KINDS))  # the values of datablock.input


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
