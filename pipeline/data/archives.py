"""Safe extraction of zip and tar archives: no escapes, links or devices, no size bombs, timestamps kept. Tar members
also pass tarfile's "data" filter where Python has it."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tarfile
import time
import zipfile
from pathlib import Path

from ..core.errors import PipelineError
from ..core.workspace import staged_dir

ARCHIVE_EXTS = (".zip", ".tar", ".tar.gz", ".tgz")


def is_archive_name(name: str) -> bool:
    """Whether file `name` ends in a supported archive extension."""
    return name.lower().endswith(ARCHIVE_EXTS)


def safe_extract(archive: Path, dest: Path, max_ratio: float = 200.0, max_total: int = 64 * 2**30) -> None:
    """Extract zip/tar `archive` into empty `dest`; refuse escapes, links, devices, > `max_total` or `max_ratio`x."""
    archive, dest = Path(archive), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PipelineError(f"cannot extract {archive.name}: destination {dest} exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                entries = [(i.filename, i.is_dir(), _zip_kind(i), i.file_size, lambda i=i: zf.open(i),
                            _zip_mtime(i)) for i in zf.infolist()]
                _extract_entries(archive, dest, entries, max_ratio, max_total)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                entries = [(m.name, m.isdir(), _tar_kind(m, dest), m.size, lambda m=m: tf.extractfile(m), m.mtime)
                           for m in tf.getmembers()]
                _extract_entries(archive, dest, entries, max_ratio, max_total)
        else:
            raise PipelineError(f"{archive} is not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise PipelineError(f"cannot extract {archive.name}: {type(e).__name__}: {e}") from None


def _zip_mtime(info: zipfile.ZipInfo) -> float | None:
    """The entry's timestamp (zip stores local time) as epoch seconds, or None when it is not a valid date."""
    try:
        return time.mktime(info.date_time + (0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """'symlink' or 'special' for such zip entries (unix mode in the external attributes), else ''."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    return "special file" if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR) else ""


def _tar_kind(member: tarfile.TarInfo, dest: Path) -> str:
    """'symlink', 'hardlink' or 'special file' for such tar members; for the others, where Python has tarfile's
    "data" filter (3.12, 3.11.4, 3.10.12 on), what it refuses about them (the standard library's policy, kept up
    with tar's tricks; the checks here already refuse every link, device and escaping name); else ''."""
    if member.issym():
        return f"symlink to {member.linkname}"
    if member.islnk():
        return f"hardlink to {member.linkname}"
    if not (member.isfile() or member.isdir()):
        return "special file"
    if hasattr(tarfile, "data_filter"):
        try:
            tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as e:
            return f"member tarfile's data filter refuses ({type(e).__name__})"
    return ""


def _extract_entries(archive: Path, dest: Path, entries: list, max_ratio: float, max_total: int) -> None:
    """Check every (name, is_dir, kind, size, opener, mtime) entry of `archive`, then write them into `dest` via a
    temp dir renamed onto `dest` at the end (a killed extraction leaves only the temp dir, which `sources` removes).
    Files keep the archive's timestamps, as unzip/tar do, so re-extracting gives the same listing fingerprint."""
    total, size = sum(e[3] for e in entries), archive.stat().st_size
    if total > max_total or total > max_ratio * max(size, 1):
        raise PipelineError(f"refusing to extract {archive.name}: it declares {total:,} bytes uncompressed from "
                            f"{size:,} bytes (limits {max_ratio:g}x, {max_total:,} bytes); possible zip bomb")
    for name, _, kind, *_ in entries:
        _entry_parts(archive, name)  # an escaping name first: its own message, before any filter's
        if kind:
            raise PipelineError(f"refusing to extract {archive.name}: entry {name!r} is a {kind}")
    with staged_dir(dest) as tmp:
        root = tmp.resolve()
        for name, is_dir, _, _, opener, mtime in entries:
            target = root.joinpath(*_entry_parts(archive, name))
            if not target.resolve().is_relative_to(root):
                raise PipelineError(f"refusing to extract {archive.name}: entry {name!r} escapes the destination")
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with opener() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if mtime is not None:
                with contextlib.suppress(OverflowError, ValueError, OSError):
                    os.utime(target, (mtime, mtime))


def _entry_parts(archive: Path, name: str) -> tuple[str, ...]:
    """The path components of entry `name`, refusing absolute paths, drive letters and `..`."""
    posix = name.replace("\\", "/")
    parts = tuple(p for p in posix.split("/") if p not in ("", "."))
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in parts:
        raise PipelineError(f"refusing to extract {archive.name}: entry {name!r} escapes the destination")
    return parts
