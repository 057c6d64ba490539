"""Sign-Language-MNIST CSVs -> the image-folder layout the other stages read.

Kaggle's datamunge/sign-language-mnist ships `sign_mnist_train.csv` and `sign_mnist_test.csv`: a header
`label,pixel1..pixel784` and one 28x28 grayscale image per row, label k meaning letter `LETTERS[k]`.
J (9) and Z (25) need motion, so they never occur.

`convert(src, dest)` writes
    dest/train/<LETTER>/<LETTER>_<row:05d>.png   (folder-per-class, labelled by parent folder)
    dest/test/<LETTER>_<row:05d>.png             (flat, labelled by the regex FLAT_LABEL_RE)
as lossless grayscale PNGs, so pixel values round-trip exactly.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..core.errors import PipelineError
from ..core.workspace import COMPLETE_MARKER, staged_dir, write_text

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # label k -> LETTERS[k]; 9 (J) and 25 (Z) never occur
MISSING_LABELS = (9, 25)
SIDE = 28
HEADER = ["label"] + [f"pixel{i}" for i in range(1, SIDE * SIDE + 1)]
LAYOUTS = ("folders", "flat")
FLAT_LABEL_RE = r"^([A-Z])_\d+\.png$"
CSV_NAMES = ("sign_mnist_train", "sign_mnist_test")


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64 [N], pixels uint8 [N, 28, 28]) from a Sign-MNIST `.csv` or `.csv.gz`."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"Sign-MNIST CSV not found: {path}")
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except Exception as e:  # unreadable gzip, empty file, binary junk
        raise PipelineError(f"{path}: cannot read as CSV ({type(e).__name__}: {e})") from None
    if header != HEADER:
        shown = ",".join(map(str, header[:3])) + (",..." if len(header) > 3 else "")
        raise PipelineError(
            f"{path}: not a Sign-MNIST CSV: expected header label,pixel1..pixel784 "
            f"({len(HEADER)} columns), got {shown} ({len(header)} columns)")
    try:
        frame = pd.read_csv(path, dtype=np.float64, engine="c")
    except Exception as e:
        raise PipelineError(f"{path}: cannot parse Sign-MNIST rows ({type(e).__name__}: {e})") from None
    values = frame.to_numpy()
    if len(values) == 0:
        raise PipelineError(f"{path}: Sign-MNIST CSV has a header but no rows")

    def row_of(mask: np.ndarray) -> int:  # 1-based data row (the header is line 1, so line = row + 1)
        return int(np.flatnonzero(mask.any(axis=1) if mask.ndim == 2 else mask)[0]) + 1

    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        raise PipelineError(f"{path}: row {row_of(bad)} has a missing or non-integer value")
    labels, pixels = values[:, 0], values[:, 1:]
    bad = (labels < 0) | (labels > 25)
    if bad.any():
        r = row_of(bad)
        raise PipelineError(f"{path}: row {r} has label {int(labels[r - 1])}, outside 0..25")
    bad = np.isin(labels, MISSING_LABELS)
    if bad.any():
        r = row_of(bad)
        k = int(labels[r - 1])
        raise PipelineError(
            f"{path}: row {r} has label {k} ({LETTERS[k]}), which Sign-MNIST never uses "
            f"(J and Z need motion); is this the right file?")
    bad = (pixels < 0) | (pixels > 255)
    if bad.any():
        r = row_of(bad)
        raise PipelineError(f"{path}: row {r} has a pixel value outside 0..255")
    return labels.astype(np.int64), pixels.astype(np.uint8).reshape(-1, SIDE, SIDE)


def _save_png(args: tuple[np.ndarray, str]) -> None:
    img, path = args
    Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG", compress_level=1)


def require_two_classes(labels, path: Path, classes=LETTERS) -> None:
    """A training file whose labels are all one class is one line naming it (the folder search, given one class
    folder, would take it for the image root and call its images loose)."""
    if len(kinds := np.unique(labels)) < 2:
        raise PipelineError(f"{path}: every training label is {classes[int(kinds[0])]}: one class, and a classifier "
                            "needs at least two")


def write_image_folder(labels, pixels, dest: Path, layout: str, classes=LETTERS) -> dict[str, int]:
    """Write one grayscale PNG per row under `dest`; return {class: count} (classes present only). Label k is
    class `classes[k]` (Sign-MNIST's letters by default; `idx.py` passes the label numbers as text).

    layout "folders": dest/<CLASS>/<CLASS>_<row:05d>.png; layout "flat": dest/<CLASS>_<row:05d>.png.
    The images are written into a temporary sibling folder that is renamed to `dest` at the end, so
    `dest` is either absent, the old complete folder, or the new complete folder; an existing `dest`
    is replaced.
    """
    if layout not in LAYOUTS:
        raise PipelineError(f"unknown image-folder layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    labels = np.asarray(labels)
    pixels = np.asarray(pixels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise PipelineError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if pixels.ndim != 3 or len(pixels) != len(labels):
        raise PipelineError(
            f"pixels must be [N, H, W] with N = {len(labels)} labels, got shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        raise PipelineError(f"pixels must be uint8, got {pixels.dtype}")
    bad = (labels < 0) | (labels >= len(classes))
    if bad.any():
        raise PipelineError(f"row {int(np.flatnonzero(bad)[0])} has label {int(labels[bad][0])}, "
                            f"outside 0..{len(classes) - 1}")

    dest = Path(dest)
    with staged_dir(dest) as tmp:
        present = sorted({int(k) for k in labels})
        if layout == "folders":
            for k in present:
                (tmp / classes[k]).mkdir()
            jobs = ((pixels[i], str(tmp / classes[k] / f"{classes[k]}_{i:05d}.png"))
                    for i, k in enumerate(labels.tolist()))
        else:
            jobs = ((pixels[i], str(tmp / f"{classes[k]}_{i:05d}.png")) for i, k in enumerate(labels.tolist()))
        # zlib and file writes release the GIL; a few threads help a little (~15 % on 2 cores), more hurt.
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_save_png, jobs, chunksize=256):
                pass
    counts = np.bincount(labels, minlength=len(classes))
    return {classes[k]: int(counts[k]) for k in present}


def find_csv(src_dir: Path, name: str) -> Path:
    """`<name>.csv` or `<name>.csv.gz` in `src_dir` or one or two folder levels below (shallowest first)."""
    src_dir = Path(src_dir)
    wanted = (f"{name}.csv", f"{name}.csv.gz")
    for pattern in ("", "*/", "*/*/"):
        for fname in wanted:
            hits = sorted(p for p in src_dir.glob(pattern + fname) if p.is_file())
            if hits:
                return hits[0]
    raise PipelineError(
        f"no {wanted[0]} or {wanted[1]} found in {src_dir} (searched it and two folder levels below); "
        f"download Kaggle's datamunge/sign-language-mnist and unzip it there")


def convert(src_dir: Path, dest: Path) -> Path:
    """Sign-MNIST CSVs in `src_dir` -> `dest/train` (folders layout) and `dest/test` (flat layout).

    Does nothing when `dest/.complete` exists (written last, so an interrupted run is redone). Returns `dest`.
    """
    src_dir, dest = Path(src_dir), Path(dest)
    if (dest / COMPLETE_MARKER).is_file():
        return dest
    if not src_dir.is_dir():
        raise PipelineError(f"Sign-MNIST source folder not found: {src_dir}")
    train_csv = find_csv(src_dir, CSV_NAMES[0])
    test_csv = find_csv(src_dir, CSV_NAMES[1])
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for csv_path, sub, layout in ((train_csv, "train", "folders"), (test_csv, "test", "flat")):
        labels, pixels = read_csv(csv_path)
        if sub == "train":
            require_two_classes(labels, csv_path)
        counts = write_image_folder(labels, pixels, dest / sub, layout)
        lines.append(f"{sub}\t{layout}\t{len(labels)}\t{csv_path}\t"
                     + ",".join(f"{k}={v}" for k, v in counts.items()))
    write_text(dest / COMPLETE_MARKER, "\n".join(lines) + "\n")
    return dest
