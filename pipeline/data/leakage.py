"""Near-copies across a split: for each photo of one side (the validation split, a test set), its nearest photo of
the training side by a perceptual hash, and the share that lie closer than a threshold.

A random split of one signer's video frames puts near-identical frames on both sides, so the validation figure
measures memory, not reading; a test set that holds training photos is not out-of-domain. This module says how
much of either there is, so the run log, metrics.json, the model card and the report can say it.

The measure is a 64-bit DCT perceptual hash (pHash: the photo in grey at 32×32, its 2-D DCT, the 8×8 lowest
frequencies against their median) and the Hamming distance between two hashes (0–64 bits). It needs only PIL and
numpy, costs one or two milliseconds a photo (a JPEG is decoded at 1/4 or 1/8 scale, in threads), and each photo's
hash is kept in a content store (`phash.sqlite` in the download cache), so a rerun or a crossval fold reads it back
(about 0.15 ms a photo). `NEAR` was chosen on real data (`python -m bench.leakage`, figures in docs/runs.md): within
one signer (grassknoted's frames split at random) a quarter of the validation photos lie within it of a training
photo, across Massey's signers under 1 %; a looser threshold soon counts other signers' hands on the same black
background as copies.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..core import machine
from ..core.workspace import pyplot, save_figure
from . import content_store

STORE = "phash.sqlite"
SETTINGS = {"measure": "dct-phash", "bits": 64, "size": 32, "version": 1}
NEAR = 2    # Hamming distance (of 64 bits) at or under which two photos count as near-copies
HIGH = 0.1  # the share of near-copies above which a run is warned: its figure is not one of unseen photos
COLUMNS = ["photo", "nearest_train", "distance", "near", "label", "train_label"]


def phash(path) -> "np.ndarray":
    """The 64-bit perceptual hash of the image at `path`, as 8 uint8 bytes (most significant bit first)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im.draft("L", (32, 32))  # a JPEG decodes at the smallest scale still at least 32 pixels a side
        pixels = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_dct() @ pixels @ _dct().T)[:8, :8]
    return np.packbits((low > np.median(low)).ravel())


@functools.cache
def _dct(n: int = 32):
    """The n×n DCT-II matrix (unnormalised: only the order of the coefficients matters here)."""
    import numpy as np

    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


def hashes(paths: list, folder: Path | None, log: Callable = print) -> "np.ndarray":
    """The hash of each of `paths` (N×8 uint8), from the store in `folder` where it holds them (None: no store)."""
    import numpy as np

    store = None
    if folder is not None:  # the 8 bytes themselves: a .npy header would be ten times the value, and slower to read
        store = content_store.ContentStore(Path(folder) / STORE, SETTINGS, encode=lambda h: bytes(h),
                                           decode=lambda b: np.frombuffer(b, np.uint8), log=log,
                                           check=lambda h: h.shape == (8,))

    def compute(todo):  # in threads: PIL decodes and resizes without the GIL
        with ThreadPoolExecutor(machine.usable_cpus()) as pool:
            yield from pool.map(phash, [paths[i] for i in todo])

    values, _ = content_store.cached_map([str(p) for p in paths], store, compute, log, progress="perceptual hashes",
                                         chunk=512)
    return np.stack(values) if values else np.zeros((0, 8), np.uint8)


@functools.cache
def _bits16():
    """The number of set bits of each 16-bit value (numpy before 2.0 has no `bitwise_count`)."""
    import numpy as np

    return np.unpackbits(np.arange(2**16, dtype=">u2").view(np.uint8).reshape(-1, 2), axis=1).sum(1).astype(np.uint8)


def distances(a, b) -> "np.ndarray":
    """The Hamming distance between every hash of `a` (N×8 uint8) and every hash of `b` (M×8): N×M, 0–64."""
    import numpy as np

    a64 = np.ascontiguousarray(a, dtype=np.uint8).view(">u8")[:, 0].astype(np.uint64)
    b64 = np.ascontiguousarray(b, dtype=np.uint8).view(">u8")[:, 0].astype(np.uint64)
    x = a64[:, None] ^ b64[None, :]
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.uint8)
    return _bits16()[x.view(np.uint16).reshape(*x.shape, 4)].sum(axis=-1, dtype=np.uint8)


