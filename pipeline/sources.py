"""Dataset sources: parse `scheme:rest` strings, fetch them into a cache, extract safely, find the images."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from pipeline.errors import PipelineError
from pipeline.workspace import umask

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ARCHIVE_EXTS = (".zip", ".tar", ".tar.gz", ".tgz")
SOURCE_FORMS = ("kaggle:OWNER/SLUG, path:DIR_OR_ARCHIVE, url:https://HOST/FILE.zip|.tar|.tar.gz|.tgz, "
                "sklearn:digits, or sign_mnist: before one of these (Sign-MNIST CSVs)")
DONE_MARKER = ".complete"
JUNK_NAMES = {"__MACOSX"}
DIGITS_SEED, DIGITS_TEST_FRACTION, DIGITS_SIZE = 0, 0.17, 32
DIGITS_MTIME = 946684800  # 2000-01-01: fixed, so a rewritten cache lists exactly like the first one


def parse_source(source: str) -> tuple[str, str]:
    """Split `source` into (scheme, rest) after checking it has one of the four supported forms."""
    scheme, _, rest = source.strip().partition(":")
    ok = {
        "kaggle": lambda: re.fullmatch(r"[\w.-]+/[\w.-]+", rest),
        "path": lambda: rest,
        "url": lambda: (urllib.parse.urlparse(rest).scheme in ("http", "https")
                        and _is_archive_name(urllib.parse.urlparse(rest).path)),
        "sklearn": lambda: rest == "digits",
    }.get(scheme, lambda: False)()
    if not ok:
        raise PipelineError(f"bad source {source!r}: expected one of {SOURCE_FORMS}")
    return scheme, rest


def redact_source(source: str) -> str:
    """`source` safe to log or save: a `url:` source's password and query values (tokens) become ***."""
    scheme, _, rest = source.partition(":")
    if scheme != "url":
        return source
    u = urllib.parse.urlsplit(rest)
    if u.password is None and not u.query:
        return source
    netloc = u.netloc
    if u.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    return "url:" + urllib.parse.urlunsplit((u.scheme, netloc, u.path, query, u.fragment))


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
        if not _is_archive_name(path.name):
            raise PipelineError(f"source path {path} is neither a directory nor a {'/'.join(ARCHIVE_EXTS)} archive")
        return _cached(f"path:{path.resolve()}", cache_dir, log, lambda out: safe_extract(path, out))
    if scheme == "url":
        return _cached(source, cache_dir, log, lambda out: _fetch_url_archive(rest, out, log))
    if scheme == "kaggle":
        return _cached(source, cache_dir, log, lambda out: _fetch_kaggle(rest, out, log))
    return _cached(source, cache_dir, log, _write_digits)


def _is_archive_name(name: str) -> bool:
    """Whether file `name` ends in a supported archive extension."""
    return name.lower().endswith(ARCHIVE_EXTS)


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
        if (out / DONE_MARKER).is_file():
            log(f"using cached {redact_source(source)} at {out}")
            return out
        if out.exists():
            log(f"discarding incomplete cache {out}")
            shutil.rmtree(out)
        for stale in cache_dir.glob(f".{out.name}.tmp*"):
            shutil.rmtree(stale, ignore_errors=True)
        fill(out)
        _write_atomic(out / DONE_MARKER, f"{redact_source(source)}\n")  # written last: the cache is complete
        log(f"materialised {redact_source(source)} at {out}")
        return out
    finally:
        lock.release()


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file and os.replace."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _scratch(out: Path) -> tempfile.TemporaryDirectory:
    """A temporary directory next to `out`, removed on exit (and by `_cached` if a crash left it)."""
    return tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp", dir=out.parent)


