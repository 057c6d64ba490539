"""The package as a user installs it: entry-point names, Python 3.10 syntax, and a wheel that runs outside the repo."""
import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from pipeline.config import tomllib

from pipeline import cli
from pipeline.core import artifacts
from tests.conftest import REPO, pipeline_cmd, subprocess_env, synthetic_landmark_learner

# pyenv's shims answer `which` even where 3.10 is not selected, so its own install comes first
PY310 = next(iter(Path.home().glob(".pyenv/versions/3.10*/bin/python3.10")), None) or shutil.which("python3.10")


def test_help_names_the_command_that_was_typed(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])  # what the `signpipe` script calls
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: signpipe ")
    p = subprocess.run(pipeline_cmd("--help"), env=subprocess_env(), capture_output=True, text=True, check=True)
    assert p.stdout.startswith("usage: python -m pipeline ")


def test_compare_is_a_subcommand_with_its_own_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: signpipe compare ") and "--out OUT" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", "configs/demo.toml"])  # --out is required: argparse's usage error, exit 2
    assert e.value.code == 2 and "--out" in capsys.readouterr().err


def test_declared_dependencies_cover_every_import():
    """Every third-party module that pipeline/ or stages/ imports comes from a distribution pyproject names
    (a wheel installed elsewhere gets only those), including the optional `hands` extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {_norm(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in reqs}
    imported = set()
    for f in [*(REPO / "pipeline").rglob("*.py"), *(REPO / "stages").glob("*.py")]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.partition(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.partition(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"pipeline", "stages"}
    dists = importlib.metadata.packages_distributions()
    undeclared = {m: dists.get(m, [m]) for m in third_party if not {_norm(d) for d in dists.get(m, [m])} & declared}
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"


def test_pyproject_lists_every_package():
    """The wheel carries the packages pyproject names: each folder of pipeline/ with an __init__.py is one."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(f.parent.relative_to(REPO).parts) for d in ("pipeline", "stages")
             for f in (REPO / d).rglob("__init__.py")}
    assert found <= listed, f"add to pyproject's [tool.setuptools] packages: {sorted(found - listed)}"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.skipif(PY310 is None, reason="no python3.10 on this machine")
def test_every_module_compiles_on_python_3_10():
    """pyproject admits 3.10 (tomli stands in for tomllib there): no 3.11-only syntax may creep in."""
    files = [str(f) for d in ("pipeline", "stages") for f in sorted((REPO / d).rglob("*.py"))]
    code = "import sys, py_compile\nfor f in sys.argv[1:]: py_compile.compile(f, cfile=f + '.310', doraise=True)"
    try:
        subprocess.run([str(PY310), "-c", code, *files], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        raise AssertionError(e.stderr) from None
    finally:
        for f in files:
            Path(f + ".310").unlink(missing_ok=True)


@pytest.mark.slow
def test_wheel_installed_outside_the_repo_runs_the_demo(tmp_path):
    """Build the wheel from a copy of the sources, install it (without dependencies) into a fresh venv, and run
    `signpipe` from an empty folder: status, then the demo's download and datablock stages.

    The venv reaches the heavy dependencies (torch, fastai, ...) through a .pth line naming this interpreter's
    site-packages, which adds that folder to sys.path without running its own .pth files, so the project's
    editable install stays inactive. What this proves: the wheel holds every module, the embedded demo config and
    a working `signpipe` script, and nothing reaches back into the repo. What it does not: that pip resolves the
    declared dependencies (test_declared_dependencies_cover_every_import checks the list itself).
    """
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("pipeline", "stages", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("signpipe-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(pip + ["--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], check=True, capture_output=True, text=True).stdout.strip())
    (site / "_signpipe_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONWARNINGS": "ignore"}

    def signpipe(*args):
        p = subprocess.run([str(venv / "bin" / "signpipe"), *args], cwd=empty, env=env, capture_output=True, text=True)
        assert p.returncode == 0, f"signpipe {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pipeline.config as c, stages; "
                            "print(c.__file__, stages.__file__, c.demo_config(), sep='\\n')"],
                           cwd=empty, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert all(Path(p).is_relative_to(site) for p in where), where
    assert signpipe("--help").startswith("usage: signpipe ")
    status = signpipe("status").splitlines()
    assert status[0] == f"config {(site / 'pipeline' / 'configs' / 'demo.toml').resolve()}", status
    assert " ".join(status[2:]).split() == ["download", "never", "run", "datablock", "never", "run", "lr_find",
                                            "never", "run", "train", "never", "run", "evaluate", "never", "run"]
    out = signpipe("run", "--stages", "download,datablock")
    assert "ran download, datablock" in out, out
    assert (empty / "runs/demo/download" / artifacts.DATASET).is_file()
    assert (empty / "runs/demo/datablock" / artifacts.SPLITS).is_file()


