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
    assert f"[train] running (interrupted after epoch {done} of 40; `run` resumes from there)" in again.stdout  # as
    # `status` says it (it logged "running (never run)")
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


def _checkpoint(folder, key="k", **state):
    """A checkpoint folder as `Checkpoint` writes it (weights file and checkpoint.json) for a two-weight model."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    state = {"key": key, "phase": 0, "phase_name": "fit", "done": 2, "phase_epochs": 5, "epochs_done": 2,
             "epochs_total": 5, "rows": [{"epoch": 0, "valid_loss": 1.0}, {"epoch": 1, "valid_loss": 0.9}], **state}
    torch.save({"model": {"w": torch.zeros(2), "b": torch.zeros(1)}, "state": state}, folder / "checkpoint.pth")
    (folder / "checkpoint.json").write_text(json.dumps(state))
    return state


@pytest.mark.parametrize("mirror", [[1, 2], {"key": "k", "phase": 0, "done": 2, "rows": [1, 2]}, "text"])
def test_a_checkpoint_json_of_the_wrong_shape_is_not_resumed_from(tmp_path, mirror):
    """Valid JSON of another shape in checkpoint.json (it was an AttributeError on every rerun until _scratch/train
    was deleted): not a state to resume from; the weights file alone still resumes."""
    from pipeline.models import checkpoints

    _checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text(json.dumps(mirror))
    assert checkpoints.read_checkpoint(tmp_path, "k") is None
    blob = checkpoints.load(tmp_path, "k", "cpu", log=pytest.fail)
    assert blob["state"]["done"] == 2 and blob["state"]["rows"][1] == {"epoch": 1, "valid_loss": 0.9}


def test_a_checkpoint_state_of_the_wrong_shape_is_one_note_and_a_clean_restart(tmp_path):
    from pipeline.models import checkpoints

    _checkpoint(tmp_path, rows=[1, 2])
    said = []
    assert checkpoints.load(tmp_path, "k", "cpu", log=said.append) is None
    assert said == [f"note: cannot resume from {tmp_path / 'checkpoint.pth'} (rows is not a list of history rows): "
                    "starting over"]


@pytest.mark.parametrize("tracking", ["/tmp/elsewhere", "../../..", "train-1/../../x", "", 5])
def test_a_checkpoints_tracking_folder_must_be_a_name_in_the_runs_tracking_folder(tmp_path, tracking):
    """The TensorBoard folder a resumed train logs into comes from the checkpoint: an absolute path or `..` wrote
    outside the run folder. Only a plain folder name (under runs/<run>/tracking/) is taken."""
    from pipeline.models import checkpoints

    _checkpoint(tmp_path, tracking="train-20260101-000000-000000")
    assert checkpoints.read_checkpoint(tmp_path, "k")["tracking"] == "train-20260101-000000-000000"
    _checkpoint(tmp_path, tracking=tracking)
    assert checkpoints.read_checkpoint(tmp_path, "k") is None
    said = []
    assert checkpoints.load(tmp_path, "k", "cpu", log=said.append) is None
    assert len(said) == 1 and "is not the name of a folder in the run's tracking folder" in said[0]


@pytest.mark.parametrize("best", ["damaged", "foreign", "missing"])
def test_damaged_best_weights_are_found_when_resuming_not_after_training(tmp_path, best):
    """With train.patience a resumed fit ends on best.pth: a damaged or foreign one was an UnpicklingError or
    `Error(s) in loading state_dict` after the whole training, on every rerun. It is checked when resuming: one
    note, and the fit starts over."""
    import torch

    from pipeline.models import checkpoints

    _checkpoint(tmp_path, best={"best": 0.9, "epoch": 1, "wait": 1, "stopped": []})
    torch.save({"w": torch.ones(2), "b": torch.ones(1)}, tmp_path / "best.pth")
    assert checkpoints.load(tmp_path, "k", "cpu", log=pytest.fail)["state"]["best"]["epoch"] == 1
    if best == "damaged":
        (tmp_path / "best.pth").write_bytes((tmp_path / "best.pth").read_bytes()[:100])
    elif best == "foreign":
        torch.save({"w": torch.ones(3), "other": torch.ones(1)}, tmp_path / "best.pth")
    else:
        (tmp_path / "best.pth").unlink()
    said = []
    assert checkpoints.load(tmp_path, "k", "cpu", log=said.append) is None
    assert len(said) == 1 and said[0].startswith(f"note: cannot resume from {tmp_path / 'checkpoint.pth'} (best.pth")
    assert said[0].endswith("): starting over")
