"""Realism: a slice of the real grassknoted sample, evaluated on the dataset's own 28 test photos."""
import json

import pytest

from pipeline import runner
from tests.conftest import asl_photos, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def test_asl_slice_trains_and_evaluates(tmp_path, shared_data):
    # the demo's recipe (EfficientNet-Lite0 fine-tuned from ImageNet) at 96 px for 2 epochs
    cfg = tiny_config(tmp_path, {"run.name": "asl_slice", **asl_photos(shared_data, 24, "asl_test"),
                                 "train.arch": "tf_efficientnet_lite0", "train.pretrained": True,
                                 "train.method": "fine_tune", "train.freeze_epochs": 1, "train.base_lr": 5e-3,
                                 "train.epochs": 2, "train.batch_size": 32, "train.image_size": 96})
    runner.run(cfg, ["download", "datablock", "train", "evaluate"])
    ds = json.loads((tmp_path / "runs/asl_slice/download/dataset.json").read_text())
    assert ds["n_images"] == 5800 and len(ds["classes"]) == 29 and ds["counts"]["del"] == 200
    vocab = json.loads((tmp_path / "runs/asl_slice/datablock/vocab.json").read_text())
    assert vocab["n_train"] + vocab["n_valid"] == 29 * 24
    m = json.loads((tmp_path / "runs/asl_slice/evaluate/asl_test/metrics.json").read_text())
    assert (m["images"], m["scored"], m["unmatched"], m["out_of_vocab"]) == (28, 28, 0, 0)
    assert m["missing_classes"] == ["del"]          # the Kaggle test folder has no del image
    assert m["accuracy"] >= 0.5, m                  # chance is 1/29
