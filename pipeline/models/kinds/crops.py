"""The hand-crop kinds (`datablock.input = "hand_crop"`, pipeline/data/hand_crops.py): the square around the hand
MediaPipe finds, at `train.image_size`. Two models read it:

- `HandCrop`: any timm or torchvision backbone fine-tuned on the crops (`vision_learner` over crop DataLoaders
  whose `get_x` is crop_model's `CropReader`); its ONNX graph reads one uint8 crop;
- `CropEmbedding` (`train.arch = "hand_fused"`): a head on a frozen backbone's embedding of the crop, alone or with
  the keypoints (`train.crop_fusion`); fused_model.py holds its classes and graph.
"""
from __future__ import annotations

from pathlib import Path

from ...core import artifacts
from ...core.errors import PipelineError
from ...data import hand_crops, hands
from .. import backbones
from .base import UINT8_IMAGES, Kind, size_problem
from .images import backbone_learner

_QUIET = lambda message: None  # noqa: E731


def _folder(store) -> Path | None:
    """The data folder of a content store (where the crop and embedding stores lie beside it), or None."""
    return Path(store.path).parent if store is not None else None


class HandCrop(Kind):
    """A backbone fine-tuned on the hand crops."""
    name, input, title = "hand-crop image backbone", "hand_crop", "hand-crop model"
    finds_hands, channels_last = True, True
    writes, params = (artifacts.LANDMARKS, artifacts.NO_HAND), ("train.image_size",)
    graph_input = UINT8_IMAGES
    check_arch = staticmethod(backbones.check_arch)
    learner = staticmethod(backbone_learner)

    def seen(self, image_size: int | None, grayscale: bool = False) -> str:
        return f"hand crops (MediaPipe), {image_size} px"

    def recipe(self, cfg) -> str:
        return ", ".join([f"hand crop {cfg.train.image_size}px"] + (["aug, no flips"] if cfg.train.augment else []))

    def card_fields(self, t) -> dict:
        """`image_size` (the crop's side) and `hand_crop`: how a client makes the crop the model reads."""
        return {"image_size": t.image_size, "grayscale": None, "hand_crop": hand_crops.client_settings(t.image_size)}

    def card_problem(self, card: dict) -> tuple[str, str] | None:
        if (problem := size_problem(card)):
            return problem
        if not isinstance(card.get("hand_crop"), dict):
            return "hand_crop", f"{card.get('hand_crop')!r} is not the crop's settings"
        return None

    def keep(self, df, holdout, root: Path, cfg, ws, log):
        return hand_crops.keep_hands(df, holdout, root, ws, log)

    def prepare(self, df, root: Path, cfg, ws, log) -> list[Path]:
        return hand_crops.prepare(df, root, cfg.train.image_size, ws, log)

    def warm(self, paths: list, cfg, folder: Path, log) -> int:
        return hand_crops.warm(paths, cfg.train.image_size, folder, log)

    store = staticmethod(hands.store)

    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        """fastai DataLoaders of crop images over the persisted split (`ColSplitter`), with `aug_transforms` without
        flips when `train.augment` (a mirrored hand is the other hand's sign)."""
        from fastai.vision.all import CategoryBlock, ColReader, ColSplitter, DataBlock, ImageBlock

        from ..crop_model import CropReader

        t = cfg.train
        bs = batch_size or t.batch_size
        df, crops, vocab = hand_crops.split_crops(ws, bs, t.image_size)
        block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=vocab)), get_x=CropReader(t.image_size, crops),
                          get_y=ColReader("label"), splitter=ColSplitter("is_valid"), batch_tfms=self.batch_tfms(t))
        rt = self.decide_runtime(t)
        return block.dataloaders(df, bs=bs, num_workers=rt.workers, pin_memory=rt.pin_memory)

    def recognises(self, learn) -> bool:
        from ..crop_model import crop_reader

        return crop_reader(learn) is not None

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, store):
        """Each photo cropped around its hand (through the stores beside `store` when given) and the crops read by
        the model; a photo with no hand is shown as its whole frame, and said so by hand found False."""
        from .. import crop_model

        if tta:
            raise PipelineError("test-time augmentation augments pixels: a hand-crop model takes none (the crop comes "
                                "first)")
        pngs, found, dets = hand_crops.photo_crops(paths, crop_model.crop_size(engine), _folder(store), log)
        return crop_model.engine_probs(engine, pngs, dets, batch_size, log), found

    def read(self, engine, photo, detector):
        from .. import crop_model

        det, img, points = hands.frame_detection(photo, detector)
        if det is None:
            return None, None
        png = hand_crops.png(hand_crops.crop_image(img, det, crop_model.crop_size(engine)))
        return crop_model.engine_probs(engine, [png], [det], 1, _QUIET)[0], points

    def onnx_plan(self, learn, t):
        """One uint8 crop in (the image graph's), which a client makes with MediaPipe first (the card's
        `hand_crop`)."""
        from .. import onnx_export

        plan = onnx_export.image_plan(learn, t.image_size, False)
        entry = {**plan.entry,
                 "client_does": f"find the hand with MediaPipe Hands and cut the padded square around it "
                                f"(pipeline.data.hand_crops.crop, the card's hand_crop), {t.image_size}x{t.image_size} "
                                f"RGB; a photo with no hand has no crop"}
        return plan._replace(entry=entry)


