"""Credentials never reach logs, artifacts, model cards, saved configs or error messages.

A full tiny run downloads its training set from a local Kaggle stand-in with a planted KAGGLE_KEY, then the whole
project folder (runs/, exports/, the data/ cache) and everything printed are searched for the key."""
from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import pytest

from pipeline import config, runner
from pipeline.core.errors import PipelineError
from pipeline.data import sources
from tests.conftest import make_image_folder, payload_server
from tests.kaggle_standin import KaggleStandin
from tests.reliability.conftest import write_config

USER, KEY = "signer", "planted-Kaggle-KEY-5f3a9c0e1d"
BASIC = base64.b64encode(f"{USER}:{KEY}".encode()).decode()


def class_zip(tmp_path: Path) -> bytes:
    imgs = make_image_folder(tmp_path / "zipsrc", classes=("A", "B", "C"), per_class=16)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(imgs.rglob("*.png")):
            zf.write(p, f"signs/{p.relative_to(imgs).as_posix()}")
    return buf.getvalue()


def files_holding(root: Path, *secrets: str) -> list[str]:
    """Every file under `root` whose bytes contain one of `secrets` (the cache, the pickled learner, plots, …)."""
    needles = [s.encode() for s in secrets]
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and any(n in p.read_bytes() for n in needles))


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    kaggle_env = pytest.importorskip("kagglesdk.kaggle_env")
    home = tmp_path / "home"
    (home / "kaggle_cfg").mkdir(parents=True)
    for k, v in {"HOME": str(home), "KAGGLE_CONFIG_DIR": str(home / "kaggle_cfg"), "KAGGLE_API_ENVIRONMENT": "TEST",
                 "KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    with KaggleStandin({"signer/tiny-signs": class_zip(tmp_path)}, USER, KEY) as standin:
        for e in kaggle_env.KaggleEnv:  # see tests/test_sources.py: every environment points at the stand-in
            monkeypatch.setitem(kaggle_env._env_to_endpoint, e, standin.url)
        yield standin


@pytest.mark.slow
def test_full_run_never_writes_or_prints_the_kaggle_key(tmp_path, kaggle, capfd):
    test = make_image_folder(tmp_path / "test", classes=("A", "B", "C"), per_class=3, seed=4)
    project = write_config(tmp_path / "proj", "kaggle:signer/tiny-signs", lr_find={"num_it": 12},
                           test_sets=[{"name": "t", "source": f"path:{test}"}])
    cfg = config.load(None, cwd=project)
    assert runner.run(cfg, list(runner.STAGE_NAMES)) == {s: "ran" for s in runner.STAGE_NAMES}
    assert ("GET", "/blobs/signer/tiny-signs.zip") in kaggle.requests   # the key really was used
    for s in runner.STAGE_NAMES:
        assert (project / f"runs/r/{s}/manifest.json").is_file()
    assert (project / "exports/r.pkl").is_file() and (project / "exports/r.json").is_file()
    assert (project / "runs/r/config.json").is_file()
    assert files_holding(project, KEY, BASIC) == []
    out, err = capfd.readouterr()
    assert KEY not in out + err and BASIC not in out + err
    assert "[evaluate] t: accuracy" in out


def test_kaggle_client_errors_quoting_the_key_are_redacted(tmp_path, kaggle, monkeypatch):
    from kaggle.api.kaggle_api_extended import KaggleApi

    def leaky(self, *a, **k):
        raise RuntimeError(f"401 for request with headers {{'Authorization': 'Basic {BASIC}'}} (key {KEY})")

    monkeypatch.setattr(KaggleApi, "dataset_download_files", leaky)
    with pytest.raises(PipelineError) as err:
        sources.materialise("kaggle:signer/tiny-signs", tmp_path / "cache", log=lambda m: None)
    assert "Basic ***" in str(err.value) and KEY not in str(err.value) and BASIC not in str(err.value)


@pytest.mark.parametrize("stored", [f'"{KEY}"', "8675309123"])  # a key saved as a JSON number too
def test_kaggle_json_key_is_redacted_too(tmp_path, monkeypatch, stored):
    """The key the client read from kaggle.json, quoted by a client error, is redacted like one from the environment."""
    api = pytest.importorskip("kaggle.api.kaggle_api_extended")
    key = str(json.loads(stored))
    basic = base64.b64encode(f"{USER}:{key}".encode()).decode()
    cfg_dir = tmp_path / "kcfg"
    cfg_dir.mkdir()
    (cfg_dir / "kaggle.json").write_text(f'{{"username": "{USER}", "key": {stored}}}')
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(cfg_dir))
    for k in ("KAGGLE_KEY", "KAGGLE_USERNAME", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)

    def leaky(self, *a, **k):
        raise RuntimeError(f"401 for request with headers {{'Authorization': 'Basic {basic}'}} (key {key})")

    monkeypatch.setattr(api.KaggleApi, "dataset_download_files", leaky)
    with pytest.raises(PipelineError) as err:
        sources.materialise("kaggle:signer/tiny-signs", tmp_path / "cache", log=lambda m: None)
    assert "'Basic ***'} (key ***)" in str(err.value) and key not in str(err.value) and basic not in str(err.value)


