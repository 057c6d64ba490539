"""The content store: what was computed from an image (its hand keypoints, its decoded pixels), kept for every later
run, crossval fold and stage.

MediaPipe takes about 30 ms an image on a CPU core, and a crossval over seven signers would otherwise look at each
photo seven times; decoding and resizing for the preprocessing cache is the same story. Values are keyed by the
sha256 of the image's bytes and of the settings that made them, so a copy of a photo elsewhere is found too, and a
change of settings (detector thresholds, MediaPipe release, image size) computes anew. One SQLite file per kind of
value in the download cache folder (`run.data_dir`).

It is a cache of what can be recomputed, so it heals instead of stopping a run, and says so in one line, once:
- a damaged file (SQLite finds it "malformed" or "not a database", on open or on any later use; its table lacks a
  column) is moved aside as `NAME.corrupt-<time>`, an empty store in its place: what is asked for is computed again;
- each value is kept with the sha256 of its key and its bytes, checked on read: a value that does not match (its
  bytes changed, or it was moved to another key) is a miss (computed again and stored anew), counted in `damaged`;
  one whose checksum covers its bytes alone (a store of an earlier version) is computed again once, in `outdated`;
- each value is checked on read to be what the store holds (`check`: its shape, type): if not, a miss, `misshapen`;
- a store that cannot be written (a read-only or full disk) is named; the run goes on without keeping more;
- several processes may fill one store at once: SQLite's own locking (writes in `BEGIN IMMEDIATE`, a busy
  timeout) keeps it consistent, and a shared `flock` on `NAME.lock` while it is used (exclusive to move it aside)
  keeps one process from moving a store away under another. Not WAL: a WAL store cannot be read from a read-only
  folder, nor on a network file system.

It is over 300 lines because the typed stores at its end (keypoint rows, numpy arrays) share the healing above.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

from ..core.workspace import sha256_file, sha256_text

DECODED = "decoded.sqlite"
_DAMAGE_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes: extended ones keep them in the low byte)


def _is_damage(e: sqlite3.Error) -> bool:
    """Whether `e` says the file itself is damaged (not locked, read-only or full)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES
    return "malformed" in str(e) or "not a database" in str(e)


def _value_digest(data) -> str:  # the checksum of earlier versions: the value's bytes alone
    return hashlib.sha256(bytes(data)).hexdigest()


def _text(column):
    """A key's or a checksum's column as text, or None where the file's bytes there do not decode (a damaged page
    SQLite itself does not notice): such a row is a miss, counted as damaged."""
    try:
        return column.decode() if isinstance(column, bytes) else column if isinstance(column, str) else None
    except UnicodeDecodeError:
        return None


def _digest(key, data) -> str:
    """A value's checksum: its key and its bytes, so a value moved to another key does not match."""
    key = key.encode() if isinstance(key, str) else bytes(key)
    return hashlib.sha256(key + b"\0" + bytes(data)).hexdigest()


def _inode(path: Path):
    with contextlib.suppress(OSError):
        st = os.stat(path)
        return st.st_dev, st.st_ino
    return None


