"""A training run killed with SIGKILL mid-way resumes from its last completed epoch on the next run."""
import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from tests.conftest import make_image_folder, pipeline_cmd, subprocess_env, tiny_config

pytestmark = pytest.mark.slow


def test_sigkill_during_training_resumes_from_last_epoch(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B", "C"), per_class=40, size=16)
    tiny_config(tmp_path, {"run.name": "r", "download.source": f"path:{data}", "download.subdir": "",
                           "train.arch": "mlp", "train.base_lr": 1e-3, "train.epochs": 40, "train.batch_size": 4})
    stages = ["--stages", "download,datablock,train"]
    ckpt = tmp_path / "runs/r/_scratch/train/checkpoint.json"
    proc = subprocess.Popen(pipeline_cmd("run", *stages), cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and json.loads(ckpt.read_text() or "{}").get("done", 0) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = json.loads(ckpt.read_text())["done"]
    assert 3 <= done < 40
    assert not (tmp_path / "runs/r/train/manifest.json").exists()
    assert not (tmp_path / "exports/r.pkl").exists()

    again = subprocess.run(pipeline_cmd("run", *stages), cwd=tmp_path, env=subprocess_env(),
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "[download] up to date, skipped" in again.stdout and "[datablock] up to date, skipped" in again.stdout
    resumed = [line for line in again.stdout.splitlines() if "resuming from the checkpoint" in line]
    assert resumed, again.stdout
    first_epoch = int(resumed[0].split("after epoch ")[1].split()[0])
    assert first_epoch >= done
    epoch_lines = [line for line in again.stdout.splitlines() if line.startswith("[train] epoch ")]
    assert len(epoch_lines) == 40 - first_epoch          # only the remaining epochs ran
    history = pd.read_csv(tmp_path / "runs/r/train/history.csv")
    assert list(history["epoch"]) == list(range(40))     # the whole history, earlier epochs included
    assert (tmp_path / "exports/r.pkl").exists() and not ckpt.exists()
    assert (tmp_path / "runs/r/train/manifest.json").exists()
