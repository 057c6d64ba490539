"""Realism: a slice of the real grassknoted sample, evaluated on the dataset's own 28 test photos."""
import json

import pytest

from pipeline import config, runner

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def test_asl_slice_trains_and_evaluates(tmp_path, shared_data):
    (tmp_path / "pipeline.toml").write_text(f"""
[run]
name = "asl_slice"
[download]
source = "path:{shared_data / 'asl_alphabet_train_200'}"
[datablock]
max_per_class = 24
[train]
base_lr = 5e-3
epochs = 2
lr_mult = 1
head_dropout = 0.1
batch_size = 32
image_size = 96
[[evaluate.test_sets]]
name = "asl_test"
source = "path:{shared_data / 'asl_alphabet_test'}"
label_regex = '^([A-Za-z]+)_test\\.jpg$'
""")
    cfg = config.load(None, cwd=tmp_path)
    runner.run(cfg, ["download", "datablock", "train", "evaluate"])
    ds = json.loads((tmp_path / "runs/asl_slice/download/dataset.json").read_text())
    assert ds["n_images"] == 5800 and len(ds["classes"]) == 29 and ds["counts"]["del"] == 200
    vocab = json.loads((tmp_path / "runs/asl_slice/datablock/vocab.json").read_text())
    assert vocab["n_train"] + vocab["n_valid"] == 29 * 24
    m = json.loads((tmp_path / "runs/asl_slice/evaluate/asl_test/metrics.json").read_text())
    assert (m["images"], m["scored"], m["unmatched"], m["out_of_vocab"]) == (28, 28, 0, 0)
    assert m["missing_classes"] == ["del"]          # the Kaggle test folder has no del image
    assert m["accuracy"] >= 0.5, m                  # chance is 1/29
