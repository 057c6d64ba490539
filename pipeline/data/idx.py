"""IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST) -> the image-folder layout the other stages read.

The format (LeCun's MNIST page): a big-endian header of two zero bytes, a type byte (0x08: unsigned bytes) and the
number of dimensions, then one uint32 per dimension, then the data. An images file starts 0x00000803 (count, rows,
columns), a labels file 0x00000801 (count). Files may be gzipped (recognised by their first bytes, not their name).

`convert(src, dest)` finds a training and a test pair (images + labels) in `src` and writes, once,
    dest/train/<label>/<label>_<i:05d>.png   (folder per class; the label is the number, 0..9 for MNIST)
    dest/test/<label>_<i:05d>.png            (flat, labelled by the regex FLAT_LABEL_RE)
as lossless grayscale PNGs, so pixel values round-trip exactly (`sign_mnist.write_image_folder`).
"""
from __future__ import annotations

import gzip
import math
import re
import zlib
from pathlib import Path

import numpy as np

from ..core.errors import PipelineError
from ..core.workspace import COMPLETE_MARKER, write_text
from .sign_mnist import require_two_classes, write_image_folder

# what LeCun's page (and the Fashion-MNIST and KMNIST pages) publish: a folder URL gives these four files
PUBLISHED_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                   "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
FLAT_LABEL_RE = r"^(\d+)_\d+\.png$"
DIMS = {"images": 3, "labels": 1}  # what each kind of file holds: [N, rows, cols] or [N]
# train-images-idx3-ubyte[.gz], t10k-labels.idx1-ubyte (a common rename), emnist-digits-test-images-idx3-ubyte.gz
_NAME_RE = re.compile(r"(?:^|[-_])(train|t10k|test)-(images|labels)[.-]idx([13])-ubyte(\.gz)?$")


def _bytes(path: Path) -> bytes:
    """The content of `path`, gunzipped when it is gzip."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise PipelineError(f"cannot read IDX file {path}: {e.strerror or e}") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise PipelineError(f"{path}: truncated gzip file (download it again)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise PipelineError(f"{path}: cannot gunzip ({e})") from None


def read_idx(path: Path, kind: str) -> np.ndarray:
    """The uint8 array of IDX file `path` (raw or gzipped): [N, rows, cols] for kind "images", [N] for "labels".
    A wrong magic number, a short (truncated) file, bytes beyond the data its header promises and images of no
    pixels are errors."""
    path, ndim = Path(path), DIMS[kind]
    data = _bytes(path)
    want = 0x800 + ndim
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        got = f"0x{int.from_bytes(data[:4], 'big'):08x}" if len(data) >= 4 else f"only {len(data)} bytes"
        raise PipelineError(f"{path}: not an IDX {kind} file: magic number {got}, expected 0x{want:08x}")
    head = 4 + 4 * ndim
    if len(data) < head:
        raise PipelineError(f"{path}: truncated: {len(data)} bytes, shorter than its {head}-byte header")
    dims = tuple(int.from_bytes(data[i:i + 4], "big") for i in range(4, head, 4))
    size = math.prod(dims)  # Python's int: numpy's int64 product wraps (65536 x 2**24 x 2**24 is 0 to it)
    shape = " x ".join(map(str, dims))
    if len(data) - head < size:
        raise PipelineError(f"{path}: truncated: its header promises {shape} = {size} bytes of {kind}, "
                            f"the file holds {len(data) - head}")
    if len(data) - head > size:
        raise PipelineError(f"{path}: {len(data) - head - size} bytes after the {shape} {kind} its header "
                            f"promises: not one IDX file")
    if kind == "images" and 0 in dims[1:]:
        raise PipelineError(f"{path}: its images are {dims[1]} x {dims[2]} pixels: no image to read")
    return np.frombuffer(data, np.uint8, size, head).reshape(dims)


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64 [N], images uint8 [N, rows, cols]) from an images and a labels IDX file of the same N."""
    images, labels = read_idx(images_path, "images"), read_idx(labels_path, "labels")
    if len(images) != len(labels):
        raise PipelineError(f"{labels_path} holds {len(labels)} labels but {images_path} holds {len(images)} "
                            f"images: not the same set")
    if not len(labels):
        raise PipelineError(f"{images_path} holds no images")
    return labels.astype(np.int64), images


def find_files(src_dir: Path) -> dict[tuple[str, str], Path]:
    """{("train" | "test", "images" | "labels"): path} of the IDX files in `src_dir` or one or two folder levels
    below (shallowest first; an uncompressed file before its .gz copy). Two different sets are an error."""
    src_dir, found = Path(src_dir), {}
    for split in ("train", "test"):
        for kind in ("images", "labels"):
            for pattern in ("*", "*/*", "*/*/*"):
                hits = {}
                for p in sorted(src_dir.glob(pattern)):
                    m = _NAME_RE.search(p.name)
                    if (m and p.is_file() and ("train" if m[1] == "train" else "test") == split
                            and m[2] == kind and int(m[3]) == DIMS[kind]):
                        hits.setdefault(p.with_name(p.name.removesuffix(".gz")), []).append(p)
                if len(hits) > 1:
                    names = ", ".join(str(p.relative_to(src_dir)) for ps in hits.values() for p in ps)
                    raise PipelineError(f"several {split} {kind} IDX files in {src_dir}: {names}; point the source "
                                        "at a folder that holds one set")
                if hits:
                    found[split, kind] = min(next(iter(hits.values())), key=lambda p: p.suffix == ".gz")
                    break
    missing = [f"{split} {kind}" for split in ("train", "test") for kind in ("images", "labels")
               if (split, kind) not in found]
    if missing:
        raise PipelineError(f"no {' or '.join(missing)} IDX file found in {src_dir} (searched it and two folder "
                            f"levels below for names like {', '.join(PUBLISHED_FILES)})")
    return found


def convert(src_dir: Path, dest: Path) -> Path:
    """The IDX files in `src_dir` -> `dest/train` (class folders) and `dest/test` (flat). Does nothing when
    `dest/.complete` exists (written last, so an interrupted run is redone). Returns `dest`."""
    src_dir, dest = Path(src_dir), Path(dest)
    if (dest / COMPLETE_MARKER).is_file():
        return dest
    if not src_dir.is_dir():
        raise PipelineError(f"IDX source folder not found: {src_dir}")
    files = find_files(src_dir)
    pairs = {split: read_pair(files[split, "images"], files[split, "labels"]) for split in ("train", "test")}
    classes = [str(k) for k in range(1 + max(int(labels.max()) for labels, _ in pairs.values()))]
    require_two_classes(pairs["train"][0], files["train", "labels"], classes)
    lines = []
    for split, layout in (("train", "folders"), ("test", "flat")):
        labels, images = pairs[split]
        counts = write_image_folder(labels, images, dest / split, layout, classes)
        lines.append(f"{split}\t{layout}\t{len(labels)}\t{files[split, 'images']}\t"
                     + ",".join(f"{k}={v}" for k, v in counts.items()))
    write_text(dest / COMPLETE_MARKER, "\n".join(lines) + "\n")
    return dest
