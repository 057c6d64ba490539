"""The hand-crop kind (`datablock.input = "hand_crop"`): the square around the hand MediaPipe finds, at
`train.image_size` (`data.py`: the crop rule, its store, datablock's crops), and any timm or torchvision backbone
fine-tuned on the crops (`vision_learner` over crop DataLoaders whose `get_x` is `model.CropReader`); its ONNX graph
reads one uint8 crop (`shared.graph.image_plan`). The fused kind (`hand_fused`) reads the same crops.
"""
from __future__ import annotations

from pathlib import Path

from ...core import artifacts
from ...core.errors import PipelineError
from ...data import hands
from ...models import backbones
from ..base import UINT8_IMAGES, Kind, size_problem
from . import data

_QUIET = lambda message: None  # noqa: E731


def _side(engine) -> int:
    """The side of the crop the engine's model reads (its card's `image_size`)."""
    if not engine.image_size:
        raise PipelineError("this hand-crop model's card, which gives the side of the crop it reads (image_size), is "
                            "missing beside the export: load it with its card")
    return engine.image_size


def _run(engine, pngs: list, dets: list, photos: list, folder: Path | None, batch_size: int, log):
    """The engine's probabilities for PNG crops: offered as crop files (a crop learner's or an image graph's
    input), as the crops themselves with their photos and data folder (a learner that answers them: the fused
    head), and with the keypoint rows of the same detections (a graph that fuses them)."""
    from . import model as crop_model

    with crop_model.crop_files(pngs) as files:
        return engine.run({"files": files, "crops": pngs, "photos": photos, "folder": folder,
                           "features": lambda: hands.features_of(dets)}, batch_size, log)


class HandCrop(Kind):
    """A backbone fine-tuned on the hand crops."""
    name, input, title = "hand-crop image backbone", "hand_crop", "hand-crop model"
    finds_hands, channels_last = True, True
    writes, params = (artifacts.LANDMARKS, artifacts.NO_HAND), ("train.image_size",)
    graph_input = UINT8_IMAGES
    check_arch = staticmethod(backbones.check_arch)

    def learner(self, dls, t, n_in: int, common: dict, ws):
        """fastai's `vision_learner` on `train.arch` (models/backbones.py), which keeps the side of the crop it reads
        (`image_size`, for an engine loading its export without a card)."""
        learn = backbones.learner(dls, t.arch, t.pretrained, n_in, t.head_dropout, ws.data, **common)
        learn.image_size = t.image_size
        return learn

    def seen(self, image_size: int | None, grayscale: bool = False) -> str:
        return f"hand crops (MediaPipe), {image_size} px"

    def recipe(self, cfg) -> str:
        return ", ".join([f"hand crop {cfg.train.image_size}px"] + (["aug, no flips"] if cfg.train.augment else []))

    def card_fields(self, t) -> dict:
        """`image_size` (the crop's side) and `hand_crop`: how a client makes the crop the model reads."""
        return {"image_size": t.image_size, "grayscale": None, "hand_crop": data.client_settings(t.image_size)}

    def card_problem(self, card: dict) -> tuple[str, str] | None:
        if (problem := size_problem(card)):
            return problem
        if not isinstance(card.get("hand_crop"), dict):
            return "hand_crop", f"{card.get('hand_crop')!r} is not the crop's settings"
        return None

    def keep(self, df, holdout, root: Path, cfg, ws, log):
        return data.keep_hands(df, holdout, root, ws, log)

    def prepare(self, df, root: Path, cfg, ws, log) -> list[Path]:
        return data.prepare(df, root, cfg.train.image_size, ws, log)

    def warm(self, paths: list, cfg, folder: Path, log) -> int:
        return data.warm(paths, cfg.train.image_size, folder, log)

    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        """fastai DataLoaders of crop images over the persisted split (`ColSplitter`), with `aug_transforms` without
        flips when `train.augment` (a mirrored hand is the other hand's sign)."""
        from fastai.vision.all import CategoryBlock, ColReader, ColSplitter, DataBlock, ImageBlock

        from .model import CropReader

        t = cfg.train
        bs = batch_size or t.batch_size
        df, crops, vocab = data.split_crops(ws, bs, t.image_size)
        block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=vocab)), get_x=CropReader(t.image_size, crops),
                          get_y=ColReader("label"), splitter=ColSplitter("is_valid"), batch_tfms=self.batch_tfms(t))
        rt = self.decide_runtime(t)
        return block.dataloaders(df, bs=bs, num_workers=rt.workers, pin_memory=rt.pin_memory)

    def recognises(self, learn) -> bool:
        from .model import crop_reader

        return crop_reader(learn) is not None

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, folder: Path | None):
        """Each photo cropped around its hand at the side the model reads (through the stores in `folder` when
        given) and the crops read by the model; a photo with no hand is shown as its whole frame, and said so by hand
        found False."""
        if tta:
            raise PipelineError("test-time augmentation augments pixels: a hand-crop model takes none (the crop comes "
                                "first)")
        pngs, found, dets = data.photo_crops(paths, _side(engine), folder, log)
        return _run(engine, pngs, dets, [str(p) for p in paths], folder, batch_size, log), found

    def read(self, engine, photo, detector):
        det, img, points = hands.frame_detection(photo, detector)
        if det is None:
            return None, None
        png = data.png(data.crop_image(img, det, _side(engine)))
        return _run(engine, [png], [det], [None], None, 1, _QUIET)[0], points

    def onnx_plan(self, learn, t):
        """One uint8 crop in (the image graph's), which a client makes with MediaPipe first (the card's
        `hand_crop`)."""
        from ..shared.graph import image_plan

        plan = image_plan(learn, t.image_size, False)
        entry = {**plan.entry,
                 "client_does": f"find the hand with MediaPipe Hands and cut the padded square around it "
                                f"(pipeline.kinds.hand_crop.data.crop, the card's hand_crop), {t.image_size}x{t.image_size} "
                                f"RGB; a photo with no hand has no crop"}
        return plan._replace(entry=entry)