class ContentStore:
    """get/put one value per image path, stored under the image's content and `settings`; `encode`/`decode` turn a
    value into what SQLite keeps (text or bytes) and back; `check(value)` says whether a decoded value is one the
    store holds (its shape and type); `log` gets the store's warnings (each kind once)."""

    def __init__(self, path: Path, settings: dict, encode: Callable = json.dumps, decode: Callable = json.loads,
                 log: Callable = print, check: Callable = lambda value: True):
        self.path, self.encode, self.decode, self.check, self.log = Path(path), encode, decode, check, log
        self.settings = sha256_text(json.dumps(settings, sort_keys=True, default=str))
        self._keys: dict[str, str] = {}
        self._said: set[str] = set()
        self.usable, self.writable = True, True  # False once the store cannot be read / written (said once)
        self.damaged = 0    # values whose checksum did not match: computed again
        self.misshapen = 0  # values that did not decode, or failed `check`: computed again
        self.outdated = 0   # values with an earlier version's checksum (their bytes alone): computed again, once
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._cannot("write", e)
            self.usable = False
            return
        if not self._use(self._create, "write"):
            self.usable = False  # no table to read either

    # ------------------------------------------------------------------------------------------- the file

    @staticmethod
    def _create(db) -> bool:
        db.execute("CREATE TABLE IF NOT EXISTS vals (key TEXT PRIMARY KEY, value BLOB NOT NULL, sha256 TEXT NOT NULL)")
        columns = [row[1].decode() for row in db.execute("PRAGMA table_info(vals)")]
        if columns != ["key", "value", "sha256"]:  # a table this version cannot read: damaged, as `_is_damage` sees it
            raise sqlite3.DatabaseError(f"malformed store: its table vals has the columns {', '.join(columns)}")
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rows'").fetchone():
            # the table of earlier versions, without checksums: its values are kept, each with one from now on
            db.create_function("sha256", 2, _digest, deterministic=True)
            try:
                with db:
                    db.execute("INSERT OR IGNORE INTO vals SELECT key, CAST(row AS BLOB), "
                               "sha256(key, CAST(row AS BLOB)) FROM rows")
                    db.execute("DROP TABLE rows")
            except sqlite3.OperationalError as e:
                if "no such table: rows" not in str(e):  # another process took it over first: nothing left to do
                    raise
        return True

    @contextlib.contextmanager
    def _db(self):
        """A connection (writes in `BEGIN IMMEDIATE` transactions, committed by `with db:`), always closed."""
        db = sqlite3.connect(self.path, timeout=120, isolation_level="IMMEDIATE")
        db.text_factory = bytes
        try:
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _guard(self, shared: bool):
        """A shared flock on `NAME.lock` while the store is used, an exclusive one while it is moved aside (none
        where flock or the lock file is not to be had: a store in a read-only folder is never moved anyway)."""
        fd = None
        with contextlib.suppress(OSError):
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        if fd is None:
            with contextlib.suppress(OSError):
                fd = os.open(f"{self.path}.lock", os.O_RDONLY)
        try:
            try:
                import fcntl
            except ImportError:
                fcntl = None
            if fd is not None and fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            if fd is not None:
                os.close(fd)

    def _use(self, action, kind: str):
        """`action(db)`'s result; a damaged store is moved aside and the action tried once more on the new one. None
        when the store cannot be used for `kind` ("read"/"write"): said once, and not tried again."""
        for attempt in (1, 2):
            seen = None
            try:
                with self._guard(shared=True):
                    seen = _inode(self.path)
                    with self._db() as db:
                        return action(db)
            except sqlite3.Error as e:
                if attempt == 1 and _is_damage(e) and self._heal(e, seen):
                    continue
                self._cannot(kind, e)
            except OSError as e:
                self._cannot(kind, e)
            return None

    def _heal(self, e: sqlite3.Error, seen) -> bool:
        """Move the damaged store aside (unless another process did since `seen`, its inode when the error came) and
        start an empty one in its place; False when that cannot be done (said once)."""
        try:
            with self._guard(shared=False):
                if _inode(self.path) == seen and seen is not None:
                    aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
                    if aside.exists():
                        aside = aside.with_name(f"{aside.name}-{os.getpid()}")
                    os.replace(self.path, aside)
                    for side in ("-journal", "-wal", "-shm"):  # what SQLite keeps beside it goes with it
                        if (old := Path(f"{self.path}{side}")).exists():
                            os.replace(old, f"{aside}{side}")
                    self._warn("damaged", f"the store {self.path} was damaged ({e}): moved aside to {aside.name}; "
                                          "what it held is computed again as it is needed")
                with self._db() as db:
                    self._create(db)
            return True
        except (OSError, sqlite3.Error) as e2:
            self.usable = self.writable = False
            self._warn("damaged", f"the store {self.path} is damaged ({e}) and cannot be replaced "
                                  f"({getattr(e2, 'strerror', None) or e2}): this run does without it")
            return False

    def _cannot(self, kind: str, e: Exception) -> None:
        why = getattr(e, "strerror", None) or e
        self.writable = False
        if kind == "read":
            self.usable = False
        self._warn(kind, f"cannot {kind} the store {self.path}: {why}; "
                         + ("what is computed now will be computed again next time" if kind == "write"
                            else "its values are computed again"))

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._said:
            self._said.add(kind)
            self.log(f"warning: {message}")

    # ------------------------------------------------------------------------------------------- values

    def _key(self, path: str) -> str:
        if path not in self._keys:
            self._keys[path] = sha256_text(self.settings + sha256_file(path))
        return self._keys[path]

    def get(self, paths: list) -> list:
        """The stored value of each path, or None where there is none, where its checksum does not match (counted
        in `damaged` or `outdated`, said once), where it is not what the store holds (`misshapen`, said once) or
        where the file cannot be read (the caller's own reading then reports it)."""
        keys = []
        for p in map(str, paths):
            try:
                keys.append(self._key(p))
            except OSError:
                keys.append(None)
        wanted = [k for k in keys if k]

        def read(db):
            found = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                found.update((_text(k), (v, _text(s))) for k, v, s in db.execute(
                    f"SELECT key, value, sha256 FROM vals WHERE key IN ({','.join('?' * len(chunk))})", chunk))
            return found

        found = (self._use(read, "read") if self.usable and wanted else None) or {}
        out, bad = [], {"damaged": int(found.pop(None, None) is not None), "outdated": 0, "misshapen": 0}
        for k in keys:
            value, digest = found.get(k, (None, None))
            if value is not None and (not isinstance(value, bytes) or _digest(k, value) != digest):
                bad["outdated" if isinstance(value, bytes) and _value_digest(value) == digest else "damaged"] += 1
                value = None
            if value is not None:
                value = self._decoded(value)
                bad["misshapen"] += value is None
            out.append(value)
        why = {"damaged": "did not match their checksum: computed again", "outdated": "carry an earlier version's "
               "checksum (of the value alone, not its key): computed again, once",
               "misshapen": "are not what it holds (a wrong shape or type): computed again"}
        for kind, n in bad.items():
            setattr(self, kind, getattr(self, kind) + n)
            if n:
                self._warn(f"values {kind}", f"{n} value(s) in the store {self.path} {why[kind]}")
        return out

    def _decoded(self, data: bytes):
        """The value `data` holds, or None when it does not decode or is not one the store holds (`check`)."""
        try:
            value = self.decode(data)
            return value if self.check(value) else None
        except (ValueError, TypeError, EOFError, OSError):  # json's and numpy's errors for bytes of another kind
            return None

    def put(self, paths: list, values: list) -> None:
        """Keep `values` (one per path; None: nothing to keep for that path). A store that cannot be written says so
        once and keeps nothing more: that costs only the reuse."""
        if not self.writable:
            return
        rows = []
        for p, v in zip(paths, values):
            if v is None:
                continue
            data = self.encode(v)
            data = data.encode() if isinstance(data, str) else bytes(data)
            with contextlib.suppress(OSError):  # an image gone since: nothing to key it by
                key = self._key(str(p))
                rows.append((key, data, _digest(key, data)))

        def write(db):
            with db:
                db.executemany("INSERT OR REPLACE INTO vals VALUES (?, ?, ?)", rows)

        if rows:
            self._use(write, "write")


