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


def test_an_export_pickled_before_the_layout_move_still_loads(tmp_path):
    """Landmark exports made before pipeline/'s modules moved into subpackages name `pipeline.hand_model` (and
    `pipeline.training`, ...): `pipeline._OldNames` answers those names, so such a .pkl loads in a fresh process."""
    import zipfile

    from pipeline.models import hand_model, training

    learn, *_ = synthetic_landmark_learner(tmp_path)
    training.strip_for_export(learn)
    # what the export named before the move: the classes' and functions' __module__ at pickling time
    moved = [(o, o.__module__) for m in (hand_model, training) for o in vars(m).values()
             if getattr(o, "__module__", None) == m.__name__]
    for o, name in moved:
        o.__module__ = name.replace("pipeline.models.", "pipeline.")
    for m in ("pipeline.hand_model", "pipeline.training"):  # imported, so cloudpickle names them (by reference)
        importlib.import_module(m)
    try:
        learn.export(tmp_path / "old.pkl")
    finally:
        for o, name in moved:
            o.__module__ = name
    with zipfile.ZipFile(tmp_path / "old.pkl") as z:
        pickled = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"pipeline.hand_model" in pickled and b"pipeline.models" not in pickled
    code = ("import sys; from fastai.learner import load_learner; learn = load_learner(sys.argv[1]); "
            "from pipeline.models import hand_model; print(type(learn) is hand_model.HandLearner, list(learn.dls.vocab))")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "old.pkl")], capture_output=True, text=True,
                       env=subprocess_env(), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "True ['A', 'B', 'C', 'nothing']"
