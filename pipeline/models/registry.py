"""How each model family builds and answers: the other half of the registry in `families.py` and `inputs.py`.
Everything that differs from family to family goes through here: `make_learner` (the one factory),
`dataloaders`, and for a loaded learner `input_of` (its `Input`: photos to probabilities under either engine,
its ONNX plan) and `export_onnx`; `check_arch` before any stage starts. `exported.load` is the one way to load
an export and ask it about photos.

A family's learner differs from every other's; its data differs only by what it reads, pixels or hand keypoints
(an `Input`, shared by the families that read it). The builders are imported where used: backbones, baselines
and hand_model import torch, and lr_find, train and evaluate reach them through this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..core import runtime
from ..core.errors import PipelineError
from . import families, inputs


@dataclass(frozen=True)
class Input:
    """How a model that reads one input kind builds and answers: its DataLoaders for a config, and for a loaded
    (exported) model whichever engine runs it: whether a learner reads it (`recognises`), photos to probabilities
    (`probs`, batched; `read`, one photo with a detector of its own), its ONNX plan."""
    kind: inputs.InputKind          # the data half: datablock.input, what datablock prepares
    dataloaders: Callable           # (ws, cfg, batch_size) -> fastai DataLoaders over the persisted split
    recognises: Callable            # (learn) -> whether a loaded learner reads this input
    probs: Callable                 # (engine, paths, batch_size, tta, log, store) -> (probabilities, hand found or None)
    read: Callable                  # (engine, photo or RGB frame, detector or tracker) -> (probabilities or None
                                    # with no hand, keypoints or None)
    onnx_plan: Callable             # (learn, cfg_train) -> onnx_export.Plan

    def detector(self):
        """A per-photo detector of its own for `read` (MediaPipe Hands: not thread-safe, one per concurrent
        reader), or None for an input that needs none."""
        if self.kind.finds_hands:
            from ..data import hands

            return hands.Detector()
        return None

    def tracker(self, track: bool = True):
        """A detector for `read` over the frames of one stream, following the hand from frame to frame (MediaPipe
        in video mode; `track=False` finds it afresh in each), or None for an input that finds no hand."""
        if self.kind.finds_hands:
            from ..data import hands

            return hands.Tracker(track=track)
        return None


def _image_dataloaders(ws, cfg, batch_size):
    from ..data import loaders

    return loaders.dataloaders(ws, cfg, batch_size)


def _landmark_dataloaders(ws, cfg, batch_size):
    import pandas as pd

    from ..core import artifacts
    from ..data import loaders
    from . import hand_model

    df, _, vocab = loaders.checked_split(ws, cfg, batch_size)
    feats = pd.read_csv(ws.artifact("datablock", artifacts.LANDMARKS), dtype={"path": str}, keep_default_na=False)
    return hand_model.dataloaders(df, feats, vocab, batch_size or cfg.train.batch_size)


def _reads_images(learn) -> bool:
    items = getattr(learn.dls.valid, "after_item", None)
    return items is not None and any(type(t).__name__ == "Resize" for t in items.fs)


def _reads_landmarks(learn) -> bool:
    from . import hand_model

    return hand_model.is_landmark_learner(learn)


def _image_probs(engine, paths, batch_size, tta, log, store):
    return engine.images(paths, batch_size, tta, log), None


def _image_read(engine, photo, detector):
    return engine.images([photo], 1, 0, lambda message: None)[0], None


def _landmark_probs(engine, paths, batch_size, tta, log, store):
    from ..data import hands

    if tta:
        raise PipelineError("test-time augmentation augments pixels: a hand-keypoint model takes none")
    x, found = hands.photo_features(paths, log, store)
    return engine.features(x, batch_size), found


def _landmark_read(engine, photo, detector):
    import numpy as np

    from ..data import hands

    points, handedness, _ = detector(photo)
    feats = hands.canonical(points, handedness) if points is not None else None
    if feats is None:
        return None, None
    return engine.features(feats[None].astype(np.float32), 1)[0], points


def _image_plan(learn, t):
    from . import onnx_export

    return onnx_export.image_plan(learn, t.image_size, t.grayscale)


def _landmark_plan(learn, t):
    from . import onnx_export

    return onnx_export.landmark_plan(learn)


def _crop_dataloaders(ws, cfg, batch_size):
    from . import crop_model

    return crop_model.dataloaders(ws, cfg, batch_size)


def _reads_crops(learn) -> bool:
    from . import crop_model

    return crop_model.is_crop_learner(learn)


def _crop_probs(engine, paths, batch_size, tta, log, store):
    from . import crop_model

    return crop_model.probs(engine, paths, batch_size, tta, log, store)


def _crop_read(engine, photo, detector):
    from . import crop_model

    return crop_model.read(engine, photo, detector)


def _crop_plan(learn, t):
    from . import crop_model

    return crop_model.onnx_plan(learn, t)


def _hand_net_dataloaders(ws, cfg, batch_size):
    from . import hand_net_model

    return hand_net_model.dataloaders(ws, cfg, batch_size)


def _reads_hand_net(learn) -> bool:
    from . import hand_net_model

    return hand_net_model.is_hand_net_learner(learn)


def _hand_net_probs(engine, paths, batch_size, tta, log, store):
    from . import hand_net_model

    return hand_net_model.probs(engine, paths, batch_size, tta, log, store)


def _hand_net_read(engine, photo, detector):
    from . import hand_net_model

    return hand_net_model.read(engine, photo, detector)


def _hand_net_plan(learn, t):
    from . import hand_net_model

    return hand_net_model.onnx_plan(learn, t)


IMAGE_INPUT = Input(inputs.IMAGES, _image_dataloaders, _reads_images, _image_probs, _image_read, _image_plan)
LANDMARK_INPUT = Input(inputs.LANDMARKS, _landmark_dataloaders, _reads_landmarks, _landmark_probs, _landmark_read,
                       _landmark_plan)
CROP_INPUT = Input(inputs.HAND_CROP, _crop_dataloaders, _reads_crops, _crop_probs, _crop_read, _crop_plan)
HAND_NET_INPUT = Input(inputs.HAND_NET, _hand_net_dataloaders, _reads_hand_net, _hand_net_probs, _hand_net_read,
                       _hand_net_plan)
INPUTS = {i.kind.name: i for i in (LANDMARK_INPUT, CROP_INPUT, HAND_NET_INPUT, IMAGE_INPUT)}  # `input_of` asks them in this order


def _landmark_learner(dls, t, n_in, common, ws):
    from . import hand_model

    extra = ([hand_model.jitter_callback(t.landmark_rotate, mirror=t.landmark_mirror)]
             if t.landmark_rotate or t.landmark_mirror else [])
    return hand_model.make_learner(dls, t, cbs=extra, **common)


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


def _fused_learner(dls, t, n_in, common, ws):
    from . import fused_model

    return fused_model.make_learner(dls, t, **common)


def _hand_net_learner(dls, t, n_in, common, ws):
    from . import hand_net_model

    return hand_net_model.make_learner(dls, t, **common)


LEARNERS = {families.HAND_LANDMARKS: _landmark_learner, families.BASELINE: _baseline_learner,
            families.BACKBONE: _backbone_learner, families.HAND_CROP_BACKBONE: _backbone_learner,
            families.HAND_FUSED: _fused_learner, families.HAND_NET: _hand_net_learner}


def check_arch(arch: str) -> None:
    """Refuse, in one line, an `arch` that no family could build (run before any stage starts)."""
    if families.family(arch) is families.BACKBONE:
        from .backbones import check_arch as check_backbone

        check_backbone(arch, also=f", or one of {families.named_archs()}")


def dataloaders(ws, cfg, batch_size: int | None = None):
    """DataLoaders over the persisted split, for what `cfg`'s model family reads."""
    return INPUTS[families.of(cfg).input.name].dataloaders(ws, cfg, batch_size)


