"""The kinds that read whole photos at `train.image_size` (`datablock.input = "images"`): a pretrained backbone
fine-tuned with fastai's `vision_learner` (any torchvision or timm name: models/backbones.py), and the from-scratch
baselines (`model.py`). Both answer through the engine's `images`; their ONNX graph reads uint8 images
(`shared.graph.image_plan`); datablock's batch.png and pixel cache: `data.py`."""
from __future__ import annotations

from pathlib import Path

from ...data import loaders
from ...models import backbones
from ..base import UINT8_IMAGES, Kind, size_problem
from . import data


class Images(Kind):
    """A pretrained image backbone (`vision_learner`), fine-tuned on the photos."""
    name, input, title = "pretrained image backbone", "images", "image"
    pixels, channels_last, needs_package = True, True, False
    graph_input = UINT8_IMAGES
    check_arch = staticmethod(backbones.check_arch)

    def learner(self, dls, t, n_in: int, common: dict, ws):
        """fastai's `vision_learner` on `train.arch` (models/backbones.py)."""
        return backbones.learner(dls, t.arch, t.pretrained, n_in, t.head_dropout, ws.data, **common)

    def require(self) -> None:
        pass

    def seen(self, image_size: int | None, grayscale: bool = False) -> str:
        return f"{image_size} px" + (" gray" if grayscale else "")

    def recipe(self, cfg) -> str:
        t = cfg.train
        return ", ".join([f"{t.image_size}px" + (" gray" if t.grayscale else "")]
                         + ([f"aug {t.augment_strength}" if t.augment_strength != "default" else "aug"] if t.augment else [])
                         + ([f"random crop ≥{t.random_crop_scale:g}"] if t.random_crop_scale else [])
                         + ([f"tta {cfg.evaluate.tta}"] if cfg.evaluate.tta else []))

    def card_fields(self, t) -> dict:
        return {"image_size": t.image_size, "grayscale": t.grayscale}

    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        """The photos over the persisted split (`loaders.dataloaders`), at `train.image_size`, augmented as the
        config says."""
        t = cfg.train
        rt = self.decide_runtime(t)
        return loaders.dataloaders(ws, batch_size or t.batch_size, t.image_size, t.grayscale, self.batch_tfms(t),
                                   rt.workers, rt.pin_memory)

    def card_problem(self, card: dict) -> tuple[str, str] | None:
        if (problem := size_problem(card)):
            return problem
        if card.get("grayscale") not in (None, True, False):
            return "grayscale", f"{card['grayscale']!r} is not true or false"
        return None

    def prepare(self, df, root: Path, cfg, ws, log) -> list[Path]:
        n_valid = int(df["is_valid"].sum())
        dls = self.dataloaders(ws, cfg, batch_size=max(1, min(16, len(df) - n_valid)))
        return data.prepare(dls, df, root, ws, log, cfg.datablock.cache, cfg.train.image_size, cfg.train.grayscale)

    def recognises(self, learn) -> bool:
        valid = getattr(learn.dls, "valid", None)  # a loaded fused learner's `PhotoDls` has none
        fs = getattr(getattr(valid, "after_item", None), "fs", ())  # a Pipeline's transforms
        return any(type(t).__name__ == "Resize" for t in fs)

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, folder: Path | None):
        return engine.run({"files": paths}, batch_size, log, tta), None

    def read(self, engine, photo, detector):
        return engine.run({"files": [photo]}, 1, lambda message: None)[0], None

    def onnx_plan(self, learn, t):
        from ..shared.graph import image_plan

        return image_plan(learn, t.image_size, t.grayscale)


class Baseline(Images):
    """A from-scratch baseline (baselines.py: the published figures' own architectures)."""
    name, archs, channels_last = "from-scratch baseline", ("logreg", "mlp", "cnnnet", "aslnet"), False

    def check_arch(self, arch: str, also: str = "") -> None:
        pass

    def learner(self, dls, t, n_in: int, common: dict, ws):
        from fastai.learner import Learner

        from .model import create_baseline

        return Learner(dls, create_baseline(t.arch, len(dls.vocab), n_in=n_in, size=t.image_size), **common)
