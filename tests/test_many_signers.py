"""Several training sources, group-aware validation, held-out groups and leave-one-group-out crossval."""
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline import config, crossval, hands, runner, splitting
from pipeline.errors import PipelineError
from pipeline.workspace import Workspace, read_json
from tests.conftest import make_image_folder, tiny_config


def _flat(folder: Path, names: list[str]) -> Path:
    """Images named `names` directly in `folder` (labels and groups in the file names, as in Roboflow's export)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        Image.new("RGB", (16, 16), (40 * i % 255, 90, 160)).save(folder / n)
    return folder


def multi_config(root: Path, overrides: dict | None = None):
    """The project config of `three_sources` (its folders A, B and C under `root`) and `overrides`, via tiny_config:
    each source with its own label rules and groups, validation split by group."""
    return tiny_config(root, {
        "run.name": "multi",
        "download.sources": [
            {"name": "one", "source": f"path:{root / 'A'}"},
            {"name": "hands", "source": f"path:{root / 'B'}", "uppercase": True, "class_regex": "[A-Z]",
             "group_regex": r"^(hand\d+)_"},
            {"name": "flat", "source": f"path:{root / 'C'}", "label_regex": r"^([A-Z])\d+_jpg",
             "group_regex": r"^([A-Z]\d+)_jpg", "fold": "source"}],
        "datablock.valid_pct": 0.25, "datablock.split": "group", "datablock.verify": False, **(overrides or {})})


@pytest.fixture
def three_sources(tmp_path):
    """A: class folders a, b (one signer); B: lowercase class folders a, b, c plus a digit folder 7, signers in
    the file names; C: flat files whose names carry the label and the photo id."""
    make_image_folder(tmp_path / "A", classes=("A", "B"), per_class=4)
    b = tmp_path / "B"
    for c in ("a", "b", "c", "7"):
        for signer in (1, 2):
            _flat(b / c, [f"hand{signer}_{c}_{i}.png" for i in range(3)])
    _flat(tmp_path / "C", [f"{y}{k}_jpg.rf.{j}.png" for y in "AB" for k in range(3) for j in range(2)])
    multi_config(tmp_path)
    return tmp_path


def load(tmp_path, *overrides):
    return config.load(None, list(overrides), cwd=tmp_path)


def test_sources_with_different_label_rules_merge(three_sources, capsys):
    runner.run(load(three_sources), ["download", "datablock"])
    ws = Workspace.from_config(load(three_sources))
    meta = read_json(ws.artifact("download", "dataset.json"))
    by = {s["name"]: s for s in meta["sources"]}
    assert by["one"]["counts"] == {"A": 4, "B": 4} and by["one"]["groups"] == {"one": 8}
    assert by["hands"]["counts"] == {"A": 6, "B": 6, "C": 6} and by["hands"]["filtered"] == 6  # the digit folder
    assert by["hands"]["groups"] == {"hands/hand1": 9, "hands/hand2": 9}
    assert by["flat"]["counts"] == {"A": 6, "B": 6} and len(by["flat"]["groups"]) == 6
    assert meta["classes"] == ["A", "B", "C"] and meta["n_images"] == 8 + 18 + 12
    df = pd.read_csv(ws.artifact("datablock", "splits.csv"), keep_default_na=False)
    assert list(df.columns) == ["path", "label", "is_valid", "source", "group"]
    assert sorted(set(df["source"])) == ["flat", "hands", "one"] and len(df) == 38
    root = Path(read_json(ws.artifact("datablock", "vocab.json"))["root"])
    assert all((root / p).is_file() for p in df["path"])
    assert read_json(ws.artifact("datablock", "vocab.json"))["vocab"] == ["A", "B", "C"]  # the union; one lacks C
    row = df[df["path"].str.endswith("hand2_c_1.png")].iloc[0]
    assert (row["label"], row["source"], row["group"]) == ("C", "hands", "hands/hand2")
    assert "hands: skipped 6 image(s) with labels outside class_regex" in capsys.readouterr().out


def test_group_split_keeps_groups_whole_and_follows_the_seed():
    groups = [f"g{i % 7}" for i in range(700)] + ["big"] * 900
    for seed in range(20):
        valid = splitting.group_split(groups, 0.2, seed)
        assert valid == splitting.group_split(groups, 0.2, seed)  # reproducible
        n = sum(g in valid for g in groups)
        assert 0 < n <= 0.2 * len(groups) and "big" not in valid
    assert len({frozenset(splitting.group_split(groups, 0.2, s)) for s in range(20)}) > 1  # the seed matters
    assert splitting.group_split(["a"] * 5 + ["b"] * 9, 0.1, 0) == {"a"}  # all too big: the smallest
    with pytest.raises(PipelineError, match="at least two groups"):
        splitting.group_split(["a"] * 5, 0.2, 0)


def test_group_split_in_the_datablock(three_sources):
    for seed in (1, 2, 3):
        runner.run(load(three_sources, f"run.seed={seed}"), ["download", "datablock"])
        df = pd.read_csv(Workspace.from_config(load(three_sources)).artifact("datablock", "splits.csv"),
                         keep_default_na=False)
        sides = df.groupby("group")["is_valid"].nunique()
        assert (sides == 1).all() and df["is_valid"].any() and (~df["is_valid"]).any()
        # one photo's copies (flat/A0 = A0_jpg.rf.0 and .1) stay together
        assert df[df["group"] == "flat/A0"]["is_valid"].nunique() == 1


def test_holdout_is_left_out_and_listed(three_sources):
    runner.run(load(three_sources, 'datablock.holdout=["hands/hand1"]'), ["download", "datablock"])
    ws = Workspace.from_config(load(three_sources))
    df = pd.read_csv(ws.artifact("datablock", "splits.csv"), keep_default_na=False)
    held = pd.read_csv(ws.artifact("datablock", "holdout.csv"), keep_default_na=False)
    assert "hands/hand1" not in set(df["group"]) and set(held["group"]) == {"hands/hand1"} and len(held) == 9
    with pytest.raises(PipelineError, match="'hand9', which is neither a group nor a source"):
        runner.run(load(three_sources, 'datablock.holdout=["hand9"]'), ["datablock"])


def test_a_changed_source_makes_only_its_own_listing_stale(three_sources, capsys):
    runner.run(load(three_sources), ["download"])
    assert dict(runner.status(load(three_sources)))["download"] == "up to date"
    _flat(three_sources / "C", ["C0_jpg.rf.0.png"])
    assert dict(runner.status(load(three_sources)))["download"] == "source data changed (flat)"
    capsys.readouterr()
    runner.run(load(three_sources), ["download"])
    out = capsys.readouterr().out
    assert "one: unchanged" in out and "hands: unchanged" in out and "flat: 13 images in 3 classes" in out


def test_a_single_source_keeps_its_config_fingerprint(tmp_path):
    """Configs written before [[download.sources]] and datablock.split hash as they did (their runs stay up to
    date): the new keys are left out of the fingerprint while at their defaults."""
    cfg = config.Config()
    assert runner._config_part(cfg, ("download", "datablock")) == {
        "download": {"source": "sklearn:digits", "subdir": ""},
        "datablock": {"valid_pct": 0.2, "max_per_class": 0, "verify": True, "cache": False, "input": "images"}}
    assert "split" in runner._config_part(load(tmp_path, "datablock.split=group"), ("datablock",))["datablock"]
    assert "landmark_mirror" not in runner._config_part(cfg, ("train",))["train"]
    assert "train.landmark_mirror" not in runner._config_part(cfg, ("train.landmark_mirror",))
    assert runner._config_part(load(tmp_path, "train.landmark_mirror=0.5"), ("train.landmark_mirror",)) == {
        "train.landmark_mirror": 0.5}


@pytest.mark.parametrize("bad, message", [
    ('[[download.sources]]\nname = "a b"\nsource = "path:x"\n', "must be a plain name"),
    ('[[download.sources]]\nname = "a"\nsource = "path:x"\ngroup_regex = "hand"\n', "needs a capture group"),
    ('[[download.sources]]\nname = "a"\nsource = "path:x"\n[[download.sources]]\nname = "a"\nsource = "path:y"\n',
     "names must be unique"),
    ('[datablock]\nsplit = "signer"\n', "datablock.split must be random or group"),
])
def test_source_options_are_validated(tmp_path, bad, message):
    (tmp_path / "pipeline.toml").write_text(bad)
    with pytest.raises(PipelineError, match=message):
        load(tmp_path)


@pytest.mark.slow
def test_crossval_writes_its_table_and_finds_each_hand_once(three_sources, monkeypatch):
    """Three held-out units (one, hands/hand1, hands/hand2; flat is held out whole by fold = "source", so four):
    each fold is a run of its own, the table is written, and the keypoint store means MediaPipe looks at each
    image once over all folds; a rerun that changes the split re-extracts nothing."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    multi_config(three_sources, {"datablock.input": "landmarks", "train.arch": "landmark_mlp", "train.base_lr": 3e-3,
                                  "train.epochs": 2})
    looked_at = []
    real = hands._detect
    monkeypatch.setattr(hands, "_detect", lambda paths, *a: looked_at.extend(paths) or real(paths, *a))
    monkeypatch.chdir(three_sources)
    summary = crossval.run(None, [])
    folder = three_sources / "runs" / "multi" / "crossval"
    table = pd.read_csv(folder / "crossval.csv", keep_default_na=False)
    assert list(table["held_out"]) == ["one", "hands/hand1", "hands/hand2", "flat"]
    assert list(table["images"]) == [8, 9, 9, 12]
    assert "| hands/hand1 | 9 |" in (folder / "crossval.md").read_text()
    assert (folder / "letters.csv").is_file() and (folder / "crossval.png").stat().st_size > 5000
    assert 0 <= summary["mean"] <= 1
    metrics = read_json(three_sources / "runs" / "multi-cv-hands-hand1" / "evaluate" / "holdout" / "metrics.json")
    assert set(metrics["groups"]) == {"hands/hand1"} and metrics["sources"] == {"hands": {"images": 9, "accuracy":
                                                                                        metrics["accuracy"]}}
    assert len(looked_at) == len(set(looked_at)) == 38  # every image once, over four folds
    looked_at.clear()
    crossval.run(None, ["datablock.valid_pct=0.4"])  # every fold's datablock and evaluate run again
    assert looked_at == []
    assert json.loads((three_sources / "runs" / "multi-cv-one" / "datablock" / "vocab.json").read_text())["valid_pct"] == 0.4


