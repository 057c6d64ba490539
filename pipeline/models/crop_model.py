"""The hand-crop families' reading of photos (`datablock.input = "hand_crop"`, pipeline/data/hand_crops.py), for both:

- a backbone fine-tuned on the crops (`train.arch` any timm or torchvision name): fastai's `vision_learner` over
  crop DataLoaders whose `get_x` is a `CropReader`. The reader hands over the stored crop of a photo of the split,
  and crops any other photo itself (MediaPipe in this process), so the export answers
  `load_learner(pkl).predict("photo.jpg")` with no step of this project's run in between.
- a head on a frozen backbone (`train.arch = "hand_fused"`): fused_model.py.

Here too the crop `registry.Input`'s work under either engine: `probs` (photos → crops → model), `read` (one photo
or frame with a detector or tracker of its own), `onnx_plan` (the fine-tuned backbone's graph on one uint8 crop).
Its own module because `load_learner` unpickles `CropReader` by its class name (the card says the export needs
this package).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from fastai.data.transforms import Transform

from ..core.errors import PipelineError
from ..data import hand_crops, hands
from .fused_model import FusedLearner

_DETECTOR = None
_PREPARED: dict[str, bytes] = {}  # crop files `probs` wrote → their PNG bytes: every CropReader reads them as they are


def _detector():
    """One MediaPipe detector for this process, made when a photo outside the stores first needs one."""
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = hands.Detector()
    return _DETECTOR


def crop_photo(path, size: int) -> tuple[bytes, list]:
    """(PNG bytes of the crop the model sees, the `hands.detection` detection) of one photo, found in this process; the
    whole frame where no hand is found."""
    raw = hands.detection(str(path), _detector())
    return hand_crops.png(hand_crops.crop(path, raw, size)), raw


class CropReader(Transform):
    """`get_x` of crop DataLoaders (a fastai Transform, so an export keeps it as itself): a DataFrame row (its
    `file`) or a photo's path → the PNG bytes of its crop, from `crops` (filled from the crop store), else cropped
    now. `crops` is not pickled with an export."""

    def __init__(self, size: int, crops: dict | None = None):
        super().__init__()
        self.size, self.crops = size, crops or {}
        self.input_types = (str, Path, pd.Series)  # so that `test_dl` of photo paths starts here, not at PILImage

    def __getstate__(self):
        return {**self.__dict__, "crops": {}}

    def encodes(self, item):
        key = str(item["file"] if isinstance(item, pd.Series) else item)
        if key in _PREPARED:  # already a crop (`probs`): the model reads it as it is
            return _PREPARED[key]
        if key not in self.crops:
            self.crops[key], raw = crop_photo(key, self.size)
            if not raw[0]:
                warnings.warn(f"no hand found in {key}: the label is the model's answer for the whole frame",
                              stacklevel=2)
        return self.crops[key]


def crop_reader(learn) -> CropReader | None:
    """The `CropReader` of a crop learner's DataLoaders (None for any other learner)."""
    try:
        fs = learn.dls.valid.dataset.tls[0].tfms.fs
    except AttributeError:
        return None
    return next((f for f in fs if isinstance(f, CropReader)), None)


def is_crop_learner(learn) -> bool:
    return isinstance(learn, FusedLearner) or crop_reader(learn) is not None


def dataloaders(ws, cfg, batch_size: int | None = None):
    """DataLoaders for a hand-crop family: crop images (a backbone to fine-tune) or embeddings (`hand_fused`)."""
    from . import families

    if cfg.train.arch == families.FUSED_ARCH:
        from . import fused_model

        return fused_model.dataloaders(ws, cfg, batch_size)
    return image_dataloaders(ws, cfg, batch_size)


def image_dataloaders(ws, cfg, batch_size: int | None = None):
    """fastai DataLoaders of crop images over the persisted split (`ColSplitter`), with `aug_transforms` without
    flips when `train.augment` (a mirrored hand is the other hand's sign)."""
    from fastai.vision.all import CategoryBlock, ColReader, ColSplitter, DataBlock, ImageBlock

    from ..core.runtime import decide
    from ..data.loaders import batch_augmentation

    df, crops, vocab = hand_crops.split_crops(ws, cfg, batch_size)
    t = cfg.train
    block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=vocab)), get_x=CropReader(t.image_size, crops),
                      get_y=ColReader("label"), splitter=ColSplitter("is_valid"), batch_tfms=batch_augmentation(t))
    rt = decide(t, True)
    return block.dataloaders(df, bs=batch_size or t.batch_size, num_workers=rt.workers, pin_memory=rt.pin_memory)


