"""All five stages on tiny generated data with a from-scratch baseline: fast, real, and every edge of evaluate."""
import contextlib
import io
import json
import shutil

import pandas as pd
import pytest

from pipeline.core import fingerprints
from pipeline import config, runner
from pipeline.core.errors import PipelineError
from tests.conftest import make_image_folder, tiny_config


@pytest.fixture(scope="module")
def finished(trained, tmp_path_factory):
    """A copy of the session's tiny run through all five stages (conftest's `tiny_project`): (project, the run's
    result, what it printed)."""
    project = trained.copy("tiny_run", tmp_path_factory.mktemp("tiny") / "project")
    return project, json.loads((project / "run.json").read_text()), (project / "run.log").read_text()


def test_tiny_pipeline_end_to_end(finished):
    project, result, out = finished
    assert result == {s: "ran" for s in runner.STAGE_NAMES}
    assert "skipped 1 class folder(s) with no images: D" in out
    run = project / "runs" / "tiny"

    corrupt = pd.read_csv(run / "datablock" / "corrupt.csv")
    assert sorted(p.split("/")[-1] for p in corrupt["path"]) == ["broken.png", "empty.jpg"]
    split = pd.read_csv(run / "datablock" / "splits.csv")
    assert len(split) == 96 and split["is_valid"].sum() == 24 and set(split["label"]) == {"A", "B", "C"}
    assert json.loads((run / "datablock" / "vocab.json").read_text())["vocab"] == ["A", "B", "C"]

    lr = json.loads((run / "lr_find" / "lr_find.json").read_text())
    assert set(lr["suggestions"]) == {"valley", "slide", "minimum", "steep"} and lr["chosen"] > 0
    hist = pd.read_csv(run / "train" / "history.csv")
    assert list(hist["epoch"]) == [0, 1, 2, 3] and {"train_loss", "valid_loss", "train_accuracy", "valid_accuracy"} <= set(hist)

    m = json.loads((run / "evaluate" / "t" / "metrics.json").read_text())
    assert (m["images"], m["scored"], m["unmatched"], m["out_of_vocab"]) == (14, 12, 1, 1)
    skipped = pd.read_csv(run / "evaluate" / "t" / "skipped.csv")
    assert set(skipped["file"]) == {"README.png", "z999_test.png"}
    preds = pd.read_csv(run / "evaluate" / "t" / "predictions.csv")
    assert len(preds) == 12 and set(preds["true"]) == {"A", "B", "C"}
    assert preds["correct"].mean() == pytest.approx(m["accuracy"])
    tallies = pd.read_csv(run / "evaluate" / "t" / "tallies.csv")
    assert list(tallies.columns) == ["category", "total", "correct", "accuracy", "most_confused_with"]
    assert tallies["total"].sum() == 12 and tallies["correct"].sum() == m["correct"]
    # each class has its own bright quadrant: a logistic regression beats chance (1/3) by far
    assert m["accuracy"] >= 0.75, m


def _tallied_by_hand(preds):
    """Per class of `preds` (true, predicted): (precision, recall), counted row by row."""
    out = {}
    for c in sorted(set(preds["true"]) | set(preds["predicted"])):
        tp = sum(t == c and p == c for t, p in zip(preds["true"], preds["predicted"]))
        given, support = sum(p == c for p in preds["predicted"]), sum(t == c for t in preds["true"])
        out[c] = (tp / given if given else 0.0, tp / support if support else 0.0)
    return out


@pytest.mark.parametrize("folder", ["evaluate/t", "train"])
def test_interpretation_of_a_test_set_and_of_the_validation_split(finished, folder):
    """evaluate (per test set) and train (its validation split) write the same interpretation: a loss per photo that is
    -ln p(true), top-1/top-5 accuracy, a per-class report whose figures are the tallies of predictions.csv, and the
    most confused pairs counted from it."""
    import math

    project, _, _ = finished
    run = project / "runs" / "tiny"
    out = run / folder
    preds = pd.read_csv(out / "predictions.csv", dtype={"true": str, "predicted": str})
    m = json.loads((out / "metrics.json").read_text())
    prefix = "valid_" if folder == "train" else ""
    if folder == "train":  # the validation split's rows, in the split's order
        split = pd.read_csv(run / "datablock" / "splits.csv")
        assert list(preds["file"]) == list(split.loc[split["is_valid"], "path"])
        assert list(preds["true"]) == list(split.loc[split["is_valid"], "label"])
        assert m["valid_top1_accuracy"] == pytest.approx(m["valid_accuracy"])  # the exported model, as fit
    assert (preds["loss"] - -preds["p_true"].map(math.log)).abs().max() < 1e-9
    assert (preds["p_true"] <= preds["confidence"] + 1e-9).all()
    assert ((preds["p_true"] - preds["confidence"]).abs() < 1e-9)[preds["correct"]].all()
    assert m[f"{prefix}top1_accuracy"] == pytest.approx(preds["correct"].mean())
    assert m[f"{prefix}top5_accuracy"] == 1.0  # three classes: every one is among the top five
    assert m[f"{prefix}mean_loss"] == pytest.approx(preds["loss"].mean())
    report = pd.read_csv(out / "classification_report.csv", dtype={"class": str}).set_index("class")
    by_hand = _tallied_by_hand(preds)
    assert list(report.index) == [*sorted(by_hand), "macro avg", "weighted avg"]
    for c, (precision, recall) in by_hand.items():
        assert (report.loc[c, "precision"], report.loc[c, "recall"]) == pytest.approx((precision, recall)), c
    assert report.loc["weighted avg", "recall"] == pytest.approx(preds["correct"].mean())
    confused = pd.read_csv(out / "most_confused.csv", dtype={"true": str, "predicted": str})
    wrong = preds[~preds["correct"]].groupby(["true", "predicted"]).size()
    assert {(r.true, r.predicted): r.count for r in confused.itertuples()} == wrong.to_dict()
    assert list(confused["count"]) == sorted(confused["count"], reverse=True)


