"""Dataset sources: parse `scheme:rest` strings, redact them, fetch them once into a locked cache, find the images.

Fetching lives in `fetchers.py` (URL, Kaggle, sklearn digits) and extraction in `archives.py`.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.parse
from pathlib import Path

from ..core.errors import PipelineError
from ..core.workspace import COMPLETE_MARKER, write_text
from . import fetchers
from .archives import ARCHIVE_EXTS, is_archive_name, safe_extract

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SOURCE_FORMS = ("kaggle:OWNER/SLUG, path:DIR_OR_ARCHIVE, url:https://HOST/FILE.zip|.tar|.tar.gz|.tgz, "
                "sklearn:digits, or sign_mnist: (Sign-MNIST CSVs) or mnist: (IDX files; mnist:url: may also name "
                "a folder ending in /) before one of these")
# prefixes before a source whose files `datasets.py` converts into image folders: Sign-MNIST CSVs, IDX files
SIGN_MNIST, MNIST = "sign_mnist:", "mnist:"
CONVERTED = (SIGN_MNIST, MNIST)
JUNK_NAMES = {"__MACOSX"}


def parse_source(source: str, folder_url: bool = False) -> tuple[str, str]:
    """Split `source` into (scheme, rest) after checking it has one of the four supported forms. `folder_url`: a
    `url:` may also name a folder (its path ends in /), whose files the caller names (`materialise_url_folder`)."""
    scheme, _, rest = source.strip().partition(":")
    ok = {
        "kaggle": lambda: re.fullmatch(r"[\w.-]+/[\w.-]+", rest),
        "path": lambda: rest,
        "url": lambda: (urllib.parse.urlparse(rest).scheme in ("http", "https")
                        and (is_archive_name(urllib.parse.urlparse(rest).path) or folder_url and is_url_folder(rest))),
        "sklearn": lambda: rest == "digits",
    }.get(scheme, lambda: False)()
    if not ok:
        raise PipelineError(f"bad source {source!r}: expected one of {SOURCE_FORMS}")
    return scheme, rest


def split_converted(source: str) -> tuple[str, str]:
    """(`sign_mnist:` or `mnist:` or "", the source after it)."""
    prefix = next((p for p in CONVERTED if source.startswith(p)), "")
    return prefix, source[len(prefix):]


def check(source: str) -> None:
    """The one-line error for a source string of no supported form (`sign_mnist:` and `mnist:` ones included)."""
    prefix, inner = split_converted(source)
    parse_source(inner, folder_url=prefix == MNIST)


def is_url_folder(url: str) -> bool:
    """Whether `url`'s path names a folder (ends in /)."""
    return urllib.parse.urlsplit(url).path.endswith("/")


def redact_source(source: str) -> str:
    """`source` safe to log or save: a `url:` source's password and query values (tokens) become ***."""
    prefix, inner = split_converted(source)
    scheme, _, rest = inner.partition(":")
    return prefix + ("url:" + fetchers.redact_url(rest) if scheme == "url" else inner)


