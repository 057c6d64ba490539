"""What each kind of model input is, for the stages that prepare data: the data half of the registry (families.py
names the families, registry.py builds them). An `InputKind` is the value of `datablock.input`: whether the model
sees pixels, whether photos go through MediaPipe first, which images it can train on (`keep`, before the split),
what datablock writes for it and how (`prepare`), the per-photo content store it reuses, and how a run, a card or
a report names what the model sees.

This half imports no model code (only data-side modules, where used), so download's and datablock's code
fingerprints stay exact. A new input: an `InputKind` here with its `prepare` in its own module, its reader in
registry.py (`registry.Input`), and a family in families.py that reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core import artifacts

MAX_IMAGE_SIZE = 1024  # pixels a side a model reads (train.image_size, a card's): larger batches do not fit in memory
ENGINES = ("fastai", "onnx")  # what runs an export (`--engine`, `evaluate.engine`): the learner, or onnxruntime


def _size_problem(card: dict, max_size: int) -> tuple[str, str] | None:
    """What is wrong with a card's `image_size` (the side of the square the model reads), or None."""
    size = card.get("image_size")
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= max_size):
        return "image_size", f"{size!r} is not a whole number of pixels (1 to {max_size})"
    return None


def _keep_all(df, holdout, root: Path, cfg, ws, log):
    return df, {}


def _warm_nothing(paths: list, cfg, folder: Path, log) -> int:
    return 0


@dataclass(frozen=True)
class InputKind:
    name: str                   # the value of datablock.input
    title: str                  # what the app and its log call a model that reads it ("image model")
    pixels: bool                # whole decoded images at train.image_size: the pixel cache and pixel TTA apply
    finds_hands: bool           # photos become hand keypoints (MediaPipe) first: the [hands] extra, keypoints drawn
    writes: tuple[str, ...]     # what datablock writes for it, beside the split
    prepare: Callable           # (df, root, cfg, ws, log) -> datablock's outputs for it, after the split is written
    store: Callable             # (data folder, log) -> the content store of what it computes per photo, or None
    keep: Callable = _keep_all  # (df, holdout, root, cfg, ws, log) -> (the images it can train on, before the split is
                                # made; vocab.json's fields that count the others)
    params: tuple[str, ...] = ()  # the config entries its prepare reads beyond datablock's (datablock's params_if)
    warm: Callable = _warm_nothing  # (paths, cfg, data folder, log) -> images looked at: fills the content stores
                                    # its prepare reads (a distributed launch's ranks share this work)

    def require(self) -> None:
        """Fail now, in one line, when what this input needs is not installed (before minutes of verifying)."""
        if self.finds_hands:
            from ..data import hands

            hands.require()

    def seen(self, image_size: int | None, grayscale: bool = False) -> str:
        """What the model sees, in words, for a log line, a report and a recipe."""
        if self.pixels:
            return f"{image_size} px" + (" gray" if grayscale else "")
        return "hand keypoints (MediaPipe), no pixels"

    def recipe(self, cfg) -> str:
        """The input's part of a recipe, in words, for compare's table: what the model sees and how it is augmented."""
        t = cfg.train
        if self.finds_hands:
            return ", ".join(["hand landmarks" + (" + shape" if t.landmark_features == "coords+shape" else "")]
                             + ([f"rotate ±{t.landmark_rotate:g}°"] if t.landmark_rotate else []))
        return ", ".join([f"{t.image_size}px" + (" gray" if t.grayscale else "")]
                         + ([f"aug {t.augment_strength}" if t.augment_strength != "default" else "aug"] if t.augment else [])
                         + ([f"random crop ≥{t.random_crop_scale:g}"] if t.random_crop_scale else [])
                         + ([f"tta {cfg.evaluate.tta}"] if cfg.evaluate.tta else []))

    def card_problem(self, card: dict, max_size: int) -> tuple[str, str] | None:
        """(field, what is wrong) with what a model card says of this input's pixels, or None."""
        if not self.pixels:
            return None
        if (problem := _size_problem(card, max_size)):
            return problem
        if card.get("grayscale") not in (None, True, False):
            return "grayscale", f"{card['grayscale']!r} is not true or false"
        return None

    def card_fields(self, t) -> dict:
        """The model card's `image_size` and `grayscale`: None for a model that never sees pixels."""
        return {"image_size": t.image_size if self.pixels else None, "grayscale": t.grayscale if self.pixels else None}


def _prepare_images(df, root: Path, cfg, ws, log) -> list[Path]:
    """batch.png (a training batch as the model sees it) and, with datablock.cache, every image decoded once."""
    from ..core.workspace import pyplot, save_figure
    from ..data import cache, loaders

    plt = pyplot()

    n_valid = int(df["is_valid"].sum())
    dls = loaders.dataloaders(ws, cfg, batch_size=max(1, min(16, len(df) - n_valid)))
    dls.show_batch(max_n=16, figsize=(8, 8))
    outputs = [save_figure(plt.gcf(), ws.artifact("datablock", artifacts.BATCH_PNG))]
    if cfg.datablock.cache:
        outputs += cache.build(ws, cfg, dls, df, root, log)
    return outputs


