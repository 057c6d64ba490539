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
    from pipeline.models import hand_model, kinds

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
    dls = hand_model.dataloaders(split, feats, ["A", "B", "C", "nothing"], batch_size=16)
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


# --- Trained models: each recipe trained once per session, shared by every test (and xdist worker) that needs it ----

def training_fixture(*args, **kwargs):
    """`pytest.fixture(...)` for a fixture that trains a model or runs the pipeline's stages: every test that uses
    it, directly or through another fixture, is marked slow at collection (`pytest_collection_modifyitems`)."""
    def register(fn):
        fn.trains = True
        return pytest.fixture(*args, **kwargs)(fn)
    if len(args) == 1 and callable(args[0]) and not kwargs:  # bare @training_fixture
        return register(args[0])
    return register


def trains(item) -> bool:
    """Whether test `item` uses a training fixture, directly or through other fixtures."""
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(getattr(d.func, "trains", False) for chain in defs.values() for d in chain)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(config, items):
    """Mark slow every test that uses a training fixture (the house rule: a test that trains is slow)."""
    for item in items:
        if trains(item):
            item.add_marker(pytest.mark.slow)


def shared_tmp(tmp_path_factory) -> Path:
    """A folder every xdist worker of this session shares (the session's base temp folder without the worker's
    part); the session's own base folder when it runs in one process."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


TRAININGS_LOG = "trainings.log"  # one line per recipe trained in this session: the tests count them


class Trained:
    """Recipes trained on demand, once per session: `trained("name")` builds the project of recipe `name` (a
    function that fills an empty folder and runs the pipeline in it) under a file lock, in a folder every xdist
    worker shares, and returns it; the next call, from any test or worker, returns the same folder. A build that
    failed half-way is started again from an empty folder. Tests read these projects; a test that changes one
    copies it first (`shutil.copytree`)."""

    def __init__(self, root: Path):
        self.root = root

    def __call__(self, name: str) -> Path:
        from filelock import FileLock

        build = RECIPES[name]
        project = self.root / name
        with FileLock(str(self.root / f"{name}.lock")):
            if not (project / ".trained").exists():
                shutil.rmtree(project, ignore_errors=True)
                project.mkdir(parents=True)
                with open(self.root / TRAININGS_LOG, "a") as log:
                    log.write(f"{name} {os.getpid()}\n")
                build(project)
                (project / ".trained").write_text("")
        return project

    def copy(self, name: str, dest: Path) -> Path:
        """A copy of recipe `name`'s project at `dest`, for a test that changes it (reruns a stage, rewrites an
        export): the shared one stays as trained."""
        shutil.copytree(self(name), dest, symlinks=True)
        (dest / ".trained").unlink()
        return dest

    def count(self, name: str) -> int:
        """How many times recipe `name` was trained in this session (by every worker)."""
        log = self.root / TRAININGS_LOG
        return [line.split()[0] for line in log.read_text().splitlines()].count(name) if log.exists() else 0


@training_fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """The session's trained recipes (see `Trained`); a fixture that uses it is a training fixture."""
    root = shared_tmp(tmp_path_factory) / "trained"
    root.mkdir(exist_ok=True)
    return Trained(root)


def tiny_project(root: Path) -> Path:
    """Three generated classes (32 photos each at 16 px) plus what download must skip (a text file, a corrupt PNG,
    an empty JPEG, an empty class folder), and a test set `t` of 12 other photos labelled by a regex, plus one whose
    label the model does not know (Z) and one the regex does not match; the tiny config over it (run `tiny`, 4
    epochs, a short lr_find)."""
    train = make_image_folder(root / "train", classes=("A", "B", "C"), per_class=32, size=16)
    (train / "notes.txt").write_text("not an image")
    (train / "B" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)   # corrupt: excluded, listed
    (train / "C" / "empty.jpg").write_bytes(b"")                                    # zero bytes: excluded
    (train / "D").mkdir()                                                            # empty class folder: skipped
    test = root / "test"
    test.mkdir()
    src = make_image_folder(root / "tsrc", classes=("A", "B", "C"), per_class=4, size=16, seed=3)
    for i, f in enumerate(sorted(src.glob("*/*.png"))):
        shutil.copy(f, test / f"{f.parent.name.lower()}{i:03d}_test.png")
    shutil.copy(f, test / "z999_test.png")        # label Z: not in the model's vocab
    shutil.copy(f, test / "README.png")           # no regex match
    tiny_config(root, {"run.name": "tiny", "download.source": f"path:{train}", "download.subdir": "",
                       "datablock.valid_pct": 0.25, "lr_find.num_it": 12, "train.epochs": 4,
                       "evaluate.test_sets": [{"name": "t", "source": f"path:{test}",
                                               "label_regex": r"^([a-z])\d+_test\.png$", "uppercase": True}]})
    return root


def _tiny_run(project: Path) -> None:
    """`tiny_project` run through all five stages; what the run returned and printed are kept in project/run.json
    and project/run.log."""
    import io

    from pipeline import config, runner

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = runner.run(config.load(None, cwd=tiny_project(project)), list(runner.STAGE_NAMES))
    (project / "run.json").write_text(json.dumps(result))
    (project / "run.log").write_text(printed.getvalue())


RECIPES = {  # recipe name -> build(project), which fills the empty folder `project`
    "tiny_run": _tiny_run,
}
