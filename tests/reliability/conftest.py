"""Helpers for the reliability tests: tiny projects, the fast baseline recipe, subprocess runs, byte snapshots."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.conftest import pipeline_cmd, subprocess_env, toml_value

# tests/test_stages.py's fast baseline: a from-scratch logistic regression on 16px images
BASELINE = {"arch": "logreg", "pretrained": False, "method": "fit_one_cycle", "base_lr": 0.01, "epochs": 2,
            "batch_size": 8, "image_size": 16}


def write_config(project: Path, source: str, name: str = "r", train: dict | None = None,
                 test_sets: list[dict] = (), **sections) -> Path:
    """project/pipeline.toml for run `name` on `source`; `sections` adds tables, e.g. datablock={"valid_pct": .25}."""
    tables = {"run": {"name": name}, "download": {"source": source}, **sections, "train": {**BASELINE, **(train or {})}}
    lines = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    for t in test_sets:
        lines.append("[[evaluate.test_sets]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in t.items()]
    project.mkdir(parents=True, exist_ok=True)
    (project / "pipeline.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return project


def env(**extra) -> dict:
    e = subprocess_env()
    e.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1"})
    e.update(extra)
    return e


def cli(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` in `project`, captured."""
    return subprocess.run(pipeline_cmd(*args), cwd=project, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def start(project: Path, *args: str) -> subprocess.Popen:
    """`python -m pipeline ARGS` in `project`, running in the background (output to files in project/)."""
    return subprocess.Popen(pipeline_cmd(*args), cwd=project, env=env(), stdout=open(project / "bg.out", "w"),
                            stderr=open(project / "bg.err", "w"))


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 120, every: float = 0.005):
    """Poll `predicate()` until it returns something truthy; fail if `proc` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before the moment to interrupt it")
        time.sleep(every)
    raise AssertionError("timed out waiting for the run to reach the moment to interrupt it")


def snapshot(root: Path, *names: str) -> dict[str, bytes]:
    """{relative path: bytes} of the files `names` (globs) under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for n in names for p in sorted(root.glob(n))}


def leftovers(root: Path) -> list[str]:
    """Temp files and folders a killed write can leave: `.NAME.PID.XXXX.tmp`, `.part`, `.KEY.tmpXXXX/`."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.name.endswith((".tmp", ".part")) or ".tmp" in p.name and p.name.startswith("."))


def kill_hard(proc: subprocess.Popen) -> None:
    """SIGKILL: no handler, no cleanup, as a power cut or the OOM killer would stop the run."""
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -9, proc.returncode
    os.sync()
