"""Finding the hands in many photos: a pool of MediaPipe processes, through the detection store.

The detection store (`hand_points.sqlite` in `run.data_dir`) keeps each photo's detection under its bytes and the
detector's settings, so a photo costs one MediaPipe pass for every later run, fold, split and kind: the keypoint
kind's features, the hand crops and the hand-network embeddings are all derived from the detection on read.
"""
from __future__ import annotations

import os
from pathlib import Path

from ...core.errors import PipelineError
from .. import content_store
from .detect import INSTALL, Detector, detection, detection_or_none, require, settings
from .features import features_of, features_table, is_detection

STORE = "hand_points.sqlite"


def store_settings() -> dict:
    """What changes a photo's detection: the key of the detection store."""
    return {**settings(),
            "row": "found, handedness, score, 21 x y z in the padded square, 21 world x y z (metres)"}


def store(folder: Path, log=print) -> content_store.ContentStore:
    """The detection store in `folder` (`run.data_dir`)."""
    return content_store.ContentStore(Path(folder) / STORE, store_settings(), log=log, check=is_detection)


_DETECTOR: Detector | None = None


def _init_worker():
    """In each pool process: MediaPipe's C++ layers print a few lines of start-up chatter to the stderr file
    descriptor, which the pool's processes send to /dev/null (errors still reach the caller as exceptions); then
    build the detector."""
    global _DETECTOR
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _DETECTOR = Detector()


def _in_pool(fn, path: str):
    """`fn(path, detector)` with this pool process's detector."""
    return fn(path, _DETECTOR)


def find(paths: list[str], log, what: str = "images", workers: int | None = None, skip_unreadable: bool = False):
    """The detection of each path, in order (None for an unreadable image with `skip_unreadable`, else its one-line
    error), from a pool of spawned MediaPipe processes (`workers`, default the cores this process may use, at most
    one per 50 images; for fewer than 50 paths, or `workers` 1, from one detector in this process)."""
    import functools
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from ...core import distributed
    from ...core.machine import usable_cpus

    if not paths:
        return
    fn = detection_or_none if skip_unreadable else detection
    workers = max(1, min(workers or usable_cpus() // distributed.world_size(), len(paths) // 50 + 1))
    log(f"finding hands in {len(paths)} {what} with MediaPipe "
        + (f"({workers} processes)" if workers > 1 else "(in this process)"))
    if workers == 1:  # a few images: no pool to start, so a plain script needs no `if __name__ == "__main__":`
        detector = Detector()
        try:
            for path in paths:
                yield fn(path, detector)
        finally:
            detector.close()
        return
    # spawn, not fork: a process forked after torch has run its thread pools can crash in MediaPipe's native code
    # (seen here: evaluate right after train). Like any spawning library, it needs a calling script to guard its
    # entry point with `if __name__ == "__main__":`.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
    done = 0
    try:
        for done, found in enumerate(pool.map(functools.partial(_in_pool, fn), paths, chunksize=16), 1):
            yield found
    except BrokenProcessPool:
        raise PipelineError(f"a hand-finding process died (after {done} of {len(paths)} {what}): a script calling "
                            f"this needs an `if __name__ == \"__main__\":` guard; otherwise check the MediaPipe "
                            f"install: {INSTALL}") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def detections(paths: list, store: content_store.ContentStore | None, log=print, what: str = "images",
               workers: int | None = None, skip_unreadable: bool = False) -> tuple[list, int]:
    """(the detection of each path, in order; how many MediaPipe looked at): from `store` (a `store`; None: found
    in this process's pool alone) where it holds them, the others `find`-ed and kept in it as they come (an
    interrupted run keeps what it found). With `skip_unreadable`, an image that cannot be read is None (`warm`:
    a distributed rank looks at images before datablock's verification) instead of a one-line error."""
    require()
    paths = [str(p) for p in paths]
    found, looked = content_store.cached_map(
        paths, store, lambda todo: find([paths[i] for i in todo], log, what, workers, skip_unreadable), log,
        f"finding hands in {what}")
    if store is not None and looked < len(paths):
        log(f"{len(paths) - looked} of {len(paths)} {what} already in the detection store {store.path}")
    return found, looked


def extract(paths: list, log=print, workers: int | None = None, what: str = "images", store=None):
    """A DataFrame (COLUMNS + FEATURES) with one `features_row` per path, in order, of its `detections` (through
    `store` when given); `df.attrs["extracted"]` counts the images MediaPipe looked at."""
    found, looked = detections(paths, store, log, what, workers)
    df = features_table(paths, found).drop(columns="path")
    df.attrs["extracted"] = looked
    log(f"hand found in {int(df['hand_found'].sum())} of {len(df)} {what} ({df['hand_found'].mean():.1%})")
    return df


def warm(paths: list, store: content_store.ContentStore, log=print) -> tuple[list[tuple[str, list]], int]:
    """The detections of `paths` into `store` (those it lacks; an unreadable image is skipped): ([(path, detection)]
    of the readable ones, how many MediaPipe looked at). One process's share of datablock's work in a distributed
    launch."""
    paths = [str(p) for p in paths]
    found, looked = detections(paths, store, log, skip_unreadable=True)
    return [(p, d) for p, d in zip(paths, found) if d is not None], looked


def photo_features(paths: list, log=print, store=None):
    """(float32 FEATURES rows (n, 64), hand found per photo) for image files: what every keypoint model's engine
    classifies (through `store` when given; a photo with no hand gives the all-0 row)."""
    found, _ = detections(paths, store, log)
    return features_of(found), [bool(d[0]) for d in found]