def test_predict_csv_lists_the_top_k_and_every_class(finished, capsys):
    """`predict --csv --topk 2 --probs`: top1 is the label, the probabilities fall, and each is the one in its class's
    p_ column, which sum to 1."""
    from pipeline import cli

    project, _, _ = finished
    photos = sorted((project / "tsrc").glob("*/*.png"))[:5]
    assert cli.main(["predict", "--learner", str(project / "exports" / "tiny.pkl"), "--csv", "--topk", "2", "--probs",
                     *map(str, photos)]) == 0
    out = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype={"label": str, "top1": str, "top2": str})
    assert list(out.columns) == ["file", "label", "confidence", "top1", "top1_p", "top2", "top2_p", "p_A", "p_B", "p_C"]
    assert len(out) == 5 and (out["top1"] == out["label"]).all() and (out["top1_p"] == out["confidence"]).all()
    assert (out["top1_p"] >= out["top2_p"]).all() and (out["top1"] != out["top2"]).all()
    for r in out.itertuples():
        assert getattr(r, f"p_{r.top1}") == r.top1_p and getattr(r, f"p_{r.top2}") == r.top2_p
    assert (out[["p_A", "p_B", "p_C"]].sum(axis=1) - 1).abs().max() < 1e-4
    learner = str(project / "exports" / "tiny.pkl")
    assert cli.main(["predict", "--learner", learner, "--topk", "-1", str(photos[0])]) == 2
    assert capsys.readouterr().err.startswith("error: --topk must be >= 1")


def test_each_stage_folder_holds_exactly_what_its_stage_declares(finished):
    """`StageSpec.writes` is the contract the runner checks: every declared output exists (the runner refuses a
    stage that left one out), and no stage leaves a file it does not declare (evaluate declared metrics.json twice
    and left out skipped.csv)."""
    project, _, _ = finished
    cfg = config.load(None, cwd=project)
    for stage in runner.STAGES:
        folder = project / "runs" / "tiny" / stage.name
        found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
        assert found == set(stage.outputs(cfg)), stage.name


def test_a_stage_that_leaves_out_a_declared_output_is_refused(finished, monkeypatch):
    project, _, _ = finished
    cfg = config.load(None, cwd=project)
    spec = runner.BY_NAME["lr_find"]
    monkeypatch.setitem(runner.BY_NAME, "lr_find", type(spec)(**{**vars(spec), "writes": spec.writes + ("extra.csv",)}))
    with pytest.raises(PipelineError, match=r"^lr_find finished without writing extra.csv, which stages/lr_find.py "
                                            r"declares: nothing was recorded"):
        runner.run(cfg, ["lr_find"], force=True)
    assert fingerprints.read_manifest(runner.Workspace.from_config(cfg), "lr_find") is not None  # the last run stays


def test_test_set_errors_are_clear(finished):
    project, _, _ = finished
    nothing = config.load(None, ["evaluate.batch_size=4"], cwd=project)
    nothing.evaluate.test_sets[0].label_regex = r"^(\d+)_never\.png$"
    with pytest.raises(PipelineError, match=r"test set t: no image under .* has a label in the model's vocab"):
        runner.run(nothing, ["evaluate"])
    gone = config.load(None, cwd=project)
    gone.evaluate.test_sets[0].source = f"path:{project / 'missing'}"
    with pytest.raises(PipelineError, match="test set t: "):
        runner.run(gone, ["evaluate"], force=True)


def test_evaluate_refuses_a_learner_that_does_not_match_what_train_recorded(finished):
    project, _, _ = finished
    cfg = config.load(None, cwd=project)
    pkl = project / "exports" / "tiny.pkl"
    original = pkl.read_bytes()
    pkl.write_bytes(original + b"\0")
    try:
        with pytest.raises(PipelineError, match=r"tiny.pkl sha256 .* does not match the expected sha256 .*refusing to unpickle"):
            runner.run(cfg, ["evaluate"], force=True)
        trusting = config.load(None, ["evaluate.trust_learner=true"], cwd=project)
        assert runner.run(trusting, ["evaluate"], force=True) == {"evaluate": "ran"}  # the explicit opt-out
    finally:
        pkl.write_bytes(original)


def test_one_class_dataset_is_refused(tmp_path):
    data = make_image_folder(tmp_path / "one", classes=("A",), per_class=5)
    cfg = tiny_config(tmp_path, {"download.source": f"path:{data}", "download.subdir": ""})
    with pytest.raises(PipelineError, match=r"no class folders with images under .*one/A \(5 loose images\).*at least two"):
        runner.run(cfg, ["download", "datablock"])
    # two class folders, but one of them holds only broken files: refused after verification
    (data / "B").mkdir()
    (data / "B" / "x.png").write_bytes(b"broken")
    with pytest.raises(PipelineError, match=r"1 class\(es\) with usable images \(A\): a classifier needs at least two"):
        runner.run(cfg, ["download", "datablock"])


def test_changing_epochs_reruns_exactly_train_and_evaluate(trained, tmp_path, capsys):
    """A schedule entry changed (train.epochs): train and evaluate run again, the stages before them are skipped."""
    project = trained.copy("tiny_run", tmp_path / "project")
    capsys.readouterr()
    runner.run(config.load(None, ["train.epochs=1"], cwd=project), list(runner.STAGE_NAMES))
    out = capsys.readouterr().out
    ran = [s for s in runner.STAGE_NAMES if f"[{s}] running" in out]
    assert ran == ["train", "evaluate"], out
    assert "[train] running (config changed)" in out