def _source_key(source: str) -> str:
    """Filesystem-safe cache folder name for `source`: a readable slug (no URL secrets) plus a short hash."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", redact_source(source)).strip("._")[-60:]
    return f"{slug}-{hashlib.sha256(source.encode()).hexdigest()[:10]}"


def materialise(source: str, cache_dir: Path, log=print) -> Path:
    """Local directory with the files of `source`, fetched into `cache_dir` once; progress goes to `log`."""
    scheme, rest = parse_source(source)
    cache_dir = Path(cache_dir)
    if scheme == "path":
        path = Path(rest).expanduser()
        if path.is_dir():
            return path
        if not path.is_file():
            raise PipelineError(f"source path not found: {path}")
        if not is_archive_name(path.name):
            raise PipelineError(f"source path {path} is neither a directory nor a {'/'.join(ARCHIVE_EXTS)} archive")
        return _cached(f"path:{path.resolve()}", cache_dir, log, lambda out: safe_extract(path, out))
    if scheme == "url":
        return _cached(source, cache_dir, log, lambda out: fetchers.fetch_url_archive(rest, out, log))
    if scheme == "kaggle":
        return _cached(source, cache_dir, log, lambda out: fetchers.fetch_kaggle(rest, out, log))
    return _cached(source, cache_dir, log, fetchers.write_digits)


def materialise_url_folder(url: str, names: tuple[str, ...], cache_dir: Path, log=print) -> Path:
    """Local directory with the files `names` of the folder URL `url` (e.g. LeCun's MNIST page), fetched once."""
    return _cached(f"url:{url}", Path(cache_dir), log, lambda out: fetchers.fetch_url_files(url, names, out, log))


def _cached(source: str, cache_dir: Path, log, fill) -> Path:
    """Return cache_dir/<key of `source`>, calling `fill(out)` to create it unless its completion marker exists.
    One process at a time works on an entry (a lock file beside it): a second run of the same source waits, then
    uses what the first one fetched, instead of removing its temp folder."""
    from filelock import FileLock, Timeout

    out = cache_dir / _source_key(source)
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(cache_dir / f".{out.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"waiting for another process fetching {redact_source(source)} into {out}")
        lock.acquire(timeout=-1)
    try:
        if (out / COMPLETE_MARKER).is_file():
            log(f"using cached {redact_source(source)} at {out}")
            return out
        if out.exists():
            log(f"discarding incomplete cache {out}")
            shutil.rmtree(out)
        for stale in cache_dir.glob(f".{out.name}.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        fill(out)
        write_text(out / COMPLETE_MARKER, f"{redact_source(source)}\n")  # written last: the cache is complete
        log(f"materialised {redact_source(source)} at {out}")
        return out
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------- images

def visible_name(name: str) -> bool:
    """False for hidden files/dirs and macOS resource-fork junk."""
    return not name.startswith(".") and name not in JUNK_NAMES


def _visible(path: Path) -> bool:
    return visible_name(path.name)


def _subdirs(folder: Path) -> list[Path]:
    """The visible subdirectories of `folder` (not links to one), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and _visible(p))


def _has_images(folder: Path) -> bool:
    """Whether `folder` directly holds an image file (not a link to one)."""
    return any(p.suffix.lower() in IMAGE_EXTS and p.is_file() and not p.is_symlink() and _visible(p)
               for p in folder.iterdir())


def find_image_root(base: Path, subdir: str = "") -> Path:
    """Folder of images or class folders under `base`/`subdir`, skipping single-subfolder wrappers (X/X/...)."""
    folder = Path(base) / subdir if subdir else Path(base)
    if not folder.is_dir():
        raise PipelineError(f"image folder {subdir or base!r} not found under {base}")
    while not _has_images(folder):
        subs = _subdirs(folder)
        if len(subs) == 1:
            folder = subs[0]
        elif any(_has_images(s) for s in subs):
            break
        else:
            listed = ", ".join(s.name for s in subs[:8]) or "no subfolders"
            raise PipelineError(f"no image folder found in {folder} ({listed}): set the source's subdir")
    return folder


def list_images(root: Path) -> list[Path]:
    """All image files under `root`, sorted, skipping hidden/junk entries, symbolic links (`list_links`) and a
    nested same-named duplicate copy."""
    return [Path(p) for p in list_image_strings(root)]


def list_links(root: Path) -> list[Path]:
    """The visible symbolic links under `root` (to files or folders, dangling or not), sorted. Inside a dataset
    links are not followed: `list_images` skips them, and the stages count and name them. (`root` itself may be a
    link.)"""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if visible_name(d)]
        found += [Path(dirpath, n) for n in dirnames + filenames if visible_name(n) and os.path.islink(os.path.join(dirpath, n))]
    return sorted(found)


def list_image_strings(root: Path) -> list[str]:
    """`list_images` as plain strings: no per-file `Path` parsing, so 87,000 files list in well under a second
    (what a no-op rerun's source fingerprint needs). The order is `Path`'s (component by component)."""
    root, found = Path(root), []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if visible_name(d)]
        found += [p for f in filenames
                  if visible_name(f) and os.path.splitext(f)[1].lower() in IMAGE_EXTS
                  and not os.path.islink(p := os.path.join(dirpath, f))]
    found.sort(key=lambda p: p.split(os.sep))
    nested = [p for p in found if _repeats_a_folder(root.name + p[len(str(root)):])]
    if nested:  # rare (e.g. a Kaggle download that contains its own folder again): the slow exact check
        present = {Path(p) for p in found}
        dropped = {p for p in nested if _is_nested_duplicate(Path(p), root, present)}
        found = [p for p in found if p not in dropped]
    return found


def _repeats_a_folder(rel: str) -> bool:
    parts = [x for x in rel.split(os.sep)[:-1] if x]
    return any(a == b for a, b in zip(parts, parts[1:]))


def _is_nested_duplicate(path: Path, root: Path, present: set[Path]) -> bool:
    """Whether `path` lies in a folder named like its parent (X/X/...) and the same file (name, size) exists outside."""
    for folder in path.relative_to(root).parents:
        inner = root / folder
        if inner != root and inner.name == inner.parent.name:
            outer = inner.parent / path.relative_to(inner)
            if outer in present and outer.stat().st_size == path.stat().st_size:
                return True
    return False