def make_learner(dls, cfg, ws):
    """A fastai Learner for `cfg.train.arch`, built by its family (the one factory), with the loss, optimiser,
    metrics and runtime (precision, channels-last) every family shares."""
    import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle, fine_tune, lr_find)
    from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
    from fastai.metrics import accuracy, error_rate

    from .training import opt_func

    t = cfg.train
    loss = LabelSmoothingCrossEntropyFlat(eps=t.label_smoothing) if t.label_smoothing else CrossEntropyLossFlat()
    common = dict(loss_func=loss, opt_func=opt_func(t), metrics=[error_rate, accuracy],
                  path=ws.scratch, model_dir="models", wd=t.wd or None)
    learn = LEARNERS[families.of(cfg)](dls, t, 1 if t.grayscale else 3, common, ws)
    learn.recorder.train_metrics = True
    runtime.apply(learn, runtime.decide(t, families.of(cfg).channels_last))
    return learn


def input_of(learn) -> Input:
    """What a loaded (exported) learner reads; a one-line error for a learner no family here made."""
    for kind in INPUTS.values():
        if kind.recognises(learn):
            return kind
    raise PipelineError(f"no model family here reads this learner ({type(learn).__name__} over "
                        f"{type(learn.dls).__name__}): only image, hand-landmark, hand-crop and hand-network learners")


def export_onnx(learn, path, t, log=print) -> dict:
    """Write the ONNX graph of `learn` to `path` (parity-checked, `onnx_export.export`) and return the model card's
    `onnx` entry; a learner no family here exports gets an entry saying why, and no file."""
    from . import onnx_export

    try:
        plan = input_of(learn).onnx_plan(learn, t)
    except PipelineError as e:
        log(f"no ONNX export: {e}")
        return {"file": None, "why": str(e)}
    return onnx_export.export(learn, path, plan, log)
