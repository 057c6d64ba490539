"""One registry of model families, as timm's `create_model` is one factory over its registered models: each family
knows which `train.arch` names it builds, which `datablock.input` its DataLoaders read, and its learner.
`family(arch)` is the one lookup, `create_learner` the one factory.

Families: the pretrained image backbone (torchvision/timm, `backbones.py`), the from-scratch baseline
(`baselines.py`) and the hand-landmark MLP (`hand_model.py`). The arch-name tests belong here. Not yet
here: the config checks, the DataLoaders choice and runtime's channels_last still test `datablock.input` or the arch
in config, data, runtime and the datablock stage: importing this module there would put every model module in the
download and datablock fingerprints (`fingerprints.code_files` follows function-level imports too). Moving them
needs the registry split into a description part (no model imports) and the builders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import PipelineError

IMAGES, LANDMARKS = "images", "landmarks"  # the values of datablock.input
LANDMARK_ARCH = "landmark_mlp"


@dataclass(frozen=True)
class Family:
    name: str
    input: str                      # the datablock.input its DataLoaders read
    owns: Callable[[str], bool]     # whether `train.arch` names one of its models
    build: Callable                 # (dls, t, n_in, common, ws) -> fastai Learner

    @property
    def sees_pixels(self) -> bool:
        return self.input == IMAGES

    def learner(self, dls, t, n_in: int, common: dict, ws):
        """A fastai Learner for `t.arch` on `dls` (`common`: loss, optimiser, metrics, paths)."""
        return self.build(dls, t, n_in, common, ws)


def _landmark_learner(dls, t, n_in, common, ws):
    from . import hand_model

    extra = ([hand_model.jitter_callback(t.landmark_rotate, mirror=t.landmark_mirror)]
             if t.landmark_rotate or t.landmark_mirror else [])
    return hand_model.make_learner(dls, t, cbs=extra, **common)


def _is_baseline(arch: str) -> bool:
    from .baselines import is_baseline

    return is_baseline(arch)


def _baseline_learner(dls, t, n_in, common, ws):
    from fastai.learner import Learner

    from .baselines import create_baseline

    return Learner(dls, create_baseline(t.arch, len(dls.vocab), n_in=n_in, size=t.image_size), **common)


def _backbone_learner(dls, t, n_in, common, ws):
    from fastai.vision.learner import vision_learner

    from . import backbones

    arch, extra = backbones.resolve(t.arch, t.pretrained, ws.data)
    try:
        return vision_learner(dls, arch, pretrained=t.pretrained, n_in=n_in, ps=t.head_dropout, **extra, **common)
    except (RuntimeError, OSError) as e:
        if t.pretrained and ("download" in str(e).lower() or "connect" in str(e).lower() or "hub" in str(e).lower()):
            raise PipelineError(f"could not get pretrained weights for {t.arch} ({type(e).__name__}); set "
                                f"train.pretrained=false or use arch '{backbones.OFFLINE_TIMM}'") from None
        raise


HAND_LANDMARKS = Family("hand landmarks", LANDMARKS, lambda arch: arch == LANDMARK_ARCH, _landmark_learner)
BASELINE = Family("from-scratch baseline", IMAGES, _is_baseline, _baseline_learner)
BACKBONE = Family("pretrained image backbone", IMAGES, lambda arch: True, _backbone_learner)
FAMILIES = (HAND_LANDMARKS, BASELINE, BACKBONE)  # looked up in this order: any other name is a backbone's


def family(arch: str) -> Family:
    """The family whose models `arch` names (a name no family knows is the backbone's: `check_arch` refuses it)."""
    return next(f for f in FAMILIES if f.owns(arch))


def of(cfg) -> Family:
    """The family of `cfg.train.arch` (`config.validate` made `cfg.datablock.input` agree with it)."""
    return family(cfg.train.arch)


def check_arch(arch: str) -> None:
    """Refuse, in one line, an `arch` that no family could build (run before any stage starts)."""
    if family(arch) is BACKBONE:
        from .backbones import check_arch as check_backbone
        from .baselines import BASELINES

        check_backbone(arch, also=f", a baseline ({', '.join(BASELINES)}), or {LANDMARK_ARCH}")


def create_learner(dls, t, n_in: int, common: dict, ws):
    """A fastai Learner for `t.arch`, built by its family: the one factory."""
    return family(t.arch).learner(dls, t, n_in, common, ws)
