"""The persisted split → fastai DataLoaders, identically for every stage that reads it; and the image checks around
it: `verify_images` (datablock, evaluate and `predict` leave out and list what does not decode) and, with
`datablock.verify = false`, `unverified_images` (a decoding failure later on becomes one line naming the option)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..core import artifacts
from ..core.errors import PipelineError
from ..core.workspace import Workspace, read_json
from .sources import list_images  # noqa: F401  (re-exported: the stages' one way to list images)

HOLDOUT_SET = "holdout"     # ... as the test set of this name


def load_split(ws: Workspace):
    """(DataFrame path,label,is_valid; image root; vocab) as written by the datablock stage."""
    import pandas as pd

    meta = read_json(ws.artifact("datablock", artifacts.VOCAB))
    df = pd.read_csv(ws.artifact("datablock", artifacts.SPLITS), keep_default_na=False,
                     dtype={"path": str, "label": str, "is_valid": bool, "source": str, "group": str})
    return df, Path(meta["root"]), list(meta["vocab"])


def image_block(cls):
    """fastai's `ImageBlock(cls)`, except that each image is first turned upright by its EXIF orientation tag, as a
    photo viewer shows it (fastai's `PILImage.create` ignores EXIF, so a phone photo stored sideways would train
    and predict sideways). Only fastai and PIL callables are used: the exported learner carries this step into
    `predict` and still loads with fastai alone. `create` runs again to give the upright image its fastai type."""
    from fastai.data.block import TransformBlock
    from fastai.data.transforms import IntToFloatTensor
    from PIL import ImageOps

    return TransformBlock(type_tfms=[cls.create, ImageOps.exif_transpose, cls.create], batch_tfms=IntToFloatTensor)


def batch_augmentation(image_size: int, grayscale: bool = False, augment: bool = False, strength: str = "default",
                       crop_scale: float = 0.0) -> list:
    """Training-batch transforms (applied to training batches only; on the batch, so they work on the
    preprocessing cache too): with `crop_scale`, a random resized crop back to `image_size`; with `augment`,
    fastai's `aug_transforms` (`strength` "strong": more lighting, rotation, zoom, warp, and hue and saturation
    unless `grayscale`). Never a horizontal flip: a mirrored hand is the other hand's sign."""
    from fastai.vision.augment import Hue, RandomResizedCropGPU, Saturation, aug_transforms

    tfms = []
    if crop_scale:
        crop = RandomResizedCropGPU(image_size, min_scale=crop_scale)
        crop.split_idx = 0  # training batches only (fastai's default also resamples validation/test batches)
        tfms.append(crop)
    if augment and strength == "strong":
        tfms += aug_transforms(do_flip=False, max_rotate=20.0, min_zoom=0.9, max_zoom=1.3, max_lighting=0.5,
                               max_warp=0.3, p_lighting=0.9)
        if not grayscale:
            tfms += [Hue(max_hue=0.1, p=0.75), Saturation(max_lighting=0.5, p=0.75)]
    elif augment:
        tfms += aug_transforms(do_flip=False)
    return tfms


def checked_split(ws: Workspace, bs: int):
    """`load_split`, refused in one line when a split is empty or smaller than a batch of `bs` (fastai drops the
    last partial batch: not one batch would be left)."""
    df, root, vocab = load_split(ws)
    if df["is_valid"].sum() == 0 or (~df["is_valid"]).sum() == 0:
        raise PipelineError("the split has an empty training or validation set: raise datablock.valid_pct "
                            "or add images, then rerun datablock")
    n_train = int((~df["is_valid"]).sum())
    if bs > n_train:
        raise PipelineError(f"train.batch_size {bs} is larger than the training split ({n_train} images): "
                            "lower train.batch_size")
    return df, root, vocab


def dataloaders(ws: Workspace, bs: int, image_size: int, grayscale: bool = False, batch_tfms=(), workers: int = 0,
                pin_memory: bool = False):
    """Image DataLoaders over the persisted split, `bs` a batch, resized to `image_size` (`grayscale`: one channel):
    `ColSplitter`, so every stage sees the very same split (the images kind's, `kinds.images`, which passes its
    config's values)."""
    from fastai.vision.all import CategoryBlock, ColReader, ColSplitter, DataBlock, PILImage, PILImageBW, Resize

    df, root, vocab = checked_split(ws, bs)
    block = DataBlock(
        blocks=(image_block(PILImageBW if grayscale else PILImage), CategoryBlock(vocab=vocab)),
        get_x=ColReader("path", pref=f"{root}{os.sep}"), get_y=ColReader("label"),
        splitter=ColSplitter("is_valid"), item_tfms=Resize(image_size), batch_tfms=list(batch_tfms))
    return block.dataloaders(df, bs=bs, num_workers=workers, pin_memory=pin_memory)