@pytest.mark.parametrize("text, reason", [(f'{{"username": "u", "key": "{KEY}"', "JSONDecodeError"),
                                          (f'["u", "{KEY}"]', "not a JSON object")])  # the client fails on a list
def test_malformed_kaggle_json_is_named_as_malformed(tmp_path, monkeypatch, text, reason):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    for k in ("KAGGLE_KEY", "KAGGLE_USERNAME", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "kaggle.json").write_text(text)
    with pytest.raises(PipelineError) as err:
        sources.materialise("kaggle:a/b", tmp_path / "cache", log=lambda m: None)
    assert str(err.value).startswith(f"Kaggle credentials file {tmp_path / 'kaggle.json'} is malformed ({reason})")
    assert "\n" not in str(err.value) and KEY not in str(err.value)


# ------------------------------------------------------------------------------------------- url tokens

def test_url_token_stays_out_of_logs_cache_names_and_dataset_json(tmp_path, capfd):
    token = "sig-0123456789abcdef"
    payload = class_zip(tmp_path)

    found = lambda request: 200 if request.path.startswith("/signs.zip?") else 404  # noqa: E731
    with payload_server(payload, found) as base:
        project = write_config(tmp_path / "proj", f"url:{base}/signs.zip?X-Signature={token}")
        assert runner.run(config.load(None, cwd=project), ["download"]) == {"download": "ran"}
        with pytest.raises(PipelineError) as err:
            sources.materialise(f"url:{base}/gone.zip?X-Signature={token}", tmp_path / "c2", log=print)
    assert "404" in str(err.value) and token not in str(err.value)
    # the user's own pipeline.toml keeps the URL as given; everything this pipeline writes is redacted,
    # the resolved config copy runs/r/config.json included
    leaks = [f for f in files_holding(project, token) if f != "pipeline.toml"]
    assert leaks == [] and not [p for p in (project / "data").iterdir() if token in p.name]
    out, err_text = capfd.readouterr()
    assert token not in out + err_text
    assert "X-Signature=***" in (project / "runs/r/download/dataset.json").read_text()
    assert "X-Signature=***" in (project / "runs/r/config.json").read_text()


def test_url_password_is_sent_as_basic_auth_and_never_shown(tmp_path, capfd):
    """`url:https://USER:PASSWORD@host/x.zip`: urllib took the password for a port (an InvalidURL traceback quoting it
    twice); now it is sent as HTTP Basic auth, and a refusal or a malformed URL is one line with it redacted."""
    from tests.reliability.conftest import cli

    password, payload = "S3CRETPW", class_zip(tmp_path)
    good = "Basic " + base64.b64encode(f"bob:{password}".encode()).decode()

    authorised = lambda request: 200 if request.headers.get("Authorization") == good else 401  # noqa: E731
    with payload_server(payload, authorised) as base:
        port = base.rsplit(":", 1)[1]
        project = write_config(tmp_path / "proj", f"url:http://bob:{password}@127.0.0.1:{port}/signs.zip")
        ok = cli(project, "run", "--stages", "download")
        wrong = cli(project, "run", "--stages", "download", "--set",
                    f"download.source=url:http://bob:wrong{password}@127.0.0.1:{port}/signs.zip")
        malformed = cli(project, "run", "--stages", "download", "--set",
                        f"download.source=url:http://bob:{password}@127.0.0.1:notaport/signs.zip")
    assert ok.returncode == 0, ok.stderr
    assert "48 images in 3 classes" in ok.stdout
    assert wrong.returncode == 2 and wrong.stderr == (
        f"error: download failed: http://bob:***@127.0.0.1:{port}/signs.zip answered HTTP 401 Unauthorized\n")
    assert malformed.returncode == 2 and malformed.stderr == (
        "error: download failed: http://bob:***@127.0.0.1:notaport/signs.zip is not a valid URL\n")
    for p in (ok, wrong, malformed):
        assert password not in p.stdout + p.stderr and "Traceback" not in p.stderr
    assert [f for f in files_holding(project, password) if f != "pipeline.toml"] == []