def cached_map(keys: list, store: "ContentStore | None", compute: Callable, log: Callable = print,
               progress: str = "computed", chunk: int = 256) -> tuple[list, int]:
    """(the value of each key, in order; how many were computed): from `store` (None: no store) where it holds them;
    the others from `compute(indices)`, an iterable of their values in that order (a generator may batch), taken
    `chunk` at a time, each chunk stored as it comes (an interrupted run keeps what it computed; a store that cannot
    keep them says so once), with a `Progress` line named `progress`. The one store-then-compute loop of the crops,
    the crop embeddings and the hand-network embeddings."""
    from ..core.progress import Progress

    values = store.get(keys) if store is not None else [None] * len(keys)
    todo = [i for i, v in enumerate(values) if v is None]
    if todo:
        bar, made = Progress(log, progress, len(todo)), iter(compute(todo))
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            for i in part:
                values[i] = next(made)
            if store is not None:
                store.put([keys[i] for i in part], [values[i] for i in part])
            bar.update(len(part))
    return values, len(todo)


def arrays(path: Path, settings: dict, dtype: str, shape: tuple, log: Callable = print) -> ContentStore:
    """A store of numpy arrays of `dtype` (kept as .npy bytes, nothing pickled) whose shape is `shape` (None for a
    size any: `(None,)` any length of one axis); a value of another type or shape is a miss (`check`)."""
    import io

    import numpy as np

    def encode(a):  # kept as given: a value of the wrong dtype is caught on read, not hidden by a cast
        buf = io.BytesIO()
        np.save(buf, np.asarray(a), allow_pickle=False)
        return buf.getvalue()

    def check(a) -> bool:
        return (isinstance(a, np.ndarray) and a.dtype == np.dtype(dtype) and a.ndim == len(shape)
                and all(want is None or want == got for want, got in zip(shape, a.shape)))

    return ContentStore(path, settings, encode=encode, decode=lambda b: np.load(io.BytesIO(b), allow_pickle=False),
                        log=log, check=check)


def decoded(folder: Path, settings: dict, log: Callable = print, shape: tuple | None = None) -> ContentStore:
    """The store of decoded, resized uint8 image arrays (C×H×W, `shape` when given) made with `settings`, in
    `folder`."""
    return arrays(Path(folder) / DECODED, settings, "uint8", tuple(shape) if shape else (None, None, None), log)
