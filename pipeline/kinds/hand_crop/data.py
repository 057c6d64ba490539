"""Hand crops as model input (`datablock.input = "hand_crop"`): MediaPipe's keypoints give the box, and the model
sees a padded square around the hand, upright (EXIF applied), resized to `train.image_size`, instead of the whole
photo with its room; inside the square, what is off the hand (its bones and palm drawn thick) is black too.

Two content stores (`content_store.ContentStore`, in `run.data_dir`) make each photo cost one MediaPipe pass and
one crop for every later run, fold and split: the detection store (`hands.store`) keeps where the hand is, and
`hand_crops.sqlite` keeps the crop as PNG bytes under the image's bytes plus the crop settings (the size, the
padding, the detector's settings). A keypoint model on the same photos finds every hand already there. A photo with no hand found has no crop: the
datablock stage lists it (no_hand.csv) and leaves it out of the split; at prediction time it is shown to the model
as the whole frame, and said so.

No torch here: the datablock stage and the stores use it; `model.py` holds what the export pickles.
"""
from __future__ import annotations

from pathlib import Path

from ...core.errors import PipelineError
from ...data import content_store, hands
from ..shared.data import keypoint_pixels, plot_crops, png

CROPS = "hand_crops.sqlite"
PAD = 0.2          # each side of the keypoints' bounding square grows by this fraction of its side
MIN_SIDE = 0.1     # a crop is at least this fraction of the photo's shorter side (a hand seen edge-on is thin)
MASK_WIDTH = 0.12  # the hand's mask: its bones drawn this fraction of the hand's size wide each side, and the palm
                   # filled; outside it the crop is black (the room, the sleeve, another person), as Massey's
                   # segmented hands are (a frozen ImageNet embedding of masked crops: 71 % crossval, 64 % unmasked)


def crop_settings(size: int) -> dict:
    """What changes a crop: the key of the crop store."""
    return {"size": size, "pad": PAD, "min_side": MIN_SIDE, "mask": MASK_WIDTH, "points": hands.store_settings(),
            "format": "png rgb"}


def is_crop(data: bytes, size: int) -> bool:
    """Whether `data` is what `png` makes of a `size`-pixel crop, by its header: an 8-bit RGB PNG, size x size."""
    return (data[:16] == b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" and data[16:24] == size.to_bytes(4, "big") * 2
            and data[24:26] == b"\x08\x02")


def crop_store(folder: Path, size: int) -> content_store.ContentStore:
    return content_store.ContentStore(Path(folder) / CROPS, crop_settings(size), encode=bytes, decode=bytes,
                                      check=lambda data: is_crop(data, size))


def warm(paths: list, size: int, folder: Path, log=print) -> int:
    """The detections of `paths` into the detection store in `folder`, then the crops of the photos with a hand into
    the crop store (an unreadable image is skipped): one process's share of datablock's work in a distributed
    launch. Returns how many MediaPipe looked at."""
    found, looked = hands.warm(paths, hands.store(folder, log), log)
    crops([p for p, _ in found], [d for _, d in found], size, folder, log)
    return looked


def box(det: list, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) in the photo's pixels of the padded square around the hand of a found `det`."""
    xs, ys = keypoint_pixels(det, width, height)
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    half = max(max(xs) - min(xs), max(ys) - min(ys), MIN_SIDE * min(width, height)) * (1 + 2 * PAD) / 2
    return cx - half, cy - half, cx + half, cy + half


def crop(path, det: list | None, size: int):
    """The `size`-pixel square RGB PIL image the model sees of the photo at `path` (`crop_image`)."""
    from PIL import Image

    return crop_image(Image.fromarray(hands.load_rgb(path)), det, size)


def mask(det: list, width: int, height: int):
    """The hand of a found `det` as a mode "L" PIL mask of the photo (255 on the hand): each bone a thick line
    (MASK_WIDTH of the hand's size each side), each keypoint a disc, the palm's polygon filled, grown by 2 px."""
    from PIL import Image, ImageDraw, ImageFilter

    xs, ys = keypoint_pixels(det, width, height)
    r = max(2.0, MASK_WIDTH * max(max(xs) - min(xs), max(ys) - min(ys)))
    out = Image.new("L", (width, height), 0)
    pen = ImageDraw.Draw(out)
    pen.polygon([(xs[i], ys[i]) for i in (0, 1, 2, 5, 9, 13, 17)], fill=255)
    for a, b in hands.BONES:
        pen.line([(xs[a], ys[a]), (xs[b], ys[b])], fill=255, width=round(2 * r))
    for x, y in zip(xs, ys):
        pen.ellipse([x - r, y - r, x + r, y + r], fill=255)
    return out.filter(ImageFilter.MaxFilter(5))


def crop_image(img, det: list | None, size: int):
    """The `size`-pixel square RGB PIL image the model sees of the upright RGB PIL image `img`: around the hand of
    `det`, black outside the hand's `mask` (and outside the photo), or with no hand (`det` None or not found) the
    whole photo, centred on a black square."""
    from PIL import Image

    w, h = img.size
    if det is not None and det[0]:
        img = Image.composite(img, Image.new("RGB", (w, h)), mask(det, w, h))
        l, t, r, b = box(det, w, h)
    else:
        s = max(w, h)
        l, t = (w - s) / 2, (h - s) / 2
        r, b = l + s, t + s
    return img.crop(tuple(round(v) for v in (l, t, r, b))).resize((size, size), Image.BILINEAR)


