"""What the hand-crop kinds (`hand_crop/kind.py`, `hand_fused/kind.py`) share to read photos: `CropReader`, the `get_x`
of a fine-tuned crop backbone's DataLoaders, hands over the stored crop of a photo of the split and crops any other
photo itself (MediaPipe in this process), so the export answers `load_learner(pkl).predict("photo.jpg")` with no
step of this project's run in between; `crop_files` (PNG crops as the files an engine reads).

Its own module because `load_learner` unpickles `CropReader` by its class name (the card says the export needs
this package).
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pandas as pd
from fastai.data.transforms import Transform

from ...data import hands
from . import data as hand_crops

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
    det = hands.detection(str(path), _detector())
    return hand_crops.png(hand_crops.crop(path, det, size)), det


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
            self.crops[key], det = crop_photo(key, self.size)
            if not det[0]:
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


@contextlib.contextmanager
def crop_files(pngs: list[bytes]):
    """For the block, each PNG crop written to a scratch folder as a file of its own (what an engine reads as image
    `files`), registered so that a `CropReader` takes it as the crop it is."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="crops-") as tmp:
        files = []
        for i, png in enumerate(pngs):
            f = Path(tmp) / f"crop{i:06d}.png"
            f.write_bytes(png)
            _PREPARED[str(f)] = png
            files.append(str(f))
        try:
            yield files
        finally:
            for f in files:
                _PREPARED.pop(f, None)