# Where each class an export pickles lived at 7ffad77 (before each kind had its package): what an export made then
# names, and what `pipeline._OldNames` must answer (the flat layout's `pipeline.hand_model` before that too).
OLD_HOMES = {"pipeline.kinds.landmarks.model": "pipeline.models.hand_model",
             "pipeline.kinds.shared.model": "pipeline.models.hand_model",
             "pipeline.kinds.hand_crop.model": "pipeline.models.crop_model",
             "pipeline.kinds.hand_fused.model": "pipeline.models.fused_model",
             "pipeline.kinds.hand_net.model": "pipeline.models.hand_net_model"}


def _one_of_each_kind(tmp_path: Path) -> dict:
    """name -> (an untrained learner of that kind, inputs for its model): every kind whose export pickles classes of
    this package, built without MediaPipe, LiteRT or a download (an image export names none of them)."""
    import numpy as np
    import pandas as pd
    import torch
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.data.transforms import Pipeline
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.vision.all import CategoryBlock, ColReader, ColSplitter, DataBlock, ImageBlock
    from PIL import Image
    from torch import nn

    from pipeline.data import hands
    from pipeline.kinds.hand_crop.data import png
    from pipeline.kinds.hand_crop.model import CropReader
    from pipeline.kinds.hand_fused.model import FusedLearner, FusedNet, PhotoDls, head_params
    from pipeline.kinds.hand_net import data as hand_net
    from pipeline.kinds.hand_net.model import HandNetLateModel, HandNetLearner, HandNetModel
    from pipeline.kinds.shared import model as shared_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    out = {}
    learn, _, split, feats = synthetic_landmark_learner(tmp_path, "coords+shape", n_hands=30, n_nothing=5)
    rows = torch.tensor(feats[hands.FEATURES].to_numpy(np.float32)[:8])
    out["landmarks"] = (learn, (torch.zeros(8, 0, dtype=torch.long), rows))
    emb = pd.DataFrame(rng.normal(size=(len(feats), hand_net.N_EMB)).astype(np.float32),
                       columns=hand_net.COLUMNS[len(hands.FEATURES):])
    table = pd.concat([feats, emb], axis=1)
    dls = shared_model.dataloaders(split, table, sorted(set(split["label"])), 8, hand_net.COLUMNS)
    wide = torch.tensor(table[hand_net.COLUMNS].to_numpy(np.float32)[:8])
    for name, model in (("hand_net", HandNetModel(4, [16], 0.0)), ("late_fusion", HandNetLateModel(4, [16], 0.0))):
        out[name] = (HandNetLearner(dls, model, loss_func=CrossEntropyLossFlat(), path=tmp_path),
                     (torch.zeros(8, 0, dtype=torch.long), wide))
    df = pd.DataFrame({"file": [f"{i}.jpg" for i in range(8)], "label": ["A", "B"] * 4,
                       "is_valid": [False] * 6 + [True] * 2})
    crops = {f: png(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))) for f in df["file"]}
    block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=["A", "B"])), get_x=CropReader(16, crops),
                      get_y=ColReader("label"), splitter=ColSplitter("is_valid"))
    tiny = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    out["hand_crop"] = (Learner(block.dataloaders(df, bs=4, num_workers=0), tiny, loss_func=CrossEntropyLossFlat(),
                                path=tmp_path), (torch.rand(2, 3, 16, 16),))
    items = [(torch.rand(3), torch.rand(64), i % 2) for i in range(8)]
    dls = DataLoaders(DataLoader(items[:6], bs=2, after_batch=Pipeline([])),
                      DataLoader(items[6:], bs=2, after_batch=Pipeline([])), path=tmp_path)
    model = FusedNet(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 3, True, 2, 0.0)
    fused = FusedLearner(dls, model, splitter=head_params, loss_func=CrossEntropyLossFlat(), path=tmp_path)
    fused.photo, fused.embedding_key = PhotoDls(["A", "B"], 16, [0.5] * 3, [0.5] * 3, True), {}
    out["hand_fused"] = (fused, (torch.rand(2, 3, 16, 16), torch.rand(2, 64)))
    return out