def crops(paths: list, dets: list, size: int, folder: Path, log=print, what: str = "images") -> tuple[list, int]:
    """(PNG bytes of each path's crop, None where no hand was found; how many were cropped now rather than found
    in the crop store in `folder`)."""
    paths = [str(p) for p in paths]
    have = [i for i, det in enumerate(dets) if det[0]]

    def compute(todo):
        log(f"cropping {len(todo)} {what} to {size}px ({len(have) - len(todo)} already in the crop store {store.path})")
        for j in todo:
            i = have[j]
            try:
                yield png(crop(paths[i], dets[i], size))
            except (OSError, ValueError) as e:
                raise PipelineError(f"{paths[i]}: cannot read the image ({type(e).__name__}: {e})") from None

    store = crop_store(folder, size)
    got, made = content_store.cached_map([paths[i] for i in have], store, compute, log, "cropped")
    if have and not made:
        log(f"all {len(have)} crops of {what} with a hand found in the crop store {store.path}")
    out = [None] * len(paths)
    for i, c in zip(have, got):
        out[i] = c
    return out, made


def client_settings(size: int) -> dict:
    """The model card's `hand_crop`: how a client makes the crop this model reads from a photo."""
    return {"size": size, "pad": PAD, "min_side": MIN_SIDE, "detector": "MediaPipe Hands (pipeline.data.hands.Detector)",
            "mask": MASK_WIDTH,
            "how": "the keypoints' bounding square, each side grown by pad of its side (at least min_side of the "
                   "photo's shorter side), cut from the upright photo (black outside it) with everything off the "
                   "hand black (the bones drawn mask x the hand's size wide each side, the palm filled: "
                   "pipeline.kinds.hand_crop.data.mask), resized bilinear to size x size: pipeline.kinds.hand_crop.data.crop"}


def keep_hands(df, holdout, root: Path, ws, log):
    """(the images of `df` where MediaPipe found a hand; vocab.json's `n_no_hand`): no_hand.csv lists the others,
    which a crop model is not trained on (a whole frame is not a crop). The held-out images are looked at too, so
    evaluate finds them in the stores. `HandCrop.keep`."""
    import pandas as pd

    from ...core import artifacts
    from ...core.workspace import write_csv

    paths = [root / p for p in pd.concat([df["path"], holdout["path"]])]
    dets, _ = hands.detections(paths, hands.store(ws.data, log), log)
    found = pd.Series([bool(d[0]) for d in dets[:len(df)]])
    if not found.all():
        log(f"no hand found in {int((~found).sum())} of {len(df)} images: listed in {artifacts.NO_HAND}, not trained "
            f"on; per class: " + ", ".join(f"{k} {v}" for k, v in df.loc[~found, "label"].value_counts().head(8).items()))
    write_csv(ws.artifact("datablock", artifacts.NO_HAND), df[~found])
    return df[found].reset_index(drop=True), {"n_no_hand": int((~found).sum())}


def prepare(df, root: Path, size: int, ws, log) -> list[Path]:
    """The `size`-pixel crop of every image of the split in the crop store, landmarks.csv (the keypoints of the same
    detection, for a model that fuses them), no_hand.csv (`keep_hands` wrote it) and batch.png: training crops with
    their labels. `HandCrop.prepare`."""
    from ...core import artifacts
    from ...core.workspace import write_csv

    paths = [root / p for p in df["path"]]
    dets, _ = hands.detections(paths, hands.store(ws.data, log), log)
    pngs, _ = crops(paths, dets, size, ws.data, log)
    feats = hands.features_table(df["path"], dets)
    train = df[~df["is_valid"]].sample(n=min(16, int((~df["is_valid"]).sum())), random_state=0)
    return [write_csv(ws.artifact("datablock", artifacts.LANDMARKS), feats), ws.artifact("datablock", artifacts.NO_HAND),
            plot_crops([pngs[i] for i in train.index], list(train["label"]),
                       ws.artifact("datablock", artifacts.BATCH_PNG), f"training images: hand crops, {size}px")]


def split_crops(ws, bs: int, image_size: int):
    """(split DataFrame with `file` = absolute path, its crops' PNG bytes by file, vocab): `image_size` crops from
    the store the datablock stage filled, the split checked for batches of `bs`."""
    from ...data import loaders

    df, root, vocab = loaders.checked_split(ws, bs)
    df = df.assign(file=[str(root / p) for p in df["path"]])
    dets, _ = hands.detections(df["file"], hands.store(ws.data), log=lambda m: None)
    pngs, made = crops(df["file"], dets, image_size, ws.data, log=lambda m: None)
    if any(p is None for p in pngs):
        raise PipelineError("the split holds images with no hand found: rerun datablock")
    return df, dict(zip(df["file"], pngs)), vocab


def photo_crops(paths: list, size: int, folder: Path | None, log=print) -> tuple[list[bytes], list[bool], list]:
    """(PNG crop of each photo, whether a hand was found, the `hands.detection` detections), through the stores in
    `folder` when given; a photo with no hand is the whole frame."""
    paths = [str(p) for p in paths]
    dets, _ = hands.detections(paths, hands.store(folder, log) if folder is not None else None, log)
    if folder is not None:
        pngs, _ = crops(paths, dets, size, folder, log)
    else:
        pngs = [png(crop(p, d, size)) if d[0] else None for p, d in zip(paths, dets)]
    found = [bool(d[0]) for d in dets]
    pngs = [c if c is not None else png(crop(p, None, size)) for p, c in zip(paths, pngs)]
    return pngs, found, dets


