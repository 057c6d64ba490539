"""Every path of a run in one place, plus atomic writes and file fingerprints."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .artifacts import MANIFEST
from .errors import PipelineError


@functools.cache
def umask() -> int:
    """The process's umask (read once): what a file made through a private temp file should get, as `open` gives."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


COMPLETE_MARKER = ".complete"  # written last into a cached folder (a download, a conversion): the folder is whole
STAGED_EXPORTS = "_exports"  # inside a staging folder: the exports a run writes, moved to exports/ when it completes


@dataclass(frozen=True)
class Workspace:
    """Paths for run `name`: `runs/<name>/<stage>/…`, `exports/<name>.pkl`, the download cache."""

    root: Path       # runs/<name>
    exports: Path    # exports/
    data: Path       # download cache
    name: str
    staged: str = ""  # the stage being run: its outputs go to its staging folder until they are complete
    fingerprint: str = ""  # that stage's fingerprint digest (train keys its resumable checkpoints by it)

    @classmethod
    def from_config(cls, cfg) -> "Workspace":
        base = Path(cfg.project_dir)
        return cls(root=(base / cfg.run.workdir / cfg.run.name).resolve(),
                   exports=(base / cfg.run.exports).resolve(),
                   data=(base / cfg.run.data_dir).resolve(), name=cfg.run.name)

    def stage_dir(self, stage: str) -> Path:
        return self.staging_dir(stage) if stage == self.staged else self.root / stage

    def staging_dir(self, stage: str) -> Path:
        """Where this process's run of `stage` writes until its outputs are complete (then it replaces
        `runs/<name>/<stage>`): `.<stage>.staging-<pid>`, private to the process."""
        return self.root / f".{stage}.staging-{os.getpid()}"

    def stagings(self, stage: str) -> list[Path]:
        """Every staging folder of `stage` in the run folder, whichever process made it (and the `.<stage>.staging`
        of earlier versions)."""
        mine = re.compile(rf"\.{re.escape(stage)}\.staging(-\d+)?")
        with contextlib.suppress(OSError):
            return sorted(p for p in self.root.glob(f".{glob.escape(stage)}.staging*")
                          if mine.fullmatch(p.name) and p.is_dir())
        return []

    def artifact(self, stage: str, name: str) -> Path:
        return self.stage_dir(stage) / name

    def staging(self, stage: str, exports: bool = False, fingerprint: str = "") -> "Workspace":
        """This workspace as a run of `stage` (whose fingerprint digest is `fingerprint`) sees it: `stage`'s folder
        (with `exports`, the exports folder too) redirected into its staging folder, every other stage's folder as
        it is."""
        folder = self.staging_dir(stage)
        return dataclasses.replace(self, staged=stage, exports=folder / STAGED_EXPORTS if exports else self.exports,
                                   fingerprint=fingerprint)

    def manifest(self, stage: str) -> dict | None:
        """`stage`'s manifest (what its last complete run recorded), or None when it has none."""
        try:
            return read_json(self.artifact(stage, MANIFEST))
        except (OSError, ValueError):
            return None

    def recorded_sha256(self, stage: str, path: Path) -> str | None:
        """The sha256 that `stage`'s manifest records for its output `path`, or None when there is none."""
        rec = (self.manifest(stage) or {}).get("outputs", {}).get(os.path.relpath(path, self.root))
        return rec["sha256"] if rec else None

    @property
    def learner(self) -> Path:
        return self.exports / f"{self.name}.pkl"

    @property
    def onnx(self) -> Path:
        return self.exports / f"{self.name}.onnx"

    @property
    def model_card(self) -> Path:
        return self.exports / f"{self.name}.json"

    @property
    def scratch(self) -> Path:
        """Where fastai may write its temporary model files (lr_find's _tmp, checkpoints)."""
        return self.root / "_scratch"

    def checkpoints(self, stage: str) -> Path:
        """Where `stage` keeps what lets an interrupted run of it resume (outside its staging folder, which a failed
        run loses): `_scratch/<stage>/`."""
        return self.scratch / stage


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Remove `.NAME.PID.*.tmp` files beside `path` left by a writer that was killed (its PID no longer runs)."""
    mine = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[^.]+\.tmp")
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        m = mine.fullmatch(old.name)
        if m and int(m[1]) != os.getpid() and not _pid_alive(int(m[1])):
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temp path beside `path`; on success rename it onto `path`, on failure remove it.

    A process killed mid-write leaves only the temp file (`.NAME.PID.XXXX.tmp`), never a partial `path`; the next
    write of `path` removes such leftovers. A failure to write raises one line: `cannot write PATH: reason`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes it private (0600): give it the mode `open` would
        os.close(fd)
    except OSError as e:
        raise PipelineError(f"cannot write {path}: {e.strerror or e}") from None
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PipelineError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_dir(dest: Path):
    """Yield a new temp dir beside `dest`; on success it replaces `dest` (`replace_dir`), on failure it is removed.

    A process killed mid-write leaves only the temp dir (`.NAME.tmpXXXX`), never a partial `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp", dir=dest.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it private; the folder gets the user's usual mode
        yield tmp
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(new: Path, dest: Path) -> None:
    """Rename `new` to `dest`, moving any existing `dest` aside first and deleting it afterwards."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        old.rmdir()
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path, data) -> Path:
    """Write `data` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: Path, df) -> Path:
    """Write the DataFrame `df` to `path` as CSV (no index) atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


def save_torch(path: Path, save) -> Path:
    """Write `path` atomically with `save(tmp)` (`torch.save`, `Learner.export`). torch reports a failed write, a
    full disk above all, as a RuntimeError from its zip writer: here it is the one line `cannot write PATH: reason`."""
    with atomic_path(path) as tmp:
        try:
            save(tmp)
        except RuntimeError as e:  # "[enforce fail at inline_container.cc…]", "basic_ios::clear: iostream error", …
            st = os.statvfs(tmp.parent)
            if st.f_bavail * st.f_frsize < 2**20:  # the partial file is still there: a full disk shows as full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
            raise OSError(errno.EIO, f"torch could not write it ({' '.join(str(e).split())[:120]})") from None
    return Path(path)


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only: no display is needed or opened), for every plot written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Save a matplotlib `fig` to `path` atomically and close it. A name in glyphs its font lacks (a group `日本`) is
    drawn as boxes without matplotlib's warning per glyph: the tables beside each plot keep the name."""
    import warnings

    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_hashed(path: Path) -> tuple[bytes, str]:
    """(the bytes of `path`, their sha256), the file read once: what a loader checks is then what it loads (a file
    swapped between a hash of its path and a load of its path would load unchecked bytes)."""
    data = Path(path).read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def listing_fingerprint(paths, root: Path) -> str:
    """Fingerprint a set of files by relative path, size and mtime (no content reads, as DVC does)."""
    h = hashlib.sha256()
    prefix = str(root).rstrip(os.sep) + os.sep
    for p in paths:
        p = str(p)
        st = os.stat(p)
        rel = p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, root)  # the slicing is 10x faster
        # surrogateescape: a file name that is not valid UTF-8 (e.g. from a Latin-1 tar) must not crash this
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()