# Pixel formats fastai's 8-bit RGB/L conversion clips instead of scaling (a 16-bit scan comes out nearly all white).
MAX_PIXELS = 50_000_000  # an image's pixels (a phone's largest photos): a 9,400 x 9,400 one took 3 GB to decode
HIGH_DEPTH_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
# Modes PIL converts to RGB itself; anything else is test-converted (a few exotic ones cannot be).
SAFE_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "La", "CMYK", "YCbCr"}


def check_image(path: Path) -> str:
    """'' if `path` decodes to an image the training pipeline can use, else the reason, one line: empty,
    corrupt or truncated, too large for PIL's decompression-bomb guard or over MAX_PIXELS (checked before
    decoding), 16/32-bit pixels fastai would clip, an unconvertible mode, or EXIF data the upright-turning step
    cannot apply."""
    from PIL import Image, ImageOps

    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as im:
            w, h = im.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and w * h > limit:
                return f"too large: {w}x{h} pixels exceeds PIL's decompression-bomb limit of {limit:,} pixels"
            if w * h > MAX_PIXELS:
                return (f"too large: {w}x{h} pixels exceeds the limit of {MAX_PIXELS:,} pixels ({MAX_PIXELS // 10**6} "
                        f"MP): downscale it")
            if im.mode in HIGH_DEPTH_MODES:
                return (f"unsupported {im.mode} pixels (16/32-bit): fastai's 8-bit conversion would clip them; "
                        "convert the image to 8-bit")
            im.draft("RGB", (64, 64))  # JPEG: decode at reduced scale; still reads the whole stream
            im.load()
            if im.mode not in SAFE_MODES:
                im.convert("RGB")
            # what image_block's upright-turning step will do, on the EXIF as fastai's copy of the image carries it
            probe = Image.new("L", (1, 1))
            probe.info = dict(im.info)
            try:
                ImageOps.exif_transpose(probe)
            except Exception as e:  # noqa: BLE001 - PIL's EXIF parser raises SyntaxError, struct.error, ...
                return " ".join(f"bad EXIF data: {type(e).__name__}: {e}".split())
    except Image.DecompressionBombError as e:
        return f"too large: {str(e).split(',')[0]} (possible decompression bomb)"
    except Exception as e:  # PIL raises many types for bad files; each is a reason to skip, not to crash
        return " ".join(f"{type(e).__name__}: {e}".split())
    return ""


@contextlib.contextmanager
def unverified_images(verified: bool):
    """With `datablock.verify = false` (`verified` false) no image was checked, so an unreadable one fails wherever
    it is first decoded (datablock's sample batch, lr_find, train), as PIL's error, or a DataLoader worker's
    multi-line copy of it. Within the block that failure becomes one line that names the option."""
    from PIL import Image

    try:
        yield
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if verified or not _raised_decoding(e):  # e.g. a file-system failure, a damaged JSON artifact
            raise
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1] if lines else ""
        raise PipelineError(f"an image could not be decoded ({type(e).__name__}: {reason[:200]}); datablock.verify "
                            "= false skips the image checks: set it to true to list and leave out unreadable "
                            "images") from None


def _raised_decoding(e: BaseException) -> bool:
    """Whether `e` was raised while PIL decoded an image: a frame inside PIL, or a DataLoader worker's copy of such
    an error (its message quotes the worker's traceback)."""
    import PIL

    pil = Path(PIL.__file__).parent
    tb = e.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).is_relative_to(pil):
            return True
        tb = tb.tb_next
    return f"{os.sep}PIL{os.sep}" in str(e)


def shown_name(path) -> str:
    """`path` as text that can be printed and written to a UTF-8 CSV (undecodable bytes as \\xNN)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def split_unencodable(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(paths whose names are valid UTF-8, (path, reason) for the rest): the split and predictions are UTF-8
    CSVs, and a name from, say, a Latin-1 tar archive cannot be written to one (show it with `shown_name`)."""
    ok, bad = [], []
    for p in paths:
        try:
            str(p).encode("utf-8")
            ok.append(p)
        except UnicodeEncodeError:
            bad.append((p, "file name is not valid UTF-8: rename it"))
    return ok, bad


def verify_images(paths: list[Path], log=print) -> tuple[list[Path], list[tuple[str, str]]]:
    """Split `paths` into the decodable ones and (path, reason) for the rest, in parallel threads."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    # check_image reports oversized images itself; PIL's warning for them would only add noise to the log
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    from ..core.progress import Progress

    progress, reasons = Progress(log, "verified", len(paths)), []
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        for reason in pool.map(check_image, paths, chunksize=64):
            reasons.append(reason)
            progress.update(1)
    ok = [p for p, r in zip(paths, reasons) if not r]
    bad = [(str(p), r) for p, r in zip(paths, reasons) if r]
    if bad:
        log(f"{len(bad)} unreadable image(s) excluded, e.g. {bad[0][0]}: {bad[0][1]}")
    return ok, bad
