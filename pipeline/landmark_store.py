"""The keypoint store: hand keypoints found in an image, kept for every later run, crossval fold and stage.

MediaPipe takes about 30 ms an image on a CPU core, and a crossval over seven signers would otherwise look at each
photo seven times. Rows are keyed by the sha256 of the image's bytes and of `hands.extraction_settings()`, so a
copy of a photo elsewhere is found too, and a change of detector settings or MediaPipe release finds hands anew.
One SQLite file in the download cache (`run.data_dir`), safe for several processes at once.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from .errors import PipelineError
from .workspace import sha256_file, sha256_text

FILE = "landmarks.sqlite"


class LandmarkStore:
    """get/put keypoint rows (`hands.COLUMNS + hands.FEATURES`) by image path, stored by image content."""

    def __init__(self, folder: Path):
        from . import hands

        self.path = Path(folder) / FILE
        self.settings = sha256_text(json.dumps(hands.extraction_settings(), sort_keys=True))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._db() as db:
                db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, row TEXT NOT NULL)")
        except sqlite3.Error as e:
            raise PipelineError(f"cannot use the keypoint store {self.path}: {e} (delete it to start afresh)") from None

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
        return sha256_text(self.settings + sha256_file(path))

    def get(self, paths: list[str]) -> list[list | None]:
        """The stored row of each path, or None where there is none (an unreadable file: None, for the caller's
        extraction to report)."""
        keys = []
        for p in paths:
            try:
                keys.append(self._key(p))
            except OSError:
                keys.append(None)
        found = {}
        with self._db() as db:
            wanted = [k for k in keys if k]
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                found.update(db.execute(f"SELECT key, row FROM rows WHERE key IN ({','.join('?' * len(chunk))})",
                                        chunk).fetchall())
        return [json.loads(found[k]) if k in found else None for k in keys]

    def put(self, paths: list[str], rows: list[list]) -> str:
        """Keep `rows` (one per path): '' when stored, else why not (a failure to store costs only the reuse)."""
        try:
            with self._db() as db:
                db.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?)",
                               [(self._key(p), json.dumps(r)) for p, r in zip(paths, rows)])
        except (sqlite3.Error, OSError) as e:
            return f"cannot write the keypoint store {self.path}: {e}"
        return ""

    def __len__(self) -> int:
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