def _export_under(learn, path: Path, homes: dict) -> bytes:
    """Export `learn` to `path` with each class of the modules in `homes` pickled under the module it maps to (as an
    export made where those classes lived there names them); the pickle's bytes."""
    import zipfile

    moved = [(o, o.__module__) for m in homes for o in vars(importlib.import_module(m)).values()
             if callable(o) and getattr(o, "__module__", None) == m]
    for old in set(homes.values()):
        importlib.import_module(old)  # `_OldNames`' answer: pickle checks that the name finds the class itself
    for o, name in moved:
        o.__module__ = homes[name]
    try:
        learn.export(path)
    finally:
        for o, name in moved:
            o.__module__ = name
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


_SAME = """import sys, torch
from fastai.learner import load_learner
folder = sys.argv[1]
for name in sys.argv[2:]:
    new, old = load_learner(f"{folder}/{name}.pkl"), load_learner(f"{folder}/{name}-old.pkl")
    inputs = torch.load(f"{folder}/{name}.pt")
    new.model.eval(); old.model.eval()
    with torch.no_grad():
        a, b = new.model(*inputs), old.model(*inputs)
    same = type(new) is type(old) and type(new.model) is type(old.model) and torch.allclose(a, b)
    print(name, type(old.model).__module__, same, a.argmax(1).tolist() == b.argmax(1).tolist())
"""


def test_exports_naming_the_modules_of_7ffad77_still_load_and_answer_alike(tmp_path):
    """A fresh export of every kind whose class paths are those of 7ffad77 (`pipeline.models.hand_model`,
    `crop_model`, `fused_model`, `hand_net_model`) loads in a fresh process, as the same classes, and gives the same
    labels and probabilities as the export naming the kinds' packages; so does a landmark export naming the flat
    layout's `pipeline.hand_model`."""
    import torch

    learners = _one_of_each_kind(tmp_path)
    for name, (learn, inputs) in learners.items():
        learn.export(tmp_path / f"{name}.pkl")
        pickled = _export_under(learn, tmp_path / f"{name}-old.pkl", OLD_HOMES)
        assert b"pipeline.models." in pickled and b"pipeline.kinds" not in pickled, name
        torch.save(inputs, tmp_path / f"{name}.pt")
    flat = {m: "pipeline.hand_model" for m in ("pipeline.kinds.landmarks.model", "pipeline.kinds.shared.model")}
    assert b"pipeline.hand_model" in _export_under(learners["landmarks"][0], tmp_path / "flat-old.pkl", flat)
    (tmp_path / "flat.pkl").write_bytes((tmp_path / "landmarks.pkl").read_bytes())
    torch.save(learners["landmarks"][1], tmp_path / "flat.pt")
    p = subprocess.run([sys.executable, "-c", _SAME, str(tmp_path), *learners, "flat"], capture_output=True,
                       text=True, env=subprocess_env(), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    model_home = {"landmarks": "pipeline.kinds.shared.model", "hand_net": "pipeline.kinds.hand_net.model",
                  "late_fusion": "pipeline.kinds.hand_net.model", "hand_crop": "torch.nn.modules.container",
                  "hand_fused": "pipeline.kinds.hand_fused.model", "flat": "pipeline.kinds.shared.model"}
    assert sorted(p.stdout.splitlines()) == sorted(f"{n} {h} True True" for n, h in model_home.items())
