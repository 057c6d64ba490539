"""How each remote source scheme fills its cache folder `out`: a URL archive, a Kaggle dataset, sklearn's digits.

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

from .archives import safe_extract
from .errors import PipelineError
from .workspace import staged_dir

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


def fetch_kaggle(slug: str, out: Path, log) -> None:
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
