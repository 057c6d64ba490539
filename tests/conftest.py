"""Shared fixtures: the real data folder (skip when absent), tiny generated image datasets, and the real config
shrunk for tests."""
from __future__ import annotations

import json
import contextlib
import os
import shutil
import sys
import warnings
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one thread per worker, two workers on two cores
    os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402  (after the thread count: OpenBLAS reads it when numpy loads)
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (or $SHARED_DATA); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


def make_image_folder(root: Path, classes=("a", "b"), per_class: int = 6, size: int = 16, seed: int = 0) -> Path:
    """Write `per_class` distinct noisy PNGs for each class under root/<class>/; class k has a bright square in
    quadrant k % 4 (and a brighter frame for k >= 4), so even a linear model separates the classes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h = size // 2
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.random((size, size, 3)) * 60
            r, q = divmod(k % 4, 2)
            arr[r * h:(r + 1) * h, q * h:(q + 1) * h] += 180
            if k >= 4:
                arr[[0, -1], :] = arr[:, [0, -1]] = 255
            Image.fromarray(arr.clip(0, 255).astype("uint8")).save(root / c / f"{c}_{i}.png")
    return root


# configs/demo.toml made tiny: a from-scratch model, 16 px, one short epoch, a short lr_find, no test sets
SHRINK = {"run.name": "t", "datablock.cache": False, "lr_find.num_it": 8, "train.arch": "logreg",
          "train.pretrained": False, "train.method": "fit_one_cycle", "train.base_lr": 0.01, "train.epochs": 1,
          "train.freeze_epochs": 0, "train.batch_size": 8, "train.image_size": 16, "evaluate.test_sets": []}


def demo_toml() -> dict:
    """configs/demo.toml as parsed TOML (a test that puts back one of the values SHRINK replaces reads it here)."""
    from pipeline.config import tomllib

    return tomllib.loads((REPO / "configs" / "demo.toml").read_text())


def tiny_toml(overrides: dict | None = None) -> str:
    """The text of configs/demo.toml with SHRINK and then `overrides` ({"section.key": value}) applied: for a test
    that writes the config file itself (another name than pipeline.toml, several in one folder, a comment block)."""
    data = demo_toml()
    for key, value in {**SHRINK, **(overrides or {})}.items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    lines = []
    for section, table in data.items():
        lines += [f"[{section}]"] + [f"{key} = {toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def tiny_config(project: Path, overrides: dict | None = None):
    """`tiny_toml(overrides)` written to project/pipeline.toml (so `config.load(None, cwd=project)` and a
    `python -m pipeline` run there both use it); returns it loaded. A path source needs `"download.subdir": ""`
    (the demo's is "train")."""
    from pipeline import config

    (project / "pipeline.toml").write_text(tiny_toml(overrides))
    return config.load(None, cwd=project)


def asl_photos(data: Path, per_class: int, test_set: str) -> dict:
    """tiny_config overrides for a project on the real photos in `data` (../shared/data): `per_class` photos a
    letter of asl_alphabet_train_200, and the 28 photos of asl_alphabet_test (one for each class but del, labelled
    by their file names) as the test set `test_set`."""
    return {"download.source": f"path:{data / 'asl_alphabet_train_200'}", "download.subdir": "",
            "datablock.max_per_class": per_class,
            "evaluate.test_sets": [{"name": test_set, "source": f"path:{data / 'asl_alphabet_test'}",
                                    "label_regex": r"^([A-Za-z]+)_test\.jpg$"}]}


def toml_value(value) -> str:
    """A TOML literal for a config value (inline tables and arrays for the nested ones)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return json.dumps(value)  # numbers, and strings: a JSON string is a TOML basic string


def pipeline_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


@contextlib.contextmanager
def payload_server(payload: bytes | dict[str, bytes], status=lambda request: 200):
    """A local HTTP server (127.0.0.1 only) that answers a GET with `payload` when `status(request)` (the request
    handler: its path and headers) is 200, else with that error status; yields its base URL, then stops. `payload`
    may be a dict, request path (without its query) -> body: a path it lacks is answered 404."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = payload if isinstance(payload, bytes) else payload.get(self.path.partition("?")[0])
            code = status(self) if body is not None else 404
            if code != 200:
                return self.send_error(code)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def synthetic_landmark_learner(tmp_path: Path, features: str = "coords", n_hands: int = 150, n_nothing: int = 30,
                               valid_every: int = 5, overrides: tuple = ()):
    """An untrained hand-landmark learner (`models.make_learner`) over synthetic keypoints: three well-separated
    hand shapes A, B, C with small noise, and all-0 "nothing" rows (no hand); every `valid_every`-th row of each
    kind is validation. Returns (learner, config, split, features)."""
    from types import SimpleNamespace

    import pandas as pd

    from pipeline import config
    from pipeline.data import hands
    from pipeline.kinds.shared import model as shared_model
    from pipeline import kinds

    rng = np.random.default_rng(0)
    shapes = {c: (0.5 + np.random.default_rng(i).uniform(-0.2, 0.2, (21, 3))).astype(np.float32)
              for i, c in enumerate("ABC")}
    rows, split = [], []
    for i in range(n_hands):
        c = "ABC"[i % 3]
        rows.append(hands.canonical(shapes[c] + rng.normal(0, 0.01, (21, 3)), "Left"))
        split.append((f"{c}/{i}.jpg", c, i % valid_every == 0))
    for i in range(n_nothing):
        rows.append(np.zeros(64, np.float32))
        split.append((f"nothing/{i}.jpg", "nothing", i % valid_every == 0))
    split = pd.DataFrame(split, columns=["path", "label", "is_valid"])
    feats = pd.DataFrame(np.stack(rows), columns=hands.FEATURES)
    feats.insert(0, "path", split["path"])
    dls = shared_model.dataloaders(split, feats, ["A", "B", "C", "nothing"], batch_size=16)
    cfg = config.load(None, cwd=tmp_path, overrides=["datablock.input=landmarks", "train.arch=landmark_mlp",
                                                     "datablock.cache=false", "train.head_dropout=0.1",
                                                     f"train.landmark_features={features}", *overrides])
    return kinds.of(cfg).make_learner(dls, cfg, SimpleNamespace(scratch=tmp_path)), cfg, split, feats


# A real browser for the page tests: Debian's Chromium, driven by Playwright (`executable_path`).
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome") or ""


def needs_browser(test):
    """Skip `test`, naming what is missing, where Chromium or Playwright is absent (`.ci/run` installs both)."""
    import importlib.util

    test = pytest.mark.skipif(not BROWSER, reason="no Chromium browser found (chromium, chromium-browser or "
                                                  "google-chrome on PATH): apt-get install chromium")(test)
    return pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                              reason="playwright is not installed (the [test] extra)")(test)
