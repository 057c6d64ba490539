"""models/interpretation.py: per-class precision/recall/F1, most confused pairs, top-k accuracy, per-photo loss and
the top-losses gallery, on tiny sets whose answers are tallied by hand."""
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core import artifacts
from pipeline.models import interpretation

VOCAB = ["A", "B", "C", "D"]
# 10 photos: A 4 (2 right, 1 as D, 1 as B), B 3 (1 right, 2 as C), C 3 (3 right); D is never true, once predicted
TRUTH = ["A", "A", "A", "A", "B", "B", "B", "C", "C", "C"]
PRED = ["A", "A", "D", "B", "B", "C", "C", "C", "C", "C"]


def test_classification_report_matches_the_tally_by_hand():
    report = interpretation.classification_report(TRUTH, PRED, VOCAB).set_index("class")
    # A: 4 true, 2 right; predicted A twice -> precision 2/2, recall 2/4
    # B: 3 true, 1 right; predicted B twice (one A, one B) -> precision 1/2, recall 1/3
    # C: 3 true, 3 right; predicted C 5 times (2 B) -> precision 3/5, recall 3/3
    # D: 0 true, predicted once -> precision 0, recall 0 (sklearn's zero_division=0)
    expected = {"A": (1.0, 0.5, 4, 2), "B": (0.5, 1 / 3, 3, 2), "C": (0.6, 1.0, 3, 5), "D": (0.0, 0.0, 0, 1)}
    assert list(report.index) == ["A", "B", "C", "D", "macro avg", "weighted avg"]
    for c, (precision, recall, support, predicted) in expected.items():
        row = report.loc[c]
        assert row["precision"] == pytest.approx(precision) and row["recall"] == pytest.approx(recall)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert row["f1"] == pytest.approx(f1)
        assert (row["support"], row["predicted"]) == (support, predicted)
    assert report.loc["macro avg", "recall"] == pytest.approx((0.5 + 1 / 3 + 1.0 + 0.0) / 4)
    assert report.loc["weighted avg", "recall"] == pytest.approx((2 + 1 + 3) / 10)  # = accuracy, as in sklearn
    assert report.loc["weighted avg", "support"] == 10


def test_classification_report_agrees_with_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    ours = interpretation.classification_report(TRUTH, PRED, VOCAB).set_index("class")
    theirs = metrics.classification_report(TRUTH, PRED, output_dict=True, zero_division=0)
    for c in ("A", "B", "C", "D", "macro avg", "weighted avg"):
        for m, k in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours.loc[c, m] == pytest.approx(theirs[c][k]), (c, m)


def test_most_confused_pairs_most_frequent_first():
    pairs = interpretation.most_confused(TRUTH, PRED)
    assert pairs.values.tolist() == [["B", "C", 2], ["A", "B", 1], ["A", "D", 1]]
    assert interpretation.most_confused(TRUTH, PRED, min_count=2).values.tolist() == [["B", "C", 2]]
    assert interpretation.most_confused(["A"], ["A"]).empty


def test_top_k_accuracy_and_loss():
    probs = np.array([[0.5, 0.3, 0.2, 0.0],    # true A: top-1
                      [0.5, 0.3, 0.2, 0.0],    # true C: third
                      [0.1, 0.2, 0.3, 0.4],    # true A: fourth
                      [0.0, 1.0, 0.0, 0.0]])   # true D: p 0, last
    truth = ["A", "C", "A", "D"]
    assert interpretation.top_k_accuracy(probs, truth, VOCAB, 1) == 0.25
    assert interpretation.top_k_accuracy(probs, truth, VOCAB, 2) == 0.25
    assert interpretation.top_k_accuracy(probs, truth, VOCAB, 3) == 0.5
    assert interpretation.top_k_accuracy(probs, truth, VOCAB, 5) == 1.0  # k beyond the vocab: every class
    p, loss = interpretation.losses(probs, truth, VOCAB)
    assert p.tolist() == [0.5, 0.2, 0.1, 0.0]
    assert loss[:3] == pytest.approx([math.log(2), -math.log(0.2), -math.log(0.1)])
    assert math.isfinite(loss[3]) and loss[3] == pytest.approx(-math.log(interpretation.MIN_P))


COLOURS = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 200, 0), (200, 0, 200), (0, 200, 200)]


def _tiles(png, colours):
    """(top, left) of the first pixel of each solid colour in the PNG, in the order of `colours`."""
    with Image.open(png) as im:
        px = np.asarray(im.convert("RGB"))
    out = []
    for c in colours:
        ys, xs = np.nonzero((px == np.array(c, np.uint8)).all(axis=2))
        assert len(ys) > 100, f"colour {c} not drawn"
        out.append((int(ys.min()), int(xs.min())))
    return out