def _crop_files(pngs: list[bytes], folder: Path) -> list[str]:
    """Write each PNG crop to `folder` as a file of its own (what an engine's `images` reads), registered so that a
    `CropReader` takes it as the crop it is."""
    files = []
    for i, png in enumerate(pngs):
        f = Path(folder) / f"crop{i:06d}.png"
        f.write_bytes(png)
        _PREPARED[str(f)] = png
        files.append(str(f))
    return files


def _engine_probs(engine, pngs: list[bytes], raws: list, batch_size: int, log) -> np.ndarray:
    """An engine's probabilities for crops (written to a scratch folder for its `images`), with the keypoint rows
    of the detections `raws` for an ONNX graph that reads them too (the fused model's)."""
    import tempfile

    from .fused_model import keypoint_rows

    more = {"features": keypoint_rows(raws)} if engine.features_input else {}
    with tempfile.TemporaryDirectory(prefix="crops-") as tmp:
        files = _crop_files(pngs, Path(tmp))
        try:
            return np.asarray(engine.images(files, batch_size, 0, log, **more))
        finally:
            for f in files:
                _PREPARED.pop(f, None)


def _fused(engine) -> "FusedLearner | None":
    """The fastai engine's learner when it is a fused one (it answers photos itself, under the engine's lock)."""
    return engine.learn if isinstance(engine.learn, FusedLearner) else None


def _size(engine) -> int:
    """The side of the crop the engine's model reads (the fastai engine's `CropReader`, the onnx engine's card)."""
    return crop_reader(engine.learn).size if engine.learn is not None else engine.image_size


def probs(engine, paths: list, batch_size: int = 64, tta: int = 0, log=print, store=None):
    """(probabilities, hand found) for photos under either engine (`registry.Input.probs`): each photo cropped around
    its hand (through the stores beside `store`, a content store in the data folder, when given) and the crops
    read by the model; a photo with no hand is shown as its whole frame, and said so by hand found False."""
    if tta:
        raise PipelineError("test-time augmentation augments pixels: a hand-crop model takes none (the crop comes first)")
    folder = Path(store.path).parent if store is not None else None
    if (fused := _fused(engine)) is not None:
        with engine.lock:
            p, found = fused.photo_probs(paths, batch_size, log, folder)
        return p.numpy(), found
    pngs, found, raws = hand_crops.photo_crops(paths, _size(engine), folder, log)
    return _engine_probs(engine, pngs, raws, batch_size, log), found


def read(engine, photo, detector):
    """(probabilities or None with no hand, the keypoints or None) for one photo (a path, with a `Detector`) or one
    frame of a stream (an RGB array, with a `Tracker`): `registry.Input.read`."""
    from PIL import Image

    points, handedness, score = detector(photo)
    if points is None:
        return None, None
    raw = [True, handedness, score] + [float(v) for q in points for v in q]
    img = Image.fromarray(np.asarray(photo)) if not isinstance(photo, (str, Path)) else hand_crops._upright(photo)
    if (fused := _fused(engine)) is not None:
        with engine.lock:
            return fused.crop_probs([raw], [img])[0].numpy(), points
    png = hand_crops.png(hand_crops.crop_image(img, raw, _size(engine)))
    return _engine_probs(engine, [png], [raw], 1, lambda message: None)[0], points


def onnx_plan(learn, t):
    """The fine-tuned crop backbone's ONNX graph: one uint8 crop in (the image graph's, `onnx_export.image_plan`),
    which a client makes with MediaPipe first (the card's `hand_crop`); the fused model's is `fused_model.onnx_plan`."""
    from . import fused_model, inputs, onnx_export

    if isinstance(learn, FusedLearner):
        return fused_model.onnx_plan(learn, t)
    plan = onnx_export.image_plan(learn, t.image_size, False)
    entry = {**plan.entry,
             "client_does": f"find the hand with MediaPipe Hands and cut the padded square around it "
                            f"(pipeline.data.hand_crops.crop, the card's hand_crop), {t.image_size}x{t.image_size} RGB; "
                            f"a photo with no hand has no crop"}
    return plan._replace(family=inputs.HAND_CROP.name, entry=entry)
