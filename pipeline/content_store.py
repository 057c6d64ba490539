"""The content store: what was computed from an image (its hand keypoints, its decoded pixels), kept for every later
run, crossval fold and stage.

MediaPipe takes about 30 ms an image on a CPU core, and a crossval over seven signers would otherwise look at each
photo seven times; decoding and resizing for the preprocessing cache is the same story. Values are keyed by the
sha256 of the image's bytes and of the settings that made them, so a copy of a photo elsewhere is found too, and a
change of settings (detector thresholds, MediaPipe release, image size) computes anew. One SQLite file per kind of
value in the download cache folder (`run.data_dir`), safe for several processes at once.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Callable

from .errors import PipelineError
from .workspace import sha256_file, sha256_text

LANDMARKS = "landmarks.sqlite"
DECODED = "decoded.sqlite"


class ContentStore:
    """get/put one value per image path, stored under the image's content and `settings`; `encode`/`decode` turn a
    value into what SQLite keeps (text or bytes) and back."""

    def __init__(self, path: Path, settings: dict, encode: Callable = json.dumps, decode: Callable = json.loads):
        self.path, self.encode, self.decode = Path(path), encode, decode
        self.settings = sha256_text(json.dumps(settings, sort_keys=True, default=str))
        self._keys: dict[str, str] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, row BLOB NOT NULL)")
        except (sqlite3.Error, OSError) as e:
            raise PipelineError(f"cannot use the store {self.path}: {e} (delete it to start afresh)") from None

    @contextlib.contextmanager
    def _db(self):
        """A connection that commits on success and is always closed."""
        db = sqlite3.connect(self.path, timeout=120)
        try:
            with db:
                yield db
        finally:
            db.close()

    def _key(self, path: str) -> str:
        if path not in self._keys:
            self._keys[path] = sha256_text(self.settings + sha256_file(path))
        return self._keys[path]

    def get(self, paths: list) -> list:
        """The stored value of each path, or None where there is none (or the file cannot be read: the caller's
        own reading then reports it)."""
        keys = []
        for p in map(str, paths):
            try:
                keys.append(self._key(p))
            except OSError:
                keys.append(None)
        found, wanted = {}, [k for k in keys if k]
        with self._db() as db:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                found.update(db.execute(f"SELECT key, row FROM rows WHERE key IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall())
        return [self.decode(found[k]) if k in found else None for k in keys]

    def put(self, paths: list, values: list) -> str:
        """Keep `values` (one per path): '' when stored, else why not (a failure to store costs only the reuse)."""
        try:
            with self._db() as db:
                db.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?)",
                               [(self._key(str(p)), self.encode(v)) for p, v in zip(paths, values)])
        except (sqlite3.Error, OSError) as e:
            return f"cannot write the store {self.path}: {e}"
        return ""


def landmarks(folder: Path) -> ContentStore:
    """The store of hand keypoint rows (`hands.COLUMNS + hands.FEATURES`) in `folder`."""
    from . import hands

    return ContentStore(Path(folder) / LANDMARKS, hands.extraction_settings())


def decoded(folder: Path, settings: dict) -> ContentStore:
    """The store of decoded, resized uint8 image arrays (C×H×W) made with `settings`, in `folder`."""
    import io

    import numpy as np

    def encode(a):
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        return buf.getvalue()

    return ContentStore(Path(folder) / DECODED, settings, encode=encode,
                        decode=lambda b: np.load(io.BytesIO(b), allow_pickle=False))