@contextlib.contextmanager
def _staged(dest: Path):
    """Yield a temp dir next to `dest` that is renamed to `dest` (absent or empty) on success, removed on failure."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp", dir=dest.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it private; the cache folder gets the user's usual mode
        yield tmp
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------------------------- url

def _fetch_url_archive(url: str, out: Path, log) -> None:
    """Download the archive at `url` and extract it into `out`."""
    with _scratch(out) as tmp:
        name = PurePosixPath(urllib.parse.urlparse(url).path).name
        archive = Path(tmp) / name
        log(f"downloading {redact_source('url:' + url)[4:]}")
        _download(url, archive)
        safe_extract(archive, out)


def _request(url: str) -> urllib.request.Request:
    """A request for `url`; a USER:PASSWORD@ in it becomes an HTTP Basic header (urllib would take it for a port)."""
    import base64

    u = urllib.parse.urlsplit(url)
    if u.username is None:
        return urllib.request.Request(url)
    host = u.netloc.rpartition("@")[2]
    request = urllib.request.Request(urllib.parse.urlunsplit(u._replace(netloc=host)))
    userinfo = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
    request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(userinfo.encode()).decode())
    return request


def _download(url: str, dest: Path) -> None:
    """Fetch `url` into `dest` (via `dest`.part and os.replace), drawing progress on stderr."""
    part = dest.with_name(dest.name + ".part")
    shown = redact_source("url:" + url)[4:]
    try:
        request = _request(url)
    except ValueError as e:  # e.g. a port that is not a number: the message would quote the URL, secrets included
        raise PipelineError(f"download failed: {shown} is not a valid URL") from None
    try:
        with urllib.request.urlopen(request, timeout=60) as resp, open(part, "wb") as fh:
            progress = _progress(dest.name, int(resp.headers.get("Content-Length") or 0))
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
                progress(len(chunk))
            progress(0, final=True)
    except urllib.error.HTTPError as e:
        raise PipelineError(f"download failed: {shown} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise PipelineError(f"download failed: {shown}: {getattr(e, 'reason', e)}") from None
    except (ValueError, http.client.InvalidURL) as e:  # their messages quote the URL: never show it unredacted
        raise PipelineError(f"download failed: {shown} is not a valid URL") from None
    except http.client.HTTPException as e:  # e.g. IncompleteRead: the server cut the transfer short
        raise PipelineError(f"download failed: {shown}: {type(e).__name__}") from None
    os.replace(part, dest)


def _progress(name: str, total: int, stream=None):
    """Return `update(nbytes, final=False)` that redraws one line on a TTY, else prints a line per ~10% of `total`."""
    stream = stream or sys.stderr
    tty, state = stream.isatty(), {"done": 0, "shown": -1, "t": 0.0}

    def update(nbytes: int, final: bool = False) -> None:
        state["done"] += nbytes
        done_mb = state["done"] / 2**20
        pct = min(100, state["done"] * 100 // total) if total else None
        text = f"{name}: {done_mb:.1f}" + (f"/{total / 2**20:.1f} MiB {pct}%" if total else " MiB")
        if tty:
            if final or time.monotonic() - state["t"] > 0.1:
                state["t"] = time.monotonic()
                stream.write(f"\r{text}" + ("\n" if final else ""))
                stream.flush()
            return
        step = pct // 10 if total else int(done_mb // 50)
        if step > state["shown"] or (final and step != state["shown"]):
            state["shown"] = step
            print(text, file=stream, flush=True)
    return update


# -------------------------------------------------------------------------------------------- kaggle

def _fetch_kaggle(slug: str, out: Path, log) -> None:
    """Download Kaggle dataset `slug` with the official client and extract it into `out` with `safe_extract`."""
    if not _kaggle_credentials_found():
        raise PipelineError(
            f"no Kaggle credentials for kaggle:{slug}: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), "
            f"or save kaggle.json from kaggle.com/settings to {_kaggle_config_dir()}/kaggle.json; "
            "to try the pipeline offline run `python -m pipeline run` (uses configs/demo.toml)")
    log(f"downloading Kaggle dataset {slug}")
    client_output = io.StringIO()
    with _scratch(out) as tmp:
        try:
            with contextlib.redirect_stdout(client_output):
                from kaggle.api.kaggle_api_extended import KaggleApi  # importing `kaggle` authenticates and prints
                api = KaggleApi()
                api.config_dir = str(_kaggle_config_dir())  # the class reads these once, at import time
                api.config = os.path.join(api.config_dir, api.config_file)
                api.authenticate()
                api.dataset_download_files(slug, path=tmp, unzip=False, quiet=not sys.stderr.isatty())
        except ImportError:
            raise PipelineError("the kaggle package is missing: pip install kaggle six") from None
        except SystemExit:
            raise PipelineError(f"Kaggle authentication failed for {slug}: check KAGGLE_USERNAME/KAGGLE_KEY "
                                "or kaggle.json") from None
        except Exception as e:  # noqa: BLE001 - the client raises requests/urllib3/ValueError/OSError alike
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status == 404:
                raise PipelineError(f"Kaggle dataset {slug} not found (HTTP 404): check OWNER/SLUG") from None
            if status in (401, 403):
                raise PipelineError(f"Kaggle refused {slug} (HTTP {status}): check your Kaggle credentials "
                                    "and that you accepted the dataset's rules on kaggle.com") from None
            raise PipelineError(f"Kaggle download of {slug} failed: {_redact(f'{type(e).__name__}: {e}')}") from None
        finally:
            for line in client_output.getvalue().splitlines():
                if line.strip():
                    log(_redact(line.strip()))
        archives = sorted(Path(tmp).glob("*.zip"))
        if not archives:
            raise PipelineError(f"Kaggle download of {slug} produced no zip file")
        safe_extract(archives[0], out)


def _kaggle_config_dir() -> Path:
    """The directory the kaggle client reads kaggle.json from (KAGGLE_CONFIG_DIR, ~/.kaggle, or XDG)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"]).expanduser()
    legacy = Path.home() / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _kaggle_json(strict: bool = False) -> dict:
    """The parsed kaggle.json, or {} when absent; when it is there but not a JSON object, {} or with `strict`
    the one-line error that says so and where."""
    path = _kaggle_config_dir() / "kaggle.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        if strict:
            raise PipelineError(f"Kaggle credentials file {path} is malformed ({type(e).__name__}): download it "
                                "again from kaggle.com/settings, or set KAGGLE_USERNAME and KAGGLE_KEY") from None
        return {}
    if not isinstance(data, dict) and strict:
        raise PipelineError(f"Kaggle credentials file {path} is malformed (not a JSON object): download it again "
                            "from kaggle.com/settings, or set KAGGLE_USERNAME and KAGGLE_KEY")
    return data if isinstance(data, dict) else {}