@pytest.mark.slow
def test_crossval_locks_each_fold_and_a_busy_fold_is_a_row_saying_why(three_sources, monkeypatch):
    """Each fold's run folder is locked while it runs: one another process holds is a failed row naming the holder;
    the other folds run and the table is still written."""
    import subprocess
    import sys

    from pipeline import runlock
    from tests.conftest import subprocess_env

    monkeypatch.chdir(three_sources)
    busy = Workspace.from_config(load(three_sources, "run.name=multi-cv-one")).root
    with runlock.hold(busy), runlock.hold(busy):  # reentrant within a process
        pass
    assert runlock.holder(busy) is None
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pipeline import runlock\n"
                               "with runlock.hold(sys.argv[1]):\n    print('held', flush=True); time.sleep(300)",
                               str(busy)], env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(PipelineError, match=r"1 fold\(s\) failed: one"):
            crossval.run(None, [])
    finally:
        holder.kill()
        holder.wait()
    table = pd.read_csv(three_sources / "runs" / "multi" / "crossval" / "crossval.csv", keep_default_na=False)
    assert list(table["held_out"]) == ["one", "hands/hand1", "hands/hand2", "flat"]
    (row,) = table[table["held_out"] == "one"].itertuples()
    assert row.worst.startswith(f"failed: another run is writing {busy} (pid {holder.pid}, ")
    assert (table[table["held_out"] != "one"]["images"] > 0).all()
