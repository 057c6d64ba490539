"""The persisted split → fastai DataLoaders, identically for every stage that reads it."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import PipelineError
from .sources import list_images  # noqa: F401  (re-exported: the stages' one way to list images)
from .workspace import Workspace, read_json

SPLITS = "splits.csv"
VOCAB = "vocab.json"


def load_split(ws: Workspace):
    """(DataFrame path,label,is_valid; image root; vocab) as written by the datablock stage."""
    import pandas as pd

    meta = read_json(ws.artifact("datablock", VOCAB))
    df = pd.read_csv(ws.artifact("datablock", SPLITS), dtype={"path": str, "label": str, "is_valid": bool},
                     keep_default_na=False)
    return df, Path(meta["root"]), list(meta["vocab"])


def dataloaders(ws: Workspace, cfg, batch_size: int | None = None):
    """DataLoaders over the persisted split: `ColSplitter`, so every stage sees the very same split."""
    from fastai.vision.all import (CategoryBlock, ColReader, ColSplitter, DataBlock, ImageBlock, PILImage,
                                   PILImageBW, Resize, aug_transforms)

    df, root, vocab = load_split(ws)
    t = cfg.train
    if df["is_valid"].sum() == 0 or (~df["is_valid"]).sum() == 0:
        raise PipelineError("the split has an empty training or validation set: raise datablock.valid_pct "
                            "or add images, then rerun datablock")
    block = DataBlock(
        blocks=(ImageBlock(cls=PILImageBW if t.grayscale else PILImage), CategoryBlock(vocab=vocab)),
        get_x=ColReader("path", pref=f"{root}{os.sep}"), get_y=ColReader("label"),
        splitter=ColSplitter("is_valid"), item_tfms=Resize(t.image_size),
        batch_tfms=aug_transforms(do_flip=False) if t.augment else None)
    return block.dataloaders(df, bs=batch_size or t.batch_size, num_workers=t.num_workers)


def check_image(path: Path) -> str:
    """'' if `path` decodes as an image, else the reason (corrupt, truncated, empty, too large, …)."""
    from PIL import Image

    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG: decode at reduced scale; still reads the whole stream
            im.load()
    except Image.DecompressionBombError as e:
        return f"too large: {e}".split(" could be")[0]
    except Exception as e:  # PIL raises many types for bad files; each is a reason to skip, not to crash
        return f"{type(e).__name__}: {e}"
    return ""


def verify_images(paths: list[Path], log=print) -> tuple[list[Path], list[tuple[str, str]]]:
    """Split `paths` into the decodable ones and (path, reason) for the rest, in parallel threads."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        reasons = list(pool.map(check_image, paths, chunksize=64))
    ok = [p for p, r in zip(paths, reasons) if not r]
    bad = [(str(p), r) for p, r in zip(paths, reasons) if r]
    if bad:
        log(f"{len(bad)} unreadable image(s) excluded, e.g. {bad[0][0]}: {bad[0][1]}")
    return ok, bad
