"""train.patience: a phase stops once the monitored metric has not improved for `patience` epochs, and the export
is the best epoch's model, which metrics.json and the model card name."""
import json

import pandas as pd
import pytest

from pipeline import config, runner
from pipeline.core.errors import PipelineError
from tests.conftest import make_image_folder, tiny_config


@pytest.mark.parametrize("key,value,message", [("train.patience", "-1", "train.patience"),
                                               ("train.monitor", "train_loss", "valid_loss or valid_accuracy")])
def test_early_stopping_keys_are_validated(tmp_path, key, value, message):
    with pytest.raises(PipelineError, match=message):
        config.load(None, cwd=tmp_path, overrides=[f"{key}={value}"])


def test_early_stopping_is_off_by_default_and_keeps_fingerprints():
    cfg = config.Config()
    assert cfg.train.patience == 0 and cfg.train.monitor == "valid_loss"
    from pipeline.core.fingerprints import _config_part

    assert "patience" not in _config_part(cfg, ("train",))["train"]  # an up-to-date run stays up to date


@pytest.mark.slow
def test_patience_stops_and_exports_the_best_epoch(tmp_path):
    from fastai.learner import load_learner

    from pipeline.core.workspace import Workspace
    from pipeline import kinds

    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=12, size=16)
    # valid_accuracy takes few values on 9 validation images: it stops rising well within 20 epochs
    cfg = tiny_config(tmp_path, {"run.name": "es", "download.source": f"path:{src}", "download.subdir": "",
                                 "train.arch": "mlp", "train.epochs": 20, "train.patience": 1,
                                 "train.monitor": "valid_accuracy", "datablock.valid_pct": 0.25})
    runner.run(cfg, ["download", "datablock", "train"])
    history = pd.read_csv(tmp_path / "runs/es/train/history.csv")
    metrics = json.loads((tmp_path / "runs/es/train/metrics.json").read_text())
    card = json.loads((tmp_path / "exports/es.json").read_text())
    stop = metrics["early_stopping"]
    assert len(history) < 20 and stop["epochs_run"] == len(history) == metrics["epochs"]
    assert stop["stopped_early"] == ["fit_one_cycle"]
    best = int(history["valid_accuracy"].idxmax())  # the first epoch at the highest accuracy
    assert stop["best_epoch"] == best + 1 < len(history) and stop["monitor"] == "valid_accuracy"
    assert card["metrics"]["early_stopping"] == stop
    assert metrics["valid_accuracy"] == stop["best_value"] == history["valid_accuracy"][best]
    assert metrics["valid_loss"] == pytest.approx(history["valid_loss"][best])
    # the exported weights are the best epoch's, not the last one's: their validation loss is that epoch's
    learn = load_learner(tmp_path / "exports/es.pkl")
    learn.dls = kinds.of(cfg).dataloaders(Workspace.from_config(cfg), cfg)
    valid_loss = float(learn.validate()[0])
    assert valid_loss == pytest.approx(history["valid_loss"][best], abs=1e-5)
    assert valid_loss != pytest.approx(history["valid_loss"].iloc[-1], abs=1e-5)
    assert not (tmp_path / "runs/es/_scratch/train/best.pth").exists()