def _prepare_landmarks(df, root: Path, cfg, ws, log) -> list[Path]:
    """landmarks.csv (path, hand found, handedness, score, the model's features) for every image of the split,
    the detection rate per class in the log, and batch.png: training images with their keypoints drawn."""
    from ..core.workspace import write_csv
    from ..data import content_store, hands

    feats = hands.extract([root / p for p in df["path"]], log, store=content_store.landmarks(ws.data, log))
    feats.insert(0, "path", df["path"].to_numpy())
    rate = feats["hand_found"].groupby(df["label"].to_numpy()).mean().sort_values()
    log("hand found per class, lowest first: " + ", ".join(f"{k} {v:.0%}" for k, v in rate.head(6).items()))
    train = df[~df["is_valid"]].sample(n=min(16, int((~df["is_valid"]).sum())), random_state=0)
    return [write_csv(ws.artifact("datablock", artifacts.LANDMARKS), feats),
            hands.plot_landmarks([root / p for p in train["path"]], list(train["label"]),
                                 ws.artifact("datablock", artifacts.BATCH_PNG), "training images: hand landmarks")]


def _warm_landmarks(paths: list, cfg, folder: Path, log) -> int:
    from ..data import content_store, hands

    return hands.warm(paths, content_store.landmarks(folder, log), log)


def _warm_crops(paths: list, cfg, folder: Path, log) -> int:
    from ..data import hand_crops

    return hand_crops.warm(paths, cfg.train.image_size, folder, log)


def _no_store(folder: Path, log=print):
    return None


def _landmark_store(folder: Path, log=print):
    from ..data import content_store

    return content_store.landmarks(folder, log)


class CropKind(InputKind):
    """Hand crops: pixels, but of the square around the hand MediaPipe finds (hand_crops.py), at train.image_size;
    no pixel cache, no TTA (the crop is made before the model's transforms)."""

    def seen(self, image_size: int | None, grayscale: bool = False) -> str:
        return f"hand crops (MediaPipe), {image_size} px"

    def recipe(self, cfg) -> str:
        t = cfg.train
        return ", ".join([f"hand crop {t.image_size}px"] + (["aug, no flips"] if t.augment else [])
                         + ([f"frozen {t.crop_backbone}" + (" + keypoints" if t.crop_fusion == "keypoints" else "")]
                            if t.arch == FUSED_ARCH else []))

    def card_problem(self, card: dict, max_size: int) -> tuple[str, str] | None:
        if (problem := _size_problem(card, max_size)):
            return problem
        if not isinstance(card.get("hand_crop"), dict):
            return "hand_crop", f"{card.get('hand_crop')!r} is not the crop's settings"
        return None

    def card_fields(self, t) -> dict:
        """`image_size` (the crop's side) and `hand_crop`: how a client makes the crop the model reads."""
        from ..data import hand_crops

        return {"image_size": t.image_size, "grayscale": None, "hand_crop": hand_crops.client_settings(t.image_size)}


FUSED_ARCH = "hand_fused"  # the hand-crop family that reads a frozen backbone's crop embedding (families.HAND_FUSED)


def _prepare_crops(df, root: Path, cfg, ws, log) -> list[Path]:
    from ..data import hand_crops

    return hand_crops.prepare(df, root, cfg, ws, log)


def _keep_hands(df, holdout, root: Path, cfg, ws, log):
    from ..data import hand_crops

    return hand_crops.keep_hands(df, holdout, root, ws, log)


def _crop_store(folder: Path, log=print):
    from ..data import hand_crops

    return hand_crops.points_store(folder)


class HandNetKind(InputKind):
    """The hand keypoints and the pooled feature of MediaPipe's own hand network on the upright hand (hand_net.py)."""

    def seen(self, image_size: int | None, grayscale: bool = False) -> str:
        return "hand keypoints + MediaPipe's hand-network embedding (frozen), no pixels"

    def recipe(self, cfg) -> str:
        return InputKind.recipe(self, cfg).replace("hand landmarks", "hand landmarks + hand-net embedding", 1)

    def card_fields(self, t) -> dict:
        """No pixels; `hand_net`: how a client makes the embedding this model reads."""
        from ..data import hand_net

        return {**InputKind.card_fields(self, t), "hand_net": hand_net.client_settings()}

    def require(self) -> None:
        from ..data import hand_net

        InputKind.require(self)
        hand_net.require()
        hand_net.network_path()


def _prepare_hand_net(df, root: Path, cfg, ws, log) -> list[Path]:
    from ..data import hand_net

    return hand_net.prepare(df, root, ws, log)


def _warm_hand_net(paths: list, cfg, folder: Path, log) -> int:
    from ..data import hand_net

    return hand_net.warm(paths, folder, log)


def _hand_net_store(folder: Path, log=print):
    from ..data import hand_net

    return hand_net.store(folder, log)


IMAGES = InputKind("images", "image", pixels=True, finds_hands=False, writes=(), prepare=_prepare_images, store=_no_store)
LANDMARKS = InputKind("landmarks", "hand keypoints", pixels=False, finds_hands=True, writes=(artifacts.LANDMARKS,),
                      prepare=_prepare_landmarks, store=_landmark_store, warm=_warm_landmarks)
HAND_CROP = CropKind("hand_crop", "hand-crop model", pixels=False, finds_hands=True,
                     writes=(artifacts.LANDMARKS, artifacts.NO_HAND), prepare=_prepare_crops, store=_crop_store,
                     keep=_keep_hands, params=("train.image_size",), warm=_warm_crops)
HAND_NET = HandNetKind("hand_net", "hand keypoints + hand-network model", pixels=False, finds_hands=True,
                       writes=(artifacts.LANDMARKS,), prepare=_prepare_hand_net, store=_hand_net_store,
                       warm=_warm_hand_net)
KINDS = {k.name: k for k in (IMAGES, LANDMARKS, HAND_CROP, HAND_NET)}


def kind(name: str) -> InputKind:
    """The input kind called `name` (a card's or a config's `datablock.input`)."""
    return KINDS[name]
