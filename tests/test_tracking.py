"""run.track = "tensorboard": train's per-epoch history, its params and final metrics, and evaluate's figures land
as TensorBoard event files under runs/<run>/tracking/, read back here with TensorBoard's own reader."""
import json

import pandas as pd
import pytest

from pipeline import config, runner
from pipeline.core import tracking
from pipeline.core.errors import PipelineError
from tests.conftest import make_image_folder, tiny_config
from tests.helpers import multi_config, read_run, three_sources  # noqa: F401  (three_sources: the fixture, for crossval)

pytest.importorskip("tensorboard", reason="the [track] extra is not installed")  # scripts/setup.sh installs it


def test_track_is_off_by_default_and_checked():
    assert config.Config().run.track == "none"
    with pytest.raises(PipelineError, match="run.track must be none or tensorboard"):
        tracking.check("mlflow")


def test_log_row_writes_one_run_per_row(tmp_path):
    assert tracking.log_row("none", tmp_path, "x", {"a": 1}, {"acc": 0.5}) is None
    assert not (tmp_path / "tracking").exists()
    folder = tracking.log_row("tensorboard", tmp_path, "crossval-1/massey_hand1", {"held_out": "massey/hand1"},
                              {"accuracy": 0.75, "images": 4, "worst": "A 0%"})
    assert folder == tmp_path / "tracking" / "crossval-1" / "massey_hand1"
    scalars, hparams = read_run(folder)
    assert scalars == {"accuracy": {0: 0.75}, "images": {0: 4.0}} and hparams == {"held_out": "massey/hand1"}


@pytest.mark.slow
def test_train_and_evaluate_are_tracked(tmp_path):
    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=8, size=16)
    cfg = tiny_config(tmp_path, {"run.name": "tb", "run.track": "tensorboard", "download.source": f"path:{src}",
                                 "download.subdir": "", "train.arch": "mlp", "train.epochs": 3,
                                 "evaluate.test_sets": [{"name": "same", "source": f"path:{src}"}]})
    runner.run(cfg, ["download", "datablock", "train", "evaluate"])
    runs = sorted(p.name.split("-")[0] for p in (tmp_path / "runs/tb/tracking").iterdir())
    assert runs == ["evaluate", "train"]
    (train_run,) = (tmp_path / "runs/tb/tracking").glob("train-*")
    scalars, hparams = read_run(train_run)
    history = pd.read_csv(tmp_path / "runs/tb/train/history.csv")
    assert len(history) == 3
    for column in ("train_loss", "valid_loss", "valid_accuracy", "train_accuracy", "valid_error_rate"):
        assert scalars[column] == pytest.approx({e + 1: v for e, v in zip(history["epoch"], history[column])})
    metrics = json.loads((tmp_path / "runs/tb/train/metrics.json").read_text())
    assert scalars["final/valid_accuracy"] == pytest.approx({0: metrics["valid_accuracy"]})
    assert scalars["final/train_seconds"] == pytest.approx({0: metrics["train_seconds"]})
    assert hparams["train.arch"] == "mlp" and hparams["train.epochs"] == 3 and hparams["run.track"] == "tensorboard"
    (eval_run,) = (tmp_path / "runs/tb/tracking").glob("evaluate-*")
    scalars, hparams = read_run(eval_run)
    test = json.loads((tmp_path / "runs/tb/evaluate/same/metrics.json").read_text())
    assert scalars["same/accuracy"] == pytest.approx({0: test["accuracy"]})
    assert scalars["same/ece"] == pytest.approx({0: test["ece"]}) and hparams["run.name"] == "tb"


def test_compare_logs_each_row(tmp_path, monkeypatch):
    from pipeline import compare

    paths = []
    for name in ("one", "two"):
        paths.append(tmp_path / f"{name}.toml")
        paths[-1].write_text(f'# published: 90 %\n[run]\nname = "{name}"\ntrack = "tensorboard"\n')

    def collect(row, cfg, stages):  # what a finished run's metrics would fill in
        row.test, row.valid, row.epochs, row.train_s = {"same": 0.5 + len(row.experiment) / 100}, 0.8, 3, 12.5

    monkeypatch.setattr(compare.runner, "run", lambda *a, **k: None)
    monkeypatch.setattr(compare, "_collect", collect)
    _, rows = compare.run_all(paths, tmp_path / "t.md", cwd=tmp_path)
    for row in rows:
        (folder,) = (tmp_path / "runs" / row.experiment / "tracking").glob("compare-*")
        scalars, hparams = read_run(folder)
        assert scalars == {"test/same": {0: pytest.approx(row.test["same"])}, "valid_accuracy": {0: pytest.approx(0.8)},
                           "epochs": {0: 3.0}, "train_seconds": {0: 12.5}}
        assert hparams == {"experiment": row.experiment, "model": row.model, "data": row.data, "published": "90 %"}


@pytest.mark.slow
def test_crossval_logs_each_fold_and_the_mean(three_sources, monkeypatch):
    from pipeline import crossval

    root = three_sources
    multi_config(root, {"run.track": "tensorboard", "train.arch": "mlp"})
    monkeypatch.chdir(root)
    summary = crossval.run(None, [])
    table = pd.read_csv(root / "runs/multi/crossval/crossval.csv", keep_default_na=False)
    (logged,) = (root / "runs/multi/tracking").glob("crossval-*")
    for unit, accuracy, images in zip(table["held_out"], table["accuracy"], table["images"]):
        scalars, hparams = read_run(logged / tracking.safe_name(unit))
        assert scalars["accuracy"] == {0: pytest.approx(accuracy)} and scalars["images"] == {0: images}
        assert hparams == {"held_out": unit, "by": "group"}
        fold = root / "runs" / crossval.fold_name("multi", unit) / "tracking"
        assert sorted(p.name.split("-")[0] for p in fold.iterdir()) == ["evaluate", "train"]
    scalars, _ = read_run(logged / "mean")
    assert scalars["accuracy"] == {0: pytest.approx(summary["mean"])}