def nearest(query, ref, chunk: int | None = None) -> tuple["np.ndarray", "np.ndarray"]:
    """(the index in `ref` of each `query` hash's nearest hash, that distance); with no `ref`, index -1 and
    distance 64. Taken `chunk` queries at a time (by default as many as keep it to about 2 million pairs, some
    50 MB), so memory stays bounded however many photos there are."""
    import numpy as np

    chunk = chunk or max(1, 2_000_000 // max(1, len(ref)))
    idx, dist = np.full(len(query), -1, dtype=np.int64), np.full(len(query), 64, dtype=np.int64)
    if len(ref):
        for s in range(0, len(query), chunk):
            d = distances(query[s:s + chunk], ref)
            idx[s:s + chunk] = d.argmin(axis=1)
            dist[s:s + chunk] = d.min(axis=1)
    return idx, dist


def _under(p, root: Path | None) -> str:
    """`p` as written in a leakage table: relative to `root` where it lies under it."""
    p = Path(p)
    return p.relative_to(root).as_posix() if root is not None and p.is_relative_to(root) else str(p)


def match(photos: list, labels: list, train_photos: list, train_labels: list, folder: Path | None,
          log: Callable = print, roots: tuple = (None, None)):
    """The leakage table: per photo of `photos` (in order), its nearest photo of `train_photos`, their distance and
    whether it is a near-copy (≤ `NEAR`), with both labels; paths relative to `roots` (photos', train's)."""
    import pandas as pd

    h = hashes(list(photos) + list(train_photos), folder, log)
    idx, dist = nearest(h[:len(photos)], h[len(photos):])
    return pd.DataFrame({"photo": [_under(p, roots[0]) for p in photos],
                         "nearest_train": [_under(train_photos[i], roots[1]) if i >= 0 else "" for i in idx],
                         "distance": dist, "near": dist <= NEAR, "label": list(labels),
                         "train_label": [train_labels[i] if i >= 0 else "" for i in idx]}, columns=COLUMNS)


def summary(table) -> dict:
    """What metrics.json and the model card say of a leakage table."""
    n = len(table)
    near = int(table["near"].sum()) if n else 0
    return {"photos": n, "near_copies": near, "share": near / n if n else 0.0, "threshold": NEAR,
            "measure": "64-bit DCT perceptual hash, Hamming distance",
            "median_distance": float(table["distance"].median()) if n else None}


def said(s: dict, what: str) -> str:
    """The run log's line about the summary `s` of `what` ("validation", "test set X")."""
    return (f"near-copies: {s['near_copies']} of {s['photos']} {what} photos ({s['share']:.1%}) have a training "
            f"photo within {s['threshold']} bits of 64 (perceptual hash; median distance {s['median_distance']})")


def warning(s: dict, what: str, fix: str) -> str | None:
    """One warning line when the share of near-copies of `what` is high (> `HIGH`), saying what it means and `fix`;
    None otherwise."""
    if s["share"] <= HIGH:
        return None
    return (f"warning: {s['share']:.0%} of the {what} photos are near-copies of training photos: its accuracy "
            f"measures how well the model remembers them, not how it reads a photo it has never seen; {fix}")


def gallery(table, path: Path, root_photos: Path, root_train: Path, title: str, n: int = 8) -> Path:
    """The `n` closest pairs of `table` (photo above, its nearest training photo below, with the distance) as
    a PNG at `path`; a figure saying so where there are none."""
    from PIL import Image

    plt = pyplot()
    pairs = table[table["nearest_train"] != ""].sort_values(["distance", "photo"]).head(n)
    if not len(pairs):
        fig, ax = plt.subplots(figsize=(4, 1))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title}: no pairs", ha="center", va="center")
        return save_figure(fig, path)
    fig, axes = plt.subplots(2, len(pairs), figsize=(1.8 * len(pairs), 4.2), squeeze=False)
    for j, r in enumerate(pairs.itertuples()):
        pair = ((root_photos / r.photo, r.label), (root_train / r.nearest_train, r.train_label))
        for i, (p, label) in enumerate(pair):
            ax = axes[i][j]
            ax.axis("off")
            try:
                with Image.open(p) as im:
                    im.thumbnail((160, 160))
                    ax.imshow(im.convert("RGB"))
            except OSError:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
            ax.set_title(f"{label}" + (f"  d={r.distance}" if i == 0 else " (train)"), fontsize=8)
    fig.suptitle(f"{title}: the closest pairs (top: photo, bottom: its nearest training photo; d = bits of 64 that "
                 f"differ, near-copy at d ≤ {NEAR})", fontsize=9)
    return save_figure(fig, path)


SPLIT_FIX = ("for a figure on photos the model has not seen, split by signer or scene (datablock.split = \"group\" "
             "with a source's group_regex), score a test set from elsewhere ([[evaluate.test_sets]]), or run "
             "`python -m pipeline crossval`")
TEST_FIX = ("it is not out-of-domain: remove those photos from the test set (leakage.csv lists them), or use a test "
            "set from another signer or source")


def check(photos: list, labels: list, train_photos: list, train_labels: list, roots: tuple[Path, Path],
          folder: Path | None, csv_path: Path, png_path: Path, what: str, fix: str, log: Callable = print):
    """The whole check of `photos` (under `roots[0]`) against the training photos `train_photos` (under `roots[1]`):
    the leakage table at `csv_path`, the gallery of its closest pairs at `png_path`, one line in `log` (and a
    warning naming `fix` when the share is high). Returns (the summary, the two files written)."""
    from ..core.workspace import write_csv
    table = match(photos, labels, train_photos, train_labels, folder, log, roots)
    s = summary(table)
    log(said(s, what))
    if line := warning(s, what, fix):
        log(line)
    return s, [write_csv(csv_path, table), gallery(table, png_path, roots[0], roots[1], what)]
