"""How each remote source scheme fills its cache folder `out`: a URL archive (or named files of a folder URL), a
Kaggle dataset, sklearn's digits.

`sources.materialise` picks one and calls it with a fresh `out` under its lock; each writes `out` as a whole.
"""
from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from ..core.errors import PipelineError
from ..core.workspace import staged_dir
from .archives import safe_extract

DIGITS_SEED, DIGITS_TEST_FRACTION, DIGITS_SIZE = 0, 0.17, 32
DIGITS_MTIME = 946684800  # 2000-01-01: fixed, so a rewritten cache lists exactly like the first one


def redact_url(url: str) -> str:
    """`url` safe to log or save: its password and query values (tokens) become ***."""
    u = urllib.parse.urlsplit(url)
    if u.password is None and not u.query:
        return url
    netloc = u.netloc
    if u.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = "&".join(f"{k}=***" for k, _ in urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, query, u.fragment))


def _scratch(out: Path) -> tempfile.TemporaryDirectory:
    """A temporary directory next to `out`, removed on exit (and by `sources` if a crash left it)."""
    return tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp", dir=out.parent)


# ----------------------------------------------------------------------------------------------- url

def fetch_url_archive(url: str, out: Path, log) -> None:
    """Download the archive at `url` and extract it into `out`."""
    with _scratch(out) as tmp:
        name = PurePosixPath(urllib.parse.urlparse(url).path).name
        archive = Path(tmp) / name
        log(f"downloading {redact_url(url)}")
        _download(url, archive)
        safe_extract(archive, out)


def fetch_url_files(url: str, names: tuple[str, ...], out: Path, log) -> None:
    """Download each of `names` from the folder URL `url` (its path ends in /; a query is kept) into `out`."""
    u = urllib.parse.urlsplit(url)
    with staged_dir(out) as tmp:
        for name in names:
            file_url = urllib.parse.urlunsplit(u._replace(path=u.path + urllib.parse.quote(name)))
            log(f"downloading {redact_url(file_url)}")
            _download(file_url, tmp / name)


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
    shown = redact_url(url)
    try:
        request = _request(url)
    except ValueError:  # e.g. a port that is not a number: the message would quote the URL, secrets included
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
    except (ValueError, http.client.InvalidURL):  # their messages quote the URL: never show it unredacted
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


def fetch_kaggle(slug: str, out: Path, log) -> None:
    """Download Kaggle dataset `slug` with the official client and extract it into `out` with `safe_extract`. What
    the client prints (importing `kaggle` authenticates and prints) is logged, its secrets redacted."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        api = _kaggle_client(slug)  # on failure its one-line error stands for what the client printed
    log(f"downloading Kaggle dataset {slug}")
    with _scratch(out) as tmp:
        try:
            with contextlib.redirect_stdout(printed):
                api.dataset_download_files(slug, path=tmp, unzip=False, quiet=not sys.stderr.isatty())
        except Exception as e:  # noqa: BLE001 - the client raises requests/urllib3/ValueError/OSError alike
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status == 404:
                raise PipelineError(f"Kaggle dataset {slug} not found (HTTP 404): check OWNER/SLUG") from None
            if status in (401, 403):
                raise PipelineError(f"Kaggle refused {slug} (HTTP {status}): check your Kaggle credentials "
                                    "and that you accepted the dataset's rules on kaggle.com") from None
            raise PipelineError(f"Kaggle download of {slug} failed: "
                                f"{_redact(f'{type(e).__name__}: {e}', api.config_values)}") from None
        finally:
            for line in printed.getvalue().splitlines():
                if line.strip():
                    log(_redact(line.strip(), api.config_values))
        archives = sorted(Path(tmp).glob("*.zip"))
        if not archives:
            raise PipelineError(f"Kaggle download of {slug} produced no zip file")
        safe_extract(archives[0], out)


def _kaggle_client(slug: str):
    """The official client, authenticated: it looks for the credentials itself (KAGGLE_API_TOKEN or
    ~/.kaggle/access_token, KAGGLE_USERNAME and KAGGLE_KEY or kaggle.json, the OAuth login of `kaggle auth login`).
    Finding none, it prints its help and exits: that becomes one line with the fix."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise PipelineError("the kaggle package is missing: pip install kaggle six") from None
    api = KaggleApi()
    # the class reads KAGGLE_CONFIG_DIR once, when `kaggle` is first imported: a later value (tests set one each) counts
    api.config_dir = os.environ.get("KAGGLE_CONFIG_DIR") or api.config_dir
    api.config = os.path.join(api.config_dir, api.config_file)
    try:
        api.authenticate()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - exits when it finds none; a kaggle.json list: TypeError
        _refuse_malformed(Path(api.config))
        if not isinstance(e, SystemExit):
            raise PipelineError(f"Kaggle authentication for {slug} failed: "
                                f"{_redact(f'{type(e).__name__}: {e}', api.config_values)}") from None
        raise PipelineError(
            f"no Kaggle credentials for kaggle:{slug}: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), "
            f"or save kaggle.json from kaggle.com/settings to {api.config}; "
            "to try the pipeline offline run `python -m pipeline run` (uses configs/demo.toml)") from None
    return api


def _refuse_malformed(path: Path) -> None:
    """The one-line error for a kaggle.json that is there but is not a JSON object: the client skips one it cannot
    parse without a word (and then finds no credentials)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        reason = type(e).__name__
    else:
        if isinstance(data, dict):
            return
        reason = "not a JSON object"
    raise PipelineError(f"Kaggle credentials file {path} is malformed ({reason}): download it again from "
                        "kaggle.com/settings, or set KAGGLE_USERNAME and KAGGLE_KEY")


def _redact(text: str, config: dict) -> str:
    """`text` with the Kaggle secrets the client loaded (`KaggleApi.config_values`: its key and token, from the
    environment, kaggle.json or a token file) replaced by ***, and the HTTP Basic credentials (base64 of USER:KEY)
    a client error might quote from its request headers."""
    import base64

    def as_text(value) -> str:  # a key saved in kaggle.json as a JSON number too
        return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""

    user, key = as_text(config.get("username")), as_text(config.get("key"))
    secrets = [base64.b64encode(f"{user}:{key}".encode()).decode()] if user and len(key) >= 4 else []
    secrets += [s for s in (as_text(config.get(k)) for k in ("key", "token", "api_token")) if len(s) >= 4]
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def write_digits(out: Path) -> None:
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
    with staged_dir(out) as tmp:
        for split, ids in (("train", train), ("test", test)):
            for i in sorted(ids):
                label = int(digits.target[i])
                folder = tmp / "train" / str(label) if split == "train" else tmp / "test"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels[i]).save(folder / f"{label}_{i:04d}.png")
                os.utime(folder / f"{label}_{i:04d}.png", (DIGITS_MTIME, DIGITS_MTIME))
