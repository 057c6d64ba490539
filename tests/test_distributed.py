"""Data-parallel training for real: two CPU processes (gloo) launched by torchrun, as a user would launch them."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from pipeline.core import artifacts
from tests.conftest import REPO, pipeline_cmd, subprocess_env

pytestmark = pytest.mark.slow

SHORT = ["--set", "train.epochs=1", "--set", "train.freeze_epochs=0"]


def _env():
    env = subprocess_env()
    env["OMP_NUM_THREADS"] = "1"  # two processes on a 2-core machine: one thread each
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pipeline",
            *args]


def _run(cmd, cwd, timeout=900):
    p = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def _accuracy(project, run):
    return json.loads((project / "runs" / run / "evaluate" / "metrics.json").read_text())["digits_test"]["accuracy"]


def test_two_cpu_processes_train_once_and_export_a_plain_learner(tmp_path):
    cfg = ["--config", str(REPO / "configs" / "demo.toml")]
    # the single-process reference: batch 32; the distributed run: 16 per process, the same effective batch
    _run(pipeline_cmd("run", *cfg, *SHORT, "--set", "run.name=single", "--stages", "download,datablock,train,evaluate"),
         tmp_path)
    dist = ["--set", "run.name=dist", "--set", "train.batch_size=16"]
    _run(pipeline_cmd("run", *cfg, *dist, "--stages", "download,datablock"), tmp_path)
    out = _run(_torchrun("run", *cfg, *SHORT, *dist, "--stages", "train"), tmp_path)
    assert "[train] running (never run) on 2 processes" in out
    # rank 1 is silent and writes nothing: one of each line, one set of artifacts
    assert out.count("[train] exported") == 1 and out.count("[train] done in") == 1, out
    assert out.count("run dist: ran train") == 1
    run = tmp_path / "runs" / "dist"
    assert sorted(p.name for p in (run / "train").iterdir()) == [
        "classification_report.csv", "curves.png", "history.csv", "manifest.json", "metrics.json",
        "most_confused.csv", "predictions.csv", "top_losses.png"]  # the validation split's interpretation too
    assert not list(run.glob("_scratch/train/checkpoint*"))  # train removes its checkpoints once it completes
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    assert metrics["distributed"]["world_size"] == 2 and metrics["distributed"]["backend"] == "gloo"
    assert metrics["distributed"]["effective_batch_size"] == 32
    card = json.loads((tmp_path / "exports" / "dist.json").read_text())
    assert card["metrics"]["distributed"]["world_size"] == 2

    # the export is an ordinary single-process learner: fastai alone loads it, no DDP wrapper inside
    check = (
        "import sys, torch; from fastai.learner import load_learner\n"
        "learn = load_learner(sys.argv[1])\n"
        "assert not isinstance(learn.model, torch.nn.parallel.DistributedDataParallel)\n"
        "assert not any(k.startswith('module.') for k in learn.model.state_dict())\n"
        "assert not any('Distributed' in type(c).__name__ for c in learn.cbs)\n"
        "print(learn.predict(sys.argv[2])[0])\n")
    image = next((tmp_path / "data").glob("sklearn_digits*/test/*.png"))
    p = subprocess.run([sys.executable, "-I", "-c", check, str(tmp_path / "exports" / "dist.pkl"), str(image)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] in [str(d) for d in range(10)], p.stderr[-2000:]

    # its accuracy on the demo test set is in line with the single-process run's
    _run(pipeline_cmd("run", *cfg, *SHORT, *dist, "--stages", "evaluate"), tmp_path)
    single, distributed = _accuracy(tmp_path, "single"), _accuracy(tmp_path, "dist")
    assert distributed >= 0.5 and abs(distributed - single) <= 0.15, (single, distributed)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = open(f"/proc/{p}/task/{p}/children").read().split()
        except OSError:
            continue
        out += map(int, kids)
        todo += map(int, kids)
    return out


def _rank_of(pid: int) -> str | None:
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    ranks = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc to find the rank-1 process")
def test_killing_one_rank_fails_the_launch_and_records_nothing(tmp_path):
    cfg = ["--config", str(REPO / "configs" / "demo.toml"), "--set", "run.name=dist", "--set", "train.batch_size=16"]
    _run(pipeline_cmd("run", *cfg, "--stages", "download,datablock"), tmp_path)
    proc = subprocess.Popen(_torchrun("run", *cfg, "--set", "train.epochs=3", "--stages", "train"), cwd=tmp_path,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:  # wait until training has started on both ranks
            lines.append(line)
            if "training from the preprocessing cache" in line:
                break
        time.sleep(3)
        victims = [p for p in _descendants(proc.pid) if _rank_of(p) == "1"]
        assert victims, "".join(lines)
        os.kill(victims[0], signal.SIGKILL)
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode != 0, out
    # the launcher names the dead rank and its signal; rank 0 stops too
    assert "SIGKILL" in out or "Signal 9" in out, out[-3000:]
    assert "rank" in out.lower()
    # nothing a later run could take as complete
    run = tmp_path / "runs" / "dist"
    assert not (run / "train" / "manifest.json").exists()
    assert not (tmp_path / "exports" / "dist.pkl").exists()
    status = subprocess.run(pipeline_cmd("status", *cfg), cwd=tmp_path, env=_env(), capture_output=True, text=True)
    (train,) = [line for line in status.stdout.splitlines() if line.startswith("train ")]
    assert "up to date" not in train, status.stdout


@pytest.mark.shared_data
def test_two_ranks_share_the_hand_finding_and_write_the_table_one_process_writes(tmp_path, shared_data):
    """datablock's per-image work under torchrun: each of 2 gloo ranks finds the hands and crops of half the photos
    into the content stores, rank 0's datablock then finds every one there, and its tables are a single process's."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    from tests.conftest import asl_photos, tiny_config

    photos = {**asl_photos(shared_data, 1, "t"), "evaluate.test_sets": [], "datablock.input": "hand_crop",
              "train.arch": "hand_fused", "train.image_size": 32}
    tiny_config(tmp_path, {**photos, "run.name": "one", "run.data_dir": "data_one"})
    _run(pipeline_cmd("run", "--stages", "download,datablock"), tmp_path)
    tiny_config(tmp_path, {**photos, "run.name": "two", "run.data_dir": "data_two"})
    out = _run(_torchrun("run", "--stages", "download,datablock"), tmp_path)
    # 29 photos, one a class: 15 on rank 0, 14 on rank 1, then none left for rank 0's datablock to look at
    assert "[datablock] per-image work shared over 2 processes: rank 0 looked at 15 image(s), rank 1 looked at " \
           "14 image(s)" in out, out
    assert "29 of 29 images already in the detection store" in out and "finding hands in 29" not in out, out
    assert out.count("[datablock] done in") == 1
    for name in (artifacts.LANDMARKS, artifacts.NO_HAND, artifacts.SPLITS):
        one = pd.read_csv(tmp_path / "runs" / "one" / "datablock" / name, keep_default_na=False)
        two = pd.read_csv(tmp_path / "runs" / "two" / "datablock" / name, keep_default_na=False)
        pd.testing.assert_frame_equal(one, two, check_exact=False, atol=1e-6)
    assert len(pd.read_csv(tmp_path / "runs" / "two" / "datablock" / artifacts.NO_HAND)) >= 1  # `nothing` has no hand
