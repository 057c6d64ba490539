"""Calibration: ECE by hand, temperature fitting, folding into the last layer, and both stages using them."""
import json

import pytest
import torch

from pipeline import runner
from pipeline.core.errors import PipelineError
from pipeline.models import calibration
from tests.conftest import make_image_folder, tiny_config


def test_ece_matches_a_hand_computation():
    ece, rows = calibration.reliability([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1])
    # bin (0.867, 0.933]: accuracy 0.5 at confidence 0.9; bin (0.533, 0.6]: accuracy 1.0 at 0.6; each half the data
    assert ece == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert [r["count"] for r in rows] == [2, 2]
    assert calibration.reliability([1.0, 0.0], [1, 0])[0] == pytest.approx(0.0)  # the edges land in a bin


def test_fitted_temperature_undoes_overconfidence():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 5, generator=g) * 2
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)  # labels drawn from softmax(z)
    t = calibration.fit_temperature(3 * z, y)  # a model three times too confident
    assert t == pytest.approx(3.0, rel=0.1)


def test_folding_scales_the_logits_and_refuses_other_heads():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                                                        torch.nn.Linear(16, 3)))
    x = torch.randn(5, 8)
    before = model(x).detach()
    calibration.fold_temperature(model, 2.5, probe=x)
    assert torch.allclose(model(x), before / 2.5, atol=1e-6)
    assert torch.equal(model(x).argmax(1), before.argmax(1))
    with pytest.raises(PipelineError, match="does not end in a Linear"):
        calibration.fold_temperature(torch.nn.Sequential(torch.nn.Linear(8, 3), torch.nn.Softmax(1)), 2.0)


@pytest.mark.slow
def test_train_calibrates_and_evaluate_reports_ece(tmp_path):
    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=16, size=16)
    cfg = tiny_config(tmp_path, {"run.name": "cal", "download.source": f"path:{src}", "download.subdir": "",
                                 "datablock.valid_pct": 0.25, "train.arch": "mlp", "train.epochs": 3,
                                 "train.calibrate": True,
                                 "evaluate.test_sets": [{"name": "same", "source": f"path:{src}"}]})
    runner.run(cfg, list(runner.STAGE_NAMES))
    metrics = json.loads((tmp_path / "runs" / "cal" / "train" / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["temperature"] > 0 and cal["valid_nll_after"] <= cal["valid_nll_before"] + 1e-6
    card = json.loads((tmp_path / "exports" / "cal.json").read_text())
    assert card["metrics"]["calibration"]["temperature"] == cal["temperature"]
    test = json.loads((tmp_path / "runs" / "cal" / "evaluate" / "same" / "metrics.json").read_text())
    assert 0 <= test["ece"] <= 1 and 0 < test["mean_confidence"] <= 1
    assert (tmp_path / "runs" / "cal" / "evaluate" / "same" / "reliability.png").stat().st_size > 1000
    # the export itself carries the temperature: its validation NLL is the calibrated one
    import pandas as pd
    from fastai.learner import load_learner

    learn = load_learner(tmp_path / "exports" / "cal.pkl")
    split = pd.read_csv(tmp_path / "runs" / "cal" / "datablock" / "splits.csv")
    valid = split[split["is_valid"]]
    probs, _ = learn.get_preds(dl=learn.dls.test_dl([src / p for p in valid["path"]]))
    target = torch.tensor([list(learn.dls.vocab).index(label) for label in valid["label"]])
    nll = float(torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), target))
    assert nll == pytest.approx(cal["valid_nll_after"], rel=1e-3, abs=1e-4)