class CropEmbedding(HandCrop):
    """A head on a frozen backbone's embedding of the hand crop (+ the keypoints: `train.crop_fusion`)."""
    name, archs, channels_last = "hand-crop embedding head", ("hand_fused",), False

    def check_arch(self, arch: str, also: str = "") -> None:
        pass

    def recipe(self, cfg) -> str:
        t = cfg.train
        return (super().recipe(cfg) + f", frozen {t.crop_backbone}"
                + (" + keypoints" if t.crop_fusion == "keypoints" else ""))

    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        """DataLoaders of (crop embedding, keypoint features, label) over the persisted split, embeddings through the
        store; they carry what the learner needs: the frozen `body`, its `embedding_key` and the `photo` settings."""
        from .. import fused_model

        return fused_model.embedding_dataloaders(ws, cfg, batch_size or cfg.train.batch_size)

    def learner(self, dls, t, n_in: int, common: dict, ws):
        """A `FusedLearner` whose optimiser trains only the head of a `FusedNet` on `dls`' frozen body."""
        from ..fused_model import FusedLearner, FusedNet, head_params

        n_emb = int(dls.train.dataset[0][0].shape[0])
        model = FusedNet(dls.body, n_emb, t.crop_fusion == "keypoints", len(dls.vocab), t.head_dropout)
        learn = FusedLearner(dls, model, splitter=head_params, **common)
        learn.photo, learn.embedding_key = dls.photo, dls.embedding_key
        return learn

    def recognises(self, learn) -> bool:
        from ..fused_model import FusedLearner

        return isinstance(learn, FusedLearner)

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, store):
        """Under fastai the learner answers photos itself (its embeddings through the store), under the engine's
        lock; an ONNX graph reads the crops (and keypoints) as the fine-tuned crop model's does."""
        if engine.learn is None or tta:
            return super().probs(engine, paths, batch_size, tta, log, store)
        with engine.lock:
            p, found = engine.learn.photo_probs(paths, batch_size, log, _folder(store))
        return p.numpy(), found

    def read(self, engine, photo, detector):
        if engine.learn is None:
            return super().read(engine, photo, detector)
        det, img, points = hands.frame_detection(photo, detector)
        if det is None:
            return None, None
        with engine.lock:
            return engine.learn.crop_probs([det], [img])[0].numpy(), points

    def onnx_plan(self, learn, t):
        from .. import fused_model

        return fused_model.graph_plan(learn)
