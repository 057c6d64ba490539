"""A training run killed with SIGKILL mid-way resumes from its last completed epoch on the next run."""
import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from tests.conftest import make_image_folder, pipeline_cmd, subprocess_env, tiny_config


@pytest.mark.slow
def test_status_says_whether_run_resumes_or_starts_over(tmp_path):
    """A checkpoint left by a stopped train: `status` says the next `run` resumes from it when it was written under
    train's current fingerprint, and that it starts over when not."""
    from pipeline import runner
    from pipeline.core.workspace import Workspace

    cfg = tiny_config(tmp_path, {"run.name": "r"})
    ws = Workspace.from_config(cfg)
    ckpt = ws.checkpoints("train") / "checkpoint.json"
    ckpt.parent.mkdir(parents=True)
    state = {"phase": 1, "done": 1, "epochs_done": 2, "epochs_total": 5}
    ckpt.write_text(json.dumps({**state, "key": runner.fingerprint(cfg, ws, runner.BY_NAME["train"]).digest}))
    assert dict(runner.status(cfg))["train"] == "interrupted after epoch 2 of 5; `run` resumes from there"
    ckpt.write_text(json.dumps({**state, "key": "another config's"}))
    assert dict(runner.status(cfg))["train"] == ("never run; its checkpoint after epoch 2 of 5 is for other settings: "
                                                 "`run` starts over")
    ckpt.unlink()
    assert dict(runner.status(cfg))["train"] == "never run"


@pytest.mark.slow
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
    state = json.loads(ckpt.read_text())
    done, rows_before = state["done"], state["rows"]
    assert 3 <= done < 40 and len(rows_before) == done
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
    history = pd.read_csv(tmp_path / "runs/r/train/history.csv", float_precision="round_trip")
    assert list(history["epoch"]) == list(range(40))     # the whole history, earlier epochs included
    # only the remaining epochs ran: the epochs before the kill are the checkpoint's rows as they were (their own
    # timings), not epochs trained again (the log is not counted: a slow machine adds progress lines to it)
    kept = history.iloc[:done].to_dict("records")
    assert [{k: row[k] for k in before} for row, before in zip(kept, rows_before)] == rows_before
    assert (tmp_path / "exports/r.pkl").exists() and not ckpt.exists()
    assert (tmp_path / "runs/r/train/manifest.json").exists()


def _metric_columns(history):
    return history[[c for c in history.columns if c not in ("phase",) and not c.endswith("seconds")]]


@pytest.mark.slow
def test_killed_fine_tune_resumes_to_the_uninterrupted_result(tmp_path):
    """fine_tune (1 frozen + 3 unfrozen epochs) killed once its first epoch's checkpoint exists: `status` says where
    it stopped, the rerun trains only the remaining epochs, in the right phase, and ends with the very history and
    metrics of a run that was never interrupted (same seed, one thread: the checkpoint holds the optimizer and every
    random state). The checkpoint is gone once train commits."""
    import importlib.util

    data = make_image_folder(tmp_path / "imgs", classes=("A", "B", "C"), per_class=40, size=16)
    # a small lr: the losses stay far from 0, so a resumed run that shuffled or dropped out otherwise would show
    track = importlib.util.find_spec("tensorboard") is not None
    overrides = {"run.name": "r", "download.source": f"path:{data}", "download.subdir": "", "train.arch": "mlp",
                 "train.method": "fine_tune", "train.freeze_epochs": 1, "train.epochs": 3, "train.base_lr": 1e-4,
                 "train.batch_size": 4}
    stages = ["--stages", "download,datablock,train"]
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for project in (straight, killed):
        project.mkdir()
        tiny_config(project, {**overrides, **({"run.track": "tensorboard"} if track and project == killed else {})})
    done = subprocess.run(pipeline_cmd("run", *stages), cwd=straight, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

    ckpt = killed / "runs/r/_scratch/train/checkpoint.json"
    proc = subprocess.Popen(pipeline_cmd("run", *stages), cwd=killed, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not ckpt.exists():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "training finished or failed before its first checkpoint"
    stopped = json.loads(ckpt.read_text())
    assert 1 <= stopped["epochs_done"] < 4 and stopped["epochs_total"] == 4
    assert not (killed / "runs/r/train/manifest.json").exists()

    status = subprocess.run(pipeline_cmd("status"), cwd=killed, env=env, capture_output=True, text=True).stdout
    assert (f"train      interrupted after epoch {stopped['epochs_done']} of 4; `run` resumes from there"
            in status.splitlines()), status

    again = subprocess.run(pipeline_cmd("run", *stages), cwd=killed, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    (resumed,) = [line for line in again.stdout.splitlines() if "resuming from the checkpoint" in line]
    after = int(resumed.split("after epoch ")[1].split()[0])
    assert after >= stopped["epochs_done"]
    # after epoch 1 it stands at the end of the frozen phase, after a later one inside the unfrozen phase
    assert f"({'frozen' if after == 1 else 'unfrozen'} phase" in resumed
    # an epoch's own line carries its metrics; a progress line ("epoch 3 (unfrozen): 12/53 batches"), which a slow
    # machine prints too, does not
    ended = [line for line in again.stdout.splitlines() if line.startswith("[train] epoch ") and "train_loss" in line]
    assert [line.split()[2] for line in ended] == [str(e) for e in range(after + 1, 5)]  # only the remaining epochs
    assert all("(unfrozen)" in line for line in ended)

    a = pd.read_csv(straight / "runs/r/train/history.csv")
    b = pd.read_csv(killed / "runs/r/train/history.csv")
    assert list(b["phase"]) == ["frozen", "unfrozen", "unfrozen", "unfrozen"] == list(a["phase"])
    pd.testing.assert_frame_equal(_metric_columns(a), _metric_columns(b), check_exact=True)
    ma = json.loads((straight / "runs/r/train/metrics.json").read_text())
    mb = json.loads((killed / "runs/r/train/metrics.json").read_text())
    assert (ma["valid_loss"], ma["valid_accuracy"]) == (mb["valid_loss"], mb["valid_accuracy"])
    assert not (killed / "runs/r/_scratch/train").exists() and (killed / "exports/r.pkl").exists()
    if track:  # the tracker holds each epoch once, as history.csv has it, across the killed and the resumed process
        from tests.helpers import read_run

        (folder,) = (killed / "runs/r/tracking").glob("train-*")
        scalars, _ = read_run(folder)
        assert scalars["valid_loss"] == pytest.approx(dict(zip(b["epoch"] + 1, b["valid_loss"])))