def test_the_gallery_shows_the_highest_loss_first(tmp_path):
    """Six solid-colour photos: the gallery lays them out by loss, highest first (read from the pixels of the PNG),
    and the written files are the ones the stages declare."""
    for i, c in enumerate(COLOURS):
        Image.new("RGB", (24, 24), c).save(tmp_path / f"p{i}.png")
    vocab = ["A", "B", "C"]
    truth = ["A", "B", "C", "A", "B", "C"]
    probs = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05], [0.1, 0.8, 0.1],
                      [0.5, 0.47, 0.03]])
    df = pd.DataFrame({"file": [f"p{i}.png" for i in range(6)], "true": truth,
                       "predicted": [vocab[i] for i in probs.argmax(1)], "confidence": probs.max(1)})
    df["correct"] = df["true"] == df["predicted"]
    summary = interpretation.score(df, probs, vocab)
    assert summary["top1_accuracy"] == pytest.approx(3 / 6) and summary["top5_accuracy"] == 1.0
    files = interpretation.write(df, vocab, tmp_path / "out", tmp_path, finds_hands=False, title="t")
    assert [f.name for f in files] == list(artifacts.INTERPRETATION)
    by_loss = list(df.sort_values("loss", ascending=False, kind="stable")["file"])
    assert by_loss[0] == "p5.png"  # p(C) 0.03: the highest loss
    tiles = _tiles(tmp_path / "out" / artifacts.TOP_LOSSES_PNG, [COLOURS[int(f[1])] for f in by_loss])
    assert len({t for t, _ in tiles}) == 2  # four a row
    assert tiles == sorted(tiles), (by_loss, tiles)  # row by row, left to right
    confused = pd.read_csv(tmp_path / "out" / artifacts.MOST_CONFUSED)
    assert confused.values.tolist() == [["A", "B", 1], ["B", "A", 1], ["C", "A", 1]]


@pytest.mark.shared_data
def test_a_hand_models_gallery_draws_the_keypoints(shared_data, tmp_path):
    """With `finds_hands`, each photo of the gallery carries MediaPipe's keypoints and bones (hands.draw_keypoints: green bones,
    red points); without, the same photos have none of that green."""
    pytest.importorskip("mediapipe")
    root = shared_data / "asl_alphabet_test"
    df = pd.DataFrame({"file": ["B_test.jpg", "nothing_test.jpg"], "true": ["B", "nothing"],
                       "predicted": ["A", "nothing"], "confidence": [0.6, 0.9], "correct": [False, True],
                       "loss": [2.0, 0.1]})

    def green(finds_hands):
        png = interpretation.gallery(df, root, tmp_path / f"g{finds_hands}.png", finds_hands, "t")
        with Image.open(png) as im:
            px = np.asarray(im.convert("RGB")).astype(int)
        return int(((px[..., 1] > 200) & (px[..., 0] < 80) & (px[..., 2] < 80)).sum())

    assert green(True) > green(False) + 50


def test_the_validation_of_a_tabular_hand_model_lines_up_with_the_split(tmp_path):
    """train's `validation` on a keypoint learner (tabular: targets come as an (N, 1) column): one row per validation
    row of the split, in its order, with the learner's own probabilities; a split that does not match is one line."""
    from pipeline.core.errors import PipelineError
    from pipeline.core.workspace import Workspace, write_csv, write_json
    from tests.conftest import synthetic_landmark_learner

    learn, cfg, split, _ = synthetic_landmark_learner(tmp_path, n_hands=30, n_nothing=6)
    ws = Workspace.from_config(cfg)
    write_csv(ws.artifact("datablock", artifacts.SPLITS), split)
    write_json(ws.artifact("datablock", artifacts.VOCAB), {"root": str(tmp_path), "vocab": ["A", "B", "C", "nothing"]})
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    metrics, files = interpretation.validation(learn, ws, finds_hands=False, log=lambda m: None)
    # the model about to be exported is left as it was (fastai's get_preds fires after_fit: SettleBatchNorm there
    # would recompute its BatchNorm statistics through dropout)
    assert all(v.equal(before[k]) for k, v in learn.model.state_dict().items())
    assert [f.name for f in files] == [artifacts.PREDICTIONS, *artifacts.INTERPRETATION]
    preds = pd.read_csv(ws.artifact("train", artifacts.PREDICTIONS), dtype={"true": str, "predicted": str})
    valid = split[split["is_valid"]]
    assert list(preds["file"]) == list(valid["path"]) and list(preds["true"]) == list(valid["label"])
    settle = [cb for cb in learn.cbs if type(cb).__name__ == "SettleBatchNorm"]
    assert settle  # what the learner fits with; removed here so that fastai's own predictions leave it as it is
    with learn.removed_cbs(settle):
        probs, _ = learn.get_preds(dl=learn.dls.valid)
    assert preds["confidence"].to_numpy() == pytest.approx(probs.max(dim=1).values.numpy(), abs=1e-6)
    assert metrics["valid_top1_accuracy"] == pytest.approx(preds["correct"].mean())
    write_csv(ws.artifact("datablock", artifacts.SPLITS), split.assign(is_valid=~split["is_valid"]))
    with pytest.raises(PipelineError, match=r"^the validation predictions \(8\) do not line up with the split's 28 "):
        interpretation.validation(learn, ws, finds_hands=False, log=lambda m: None)
