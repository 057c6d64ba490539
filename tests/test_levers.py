"""Out-of-domain levers as config options: batch augmentation, random resized crops, label smoothing, TTA."""
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from pipeline import config, runner
from pipeline.config import TrainCfg
from pipeline.core.errors import PipelineError
from pipeline import kinds
from tests.conftest import make_image_folder, tiny_config


def _names(tfms):
    return [type(t).__name__ for t in tfms]


def test_batch_augmentation_options():
    def tfms(**train):  # what a model kind passes for a [train] section with these entries
        return kinds.find("images", "resnet18").batch_tfms(replace(TrainCfg(), **train))

    assert tfms() == []
    default = _names(tfms(augment=True))
    assert "Flip" not in default and {"Warp", "Brightness"} <= set(default)  # fastai merges rotate+zoom into Warp
    strong = tfms(augment=True, augment_strength="strong")
    assert {"Hue", "Saturation"} <= set(_names(strong)) and "Flip" not in _names(strong)
    gray = _names(tfms(augment=True, augment_strength="strong", grayscale=True))
    assert "Hue" not in gray
    (crop,) = tfms(random_crop_scale=0.35, image_size=64)
    assert type(crop).__name__ == "RandomResizedCropGPU" and crop.split_idx == 0  # never on valid/test batches
    assert crop.size == (64, 64) and crop.min_scale == 0.35


@pytest.mark.parametrize("key,value,message", [
    ("train.augment_strength", "extreme", "default or strong"),
    ("train.random_crop_scale", "1.5", "random_crop_scale"),
    ("train.label_smoothing", "-0.1", "label_smoothing"),
    ("evaluate.tta", "-1", "evaluate.tta"),
])
def test_lever_values_are_validated(tmp_path, key, value, message):
    with pytest.raises(PipelineError, match=message):
        config.load(None, cwd=tmp_path, overrides=[f"{key}={value}"])


@pytest.mark.slow
def test_levers_train_and_evaluate_end_to_end(tmp_path):
    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=12, size=20)
    cfg = tiny_config(tmp_path, {
        "run.name": "lev", "download.source": f"path:{src}", "download.subdir": "", "datablock.valid_pct": 0.25,
        "datablock.cache": True, "train.arch": "cnnnet", "train.epochs": 2, "train.augment": True,
        "train.augment_strength": "strong", "train.random_crop_scale": 0.5, "train.label_smoothing": 0.1,
        "evaluate.tta": 2, "evaluate.test_sets": [{"name": "same", "source": f"path:{src}"}]})
    runner.run(cfg, list(runner.STAGE_NAMES))
    test = json.loads((tmp_path / "runs" / "lev" / "evaluate" / "same" / "metrics.json").read_text())
    assert test["tta"] == 2 and test["scored"] == 36
    from fastai.learner import load_learner

    learn = load_learner(tmp_path / "exports" / "lev.pkl")
    from pipeline import kinds

    assert type(learn.loss_func).__name__ == "LabelSmoothingCrossEntropyFlat"
    assert "RandomResizedCropGPU" in _names(learn.dls.train.after_batch.fs)
    # evaluate used TTA: the plain pass alone gives other confidences (equal ones would mean tta was ignored)
    preds = pd.read_csv(tmp_path / "runs" / "lev" / "evaluate" / "same" / "predictions.csv")
    assert preds["correct"].mean() == pytest.approx(test["accuracy"]) and len(preds) == 36
    _, plain, _, _ = kinds.load(tmp_path / "exports" / "lev.pkl").predict(
        [Path(test["root"]) / f for f in preds["file"]], tta=0)
    assert max(abs(a - b) for a, b in zip(preds["confidence"], plain)) > 1e-3
