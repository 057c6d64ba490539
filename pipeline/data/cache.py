"""The preprocessing cache (`datablock.cache = true`): every image of the split decoded and resized once, by the
very item transforms fastai applies at validation time, into one uint8 `.npy` array; lr_find and train then read
their batches from it instead of decoding image files every epoch.

- Written by the datablock stage (an artifact with a fingerprint like any other: it depends on
  `train.image_size` and `train.grayscale` when the cache is on), read by lr_find and train.
- Rows follow `splits.csv`; the array is N×C×H×W uint8, exactly the batch layout fastai produces before
  `IntToFloatTensor`, so `numpy.load("cache.npy", mmap_mode="r")` shows the images as the model sees them.
- Batches are read with positioned reads (no memory map, no whole-array load): resident memory stays at a few
  batches whatever the dataset size.
- Only the training data come from the cache. The learner keeps its file-based DataLoaders for export, so the
  exported `.pkl` predicts from image files and loads with fastai alone.
- The cache's disk blocks are allocated before anything is decoded: a cache the disk cannot hold is one line with
  the space needed and free (a memory map over a sparse file would die by SIGBUS instead).
- What differs from the file-based path: a training image that is not square is centre-cropped once (fastai's
  `Resize` crops at a random position each epoch in training). Batch augmentation (`train.augment`) is
  unchanged: it runs on the batch, after the cache.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

import numpy as np

from ..core import artifacts
from ..core.errors import PipelineError
from ..core.workspace import atomic_path, read_json, write_json



def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _no_space(needed: float, free: float) -> OSError:
    return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (needs {_size(needed)}, {_size(free)} free); free "
                                 f"some, or set datablock.cache = false")


def _allocated(tmp: Path, shape: tuple):
    """A writable uint8 `.npy` memory map of `shape` at `tmp` whose disk blocks are allocated now. A map over a
    sparse file that the disk cannot hold dies by SIGBUS at the first page it cannot back; here a cache that does
    not fit is an OSError (ENOSPC) saying the space needed and the space free, before anything is decoded."""
    needed = int(np.prod(shape)) + 4096  # the data and, at most, the header
    free = shutil.disk_usage(tmp.parent).free
    if needed > free:
        raise _no_space(needed, free)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    try:
        with open(tmp, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot allocate ahead: the check above
            return out
        del out
        if e.errno == errno.ENOSPC:
            raise _no_space(needed, shutil.disk_usage(tmp.parent).free) from None
        raise
    return out


def build(ws, dls, df, root, log, image_size: int, grayscale: bool = False) -> list[Path]:
    """Write `cache.npy` + `cache.json` for every row of `df` (the split) at `image_size` (`grayscale`: one channel),
    using `dls`' validation item tfms. Images
    another run (or crossval fold) decoded with the same settings come from the content store in `run.data_dir`;
    the others are decoded and added to it."""
    import time

    from ..core.machine import usable_cpus
    from . import content_store

    n = len(df)
    c = 1 if grayscale else 3
    shape = (n, c, image_size, image_size)
    store = content_store.decoded(ws.data, {"image_size": image_size, "grayscale": grayscale, "version": 1,
                                            "item_tfms": [repr(tfm) for tfm in dls.train.after_item]}, log,
                                  shape=shape[1:])
    paths = [root / p for p in df["path"]]
    stored = store.get(paths)
    todo = [i for i, a in enumerate(stored) if a is None]
    workers = min(4, usable_cpus()) if len(todo) >= 2000 else 0  # decoding processes: only worth forking for many
    log(f"caching {n} images at {image_size}px ({'gray' if grayscale else 'RGB'}, "
        f"{np.prod(shape) / 2**20:.0f} MiB): {n - len(todo)} from the store {store.path}, {len(todo)} to decode "
        f"with {workers or 'no'} worker process(es)")
    from ..core.progress import Progress

    t0, done, progress = time.perf_counter(), 0, Progress(log, "decoded", len(todo))
    path = ws.artifact("datablock", artifacts.CACHE)
    with atomic_path(path) as tmp:
        out = _allocated(tmp, shape)
        for i, a in enumerate(stored):
            if a is not None:
                out[i] = a
        if todo:
            dl = dls.test_dl(df.iloc[todo], with_labels=False, after_batch=[], bs=256, num_workers=workers)
            for (xb,) in dl:
                k, rows = len(xb), todo[done:done + len(xb)]
                arrays = xb.cpu().numpy()
                out[rows] = arrays
                store.put([paths[r] for r in rows], list(arrays))  # a store that cannot keep them says so once
                done += k
                progress.update(k)
        out.flush()
        del out
    if done != len(todo):
        raise PipelineError(f"the cache got {done} images for {len(todo)} rows of the split: rerun datablock")
    seconds = time.perf_counter() - t0
    log(f"cache written: {path.name} ({path.stat().st_size / 2**20:.0f} MiB, {seconds:.1f}s, {n / seconds:.0f} images/s)")
    return [path, write_json(ws.artifact("datablock", artifacts.CACHE_META), {
        "file": artifacts.CACHE, "rows": n, "shape": list(shape), "dtype": "uint8", "image_size": image_size,
        "grayscale": grayscale, "order": "splits.csv rows", "seconds": round(seconds, 1),
        "from_store": n - len(todo)})]


class Reader:
    """Rows of a uint8 `.npy` by positioned reads; the file is opened on first use (fork-safe)."""

    def __init__(self, path: Path):
        self.path, self._fd, self._pid = Path(path), None, None
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran or dtype != np.uint8 or len(shape) != 4:
            raise PipelineError(f"{self.path} is not a pipeline cache (uint8 N×C×H×W): rerun datablock")
        self.shape = tuple(shape)
        self.row_bytes = int(np.prod(shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, rows) -> np.ndarray:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        out = np.empty((len(rows),) + self.shape[1:], dtype=np.uint8)
        flat = out.reshape(len(rows), -1)
        for j, r in enumerate(rows):
            got = os.preadv(self._fd, [flat[j]], self.offset + int(r) * self.row_bytes)
            if got != self.row_bytes:
                raise PipelineError(f"{self.path} is truncated (row {r}): rerun datablock")
        return out

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)


def _cached_dl_class():
    from fastai.data.load import DataLoader
    from fastai.torch_core import TensorCategory, TensorImage, TensorImageBW
    from fastcore.basics import chunked

    class CachedDL(DataLoader):
        """A fastai DataLoader whose batches are rows of the cache (ids into it) and their label indices."""

        def __init__(self, reader: Reader, rows, labels, grayscale: bool, **kwargs):
            self.reader, self.rows, self.labels = reader, np.asarray(rows), np.asarray(labels, dtype=np.int64)
            self.img_type = TensorImageBW if grayscale else TensorImage
            super().__init__(dataset=self.rows, n=len(self.rows), **kwargs)

        def create_batches(self, samps):
            import torch

            for chunk in chunked(samps, self.bs, drop_last=self.drop_last):
                chunk = np.asarray(chunk)
                x = torch.from_numpy(self.reader.read(self.rows[chunk]))
                yield self.img_type(x), TensorCategory(torch.from_numpy(self.labels[chunk]))

    return CachedDL


def available(ws, on: bool, image_size: int, grayscale: bool = False) -> bool:
    """Whether this run trains from the cache: `on` (datablock.cache) and written by datablock at `image_size` and
    `grayscale`."""
    if not on:
        return False
    try:
        meta = read_json(ws.artifact("datablock", artifacts.CACHE_META))
    except (OSError, ValueError):
        return False
    return meta.get("image_size") == image_size and meta.get("grayscale") == grayscale


def training_dataloaders(ws, dls, grayscale: bool = False):
    """DataLoaders over the cache with the same split, labels, batch size, shuffling and batch transforms (the very
    pipeline objects, so the Normalize a learner adds applies to both) as the file-based `dls`."""
    from fastai.data.core import DataLoaders

    from .loaders import load_split

    df, _, _ = load_split(ws)
    reader = Reader(ws.artifact("datablock", artifacts.CACHE))
    if len(reader) != len(df):
        raise PipelineError(f"the cache holds {len(reader)} images but the split {len(df)}: rerun datablock")
    labels = np.array([dls.vocab.o2i[label] for label in df["label"]], dtype=np.int64)
    valid = df["is_valid"].to_numpy()
    bs = dls.train.bs
    CachedDL = _cached_dl_class()
    train = CachedDL(reader, np.flatnonzero(~valid), labels[~valid], grayscale, bs=bs, shuffle=True,
                     drop_last=len(df) - valid.sum() >= bs, after_batch=dls.train.after_batch, device=dls.device)
    val = CachedDL(reader, np.flatnonzero(valid), labels[valid], grayscale, bs=dls.valid.bs,
                   after_batch=dls.valid.after_batch, device=dls.device)
    return DataLoaders(train, val, path=dls.path, device=dls.device)


@contextlib.contextmanager
def training_data(learn, ws, log, on: bool, image_size: int, grayscale: bool = False):
    """Within the block `learn` trains from the cache when it is `available`; its file-based DataLoaders (what
    `export` pickles) are put back afterwards. Yields whether it trains from the cache."""
    if not available(ws, on, image_size, grayscale):
        if on and log:
            log("note: datablock.cache is on but the cache is missing or for other settings; reading image files")
        yield False
        return
    files = learn.dls
    learn.dls = training_dataloaders(ws, files, grayscale)
    if log:
        log(f"training from the preprocessing cache ({ws.artifact('datablock', artifacts.CACHE)})")
    try:
        yield True
    finally:
        learn.dls = files