def _kaggle_credentials_found() -> bool:
    """Whether any credential form the kaggle client accepts is present (env vars, kaggle.json, access token)."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return True
    home = Path.home() / ".kaggle"
    if any((home / n).is_file() for n in ("access_token", "access_token.txt", "credentials.json")):
        return True
    stored = _kaggle_json(strict=not (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")))
    return bool((os.environ.get("KAGGLE_USERNAME") or stored.get("username"))
                and (os.environ.get("KAGGLE_KEY") or stored.get("key")))


def _redact(text: str) -> str:
    """`text` with every known Kaggle secret replaced by ***: the keys/token, and the HTTP Basic credentials
    (base64 of USER:KEY) a client error might quote from its request headers."""
    import base64

    stored = _kaggle_json()
    as_text = [str(v) for v in (os.environ.get("KAGGLE_KEY"), stored.get("key"))  # a key saved as a JSON number too
               if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    keys = [k for k in as_text if len(k) >= 4]
    users = [str(u) for u in (os.environ.get("KAGGLE_USERNAME"), stored.get("username")) if isinstance(u, (str, int))]
    basic = [base64.b64encode(f"{u}:{k}".encode()).decode() for u in users for k in keys]
    token = os.environ.get("KAGGLE_API_TOKEN")
    for secret in basic + keys + ([token] if token and len(token) >= 4 else []):
        text = text.replace(secret, "***")
    return text


# ------------------------------------------------------------------------------------------- sklearn

def _write_digits(out: Path) -> None:
    """Write sklearn's digits into `out` as 32x32 grayscale PNGs (nearest-neighbour 4x upscale of the 8x8 images).

    train/<digit>/<digit>_<i>.png holds a stratified 83%, test/<digit>_<i>.png the rest; i is the sklearn index.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    scale = DIGITS_SIZE // digits.images.shape[1]
    pixels = np.round(digits.images * (255 / 16)).clip(0, 255).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    index = np.arange(len(digits.target))
    train, test = train_test_split(index, test_size=DIGITS_TEST_FRACTION, stratify=digits.target,
                                   random_state=DIGITS_SEED)
    with _staged(out) as tmp:
        for split, ids in (("train", train), ("test", test)):
            for i in sorted(ids):
                label = int(digits.target[i])
                folder = tmp / "train" / str(label) if split == "train" else tmp / "test"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels[i]).save(folder / f"{label}_{i:04d}.png")
                os.utime(folder / f"{label}_{i:04d}.png", (DIGITS_MTIME, DIGITS_MTIME))


# ------------------------------------------------------------------------------------------- extract

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
                entries = [(m.name, m.isdir(), _tar_kind(m), m.size, lambda m=m: tf.extractfile(m), m.mtime)
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


def _tar_kind(member: tarfile.TarInfo) -> str:
    """'symlink', 'hardlink' or 'special file' for such tar members, else ''."""
    if member.issym():
        return f"symlink to {member.linkname}"
    if member.islnk():
        return f"hardlink to {member.linkname}"
    return "" if member.isfile() or member.isdir() else "special file"


def _extract_entries(archive: Path, dest: Path, entries: list, max_ratio: float, max_total: int) -> None:
    """Check every (name, is_dir, kind, size, opener, mtime) entry of `archive`, then write them into `dest` via a
    temp dir renamed onto `dest` at the end (a killed extraction leaves only the temp dir, which `_cached` removes).
    Files keep the archive's timestamps, as unzip/tar do, so re-extracting gives the same listing fingerprint."""
    total, size = sum(e[3] for e in entries), archive.stat().st_size
    if total > max_total or total > max_ratio * max(size, 1):
        raise PipelineError(f"refusing to extract {archive.name}: it declares {total:,} bytes uncompressed from "
                            f"{size:,} bytes (limits {max_ratio:g}x, {max_total:,} bytes); possible zip bomb")
    for name, _, kind, *_ in entries:
        if kind:
            raise PipelineError(f"refusing to extract {archive.name}: entry {name!r} is a {kind}")
        _entry_parts(archive, name)
    with _staged(dest) as tmp:
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
