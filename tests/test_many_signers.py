"""Several training sources, group-aware validation, held-out groups and leave-one-group-out crossval."""
import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core import fingerprints
from pipeline import config, crossval, runner
from pipeline.core.errors import PipelineError
from pipeline.core.workspace import Workspace, read_json
from pipeline.data import hands, splitting
from tests.conftest import tiny_config
from tests.helpers import flat_images, multi_config, three_sources  # noqa: F401  (three_sources: a fixture)


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


def test_monitor_split_trains_on_every_group_and_keeps_small_groups_whole():
    """The shipped model's split: every signer trains, a share of each validates; one photo's copies stay together."""
    groups = ["signer1"] * 300 + ["signer2"] * 100 + [f"photo{i // 3}" for i in range(600)]
    valid = splitting.monitor_split(groups, 0.1, 0)
    assert valid == splitting.monitor_split(groups, 0.1, 0) and valid != splitting.monitor_split(groups, 0.1, 1)
    by_group = pd.DataFrame({"group": groups, "valid": valid}).groupby("group")["valid"]
    assert by_group.sum()["signer1"] == 30 and by_group.sum()["signer2"] == 10  # each signer trains and validates
    photos = by_group.nunique()[[g for g in set(groups) if g.startswith("photo")]]
    assert (photos == 1).all() and 5 < sum(valid[400:]) / 3 < 40  # whole photos, about 10 % of the 200


@pytest.mark.slow
def test_group_split_in_the_datablock(three_sources):
    for seed in (1, 2, 3):
        runner.run(load(three_sources, f"run.seed={seed}"), ["download", "datablock"])
        df = pd.read_csv(Workspace.from_config(load(three_sources)).artifact("datablock", "splits.csv"),
                         keep_default_na=False)
        sides = df.groupby("group")["is_valid"].nunique()
        assert (sides == 1).all() and df["is_valid"].any() and (~df["is_valid"]).any()
        # one photo's copies (flat/A0 = A0_jpg.rf.0 and .1) stay together
        assert df[df["group"] == "flat/A0"]["is_valid"].nunique() == 1
    runner.run(load(three_sources, "datablock.split=monitor", "datablock.valid_pct=0.5"), ["download", "datablock"])
    df = pd.read_csv(Workspace.from_config(load(three_sources)).artifact("datablock", "splits.csv"),
                     keep_default_na=False)
    cfg = load(three_sources)
    assert list(df["is_valid"]) == splitting.monitor_split(list(df["group"]), 0.5, cfg.run.seed)


def test_holdout_is_left_out_and_listed(three_sources):
    runner.run(load(three_sources, 'datablock.holdout=["hands/hand1"]'), ["download", "datablock"])
    ws = Workspace.from_config(load(three_sources))
    df = pd.read_csv(ws.artifact("datablock", "splits.csv"), keep_default_na=False)
    held = pd.read_csv(ws.artifact("datablock", "holdout.csv"), keep_default_na=False)
    assert "hands/hand1" not in set(df["group"]) and set(held["group"]) == {"hands/hand1"} and len(held) == 9
    with pytest.raises(PipelineError, match="'hand9', which is neither a group nor a source"):
        runner.run(load(three_sources, 'datablock.holdout=["hand9"]'), ["datablock"])


@pytest.mark.slow
def test_a_changed_source_makes_only_its_own_listing_stale(three_sources, capsys):
    runner.run(load(three_sources), ["download"])
    assert dict(runner.status(load(three_sources)))["download"] == "up to date"
    flat_images(three_sources / "C", ["C0_jpg.rf.0.png"])
    assert dict(runner.status(load(three_sources)))["download"] == "source data changed (flat)"
    capsys.readouterr()
    runner.run(load(three_sources), ["download"])
    out = capsys.readouterr().out
    assert "one: unchanged" in out and "hands: unchanged" in out and "flat: 13 images in 3 classes" in out


def test_a_single_source_keeps_its_config_fingerprint(tmp_path):
    """Configs written before [[download.sources]] and datablock.split hash as they did (their runs stay up to
    date): the new keys are left out of the fingerprint while at their defaults."""
    cfg = config.Config()
    assert fingerprints._config_part(cfg, ("download", "datablock")) == {
        "download": {"source": "sklearn:digits", "subdir": ""},
        "datablock": {"valid_pct": 0.2, "max_per_class": 0, "verify": True, "cache": False, "input": "images"}}
    assert "split" in fingerprints._config_part(load(tmp_path, "datablock.split=group"), ("datablock",))["datablock"]
    assert "landmark_mirror" not in fingerprints._config_part(cfg, ("train",))["train"]
    assert "train.landmark_mirror" not in fingerprints._config_part(cfg, ("train.landmark_mirror",))
    assert fingerprints._config_part(load(tmp_path, "train.landmark_mirror=0.5"), ("train.landmark_mirror",)) == {
        "train.landmark_mirror": 0.5}


@pytest.mark.parametrize("bad, message", [
    ('[[download.sources]]\nname = "a b"\nsource = "path:x"\n', "must be a plain name"),
    ('[[download.sources]]\nname = "a"\nsource = "path:x"\ngroup_regex = "hand"\n', "needs a capture group"),
    ('[[download.sources]]\nname = "a"\nsource = "path:x"\n[[download.sources]]\nname = "a"\nsource = "path:y"\n',
     "names must be unique"),
    ('[datablock]\nsplit = "signer"\n', "datablock.split must be random, group or monitor"),
])
def test_source_options_are_validated(tmp_path, bad, message):
    (tmp_path / "pipeline.toml").write_text(bad)
    with pytest.raises(PipelineError, match=message):
        load(tmp_path)


@pytest.mark.slow
def test_crossval_writes_its_table_and_finds_each_hand_once(three_sources, monkeypatch):
    """Three held-out units (one, hands/hand1, hands/hand2; flat is held out whole by fold = "source", so four):
    each fold is a run of its own, the table is written, and the detection store means MediaPipe looks at each
    image once over all folds; a rerun that changes the split re-extracts nothing."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    multi_config(three_sources, {"datablock.input": "landmarks", "train.arch": "landmark_mlp", "train.base_lr": 3e-3,
                                  "train.epochs": 2})
    looked_at = []
    real = hands.batch.find
    monkeypatch.setattr(hands.batch, "find", lambda paths, *a, **k: looked_at.extend(paths) or real(paths, *a, **k))
    monkeypatch.chdir(three_sources)
    summary = crossval.run(None, [])
    folder = three_sources / "runs" / "multi" / "crossval"
    table = pd.read_csv(folder / "crossval.csv", keep_default_na=False)
    assert list(table["held_out"]) == ["one", "hands/hand1", "hands/hand2", "flat"]
    assert list(table["images"]) == [8, 9, 9, 12]
    assert "| hands/hand1 | 9 |" in (folder / "crossval.md").read_text()
    assert (folder / "letters.csv").is_file() and (folder / "crossval.png").stat().st_size > 5000
    found = pd.read_csv(folder / "conflicts.csv", keep_default_na=False)  # every out-of-fold photo, once
    assert found.drop_duplicates(["held_out", "class"])["photos"].sum() == 38 and found["count"].sum() == 38
    assert set(found["held_out"]) == {"one", "hands/hand1", "hands/hand2", "flat"}
    assert "Label conflicts (conflicts.csv)" in (folder / "crossval.md").read_text()
    assert summary["conflicts"].startswith("label conflicts: ")
    assert 0 <= summary["mean"] <= 1
    metrics = read_json(three_sources / "runs" / crossval.fold_name("multi", "hands/hand1") / "evaluate" / "holdout"
                        / "metrics.json")
    assert set(metrics["groups"]) == {"hands/hand1"} and metrics["sources"] == {"hands": {"images": 9, "accuracy":
                                                                                        metrics["accuracy"]}}
    assert len(looked_at) == len(set(looked_at)) == 38  # every image once, over four folds
    looked_at.clear()
    crossval.run(None, ["datablock.valid_pct=0.4"])  # every fold's datablock and evaluate run again
    assert looked_at == []
    assert json.loads((three_sources / "runs" / crossval.fold_name("multi", "one") / "datablock" / "vocab.json")
                      .read_text())["valid_pct"] == 0.4


def test_every_fold_its_own_run_and_its_exact_group_held_out(three_sources, monkeypatch):
    """Groups that share a slug (`s/a b`, `s/a-b`) get run folders of their own; a name holding a quote or a TOML
    escape (`\\u0041`) is held out as written; a fold that fails is a row saying why and the table is still
    written."""
    groups = ["s/a b", "s/a-b", 's/q"x', "s/\\u0041", "s/ok"]
    ran = {}

    def fake_run(cfg, stages, force=False, wait=False):
        if stages != ["download"]:
            ran[cfg.run.name] = cfg.datablock.holdout
            raise PipelineError(f"boom in {cfg.datablock.holdout[0]}")

    monkeypatch.setattr(crossval, "units", lambda cfg, by: groups)
    monkeypatch.setattr(runner, "run", fake_run)
    monkeypatch.chdir(three_sources)
    with pytest.raises(PipelineError, match="5 fold\\(s\\) failed"):
        crossval.run(None, [])
    assert len(ran) == 5 and sorted(h for (h,) in ran.values()) == sorted(groups)
    assert all(name.startswith("multi-cv-") and config._plain_name(name) for name in ran)
    table = pd.read_csv(three_sources / "runs" / "multi" / "crossval" / "crossval.csv", keep_default_na=False)
    assert list(table["held_out"]) == groups
    assert list(table["worst"]) == [f"failed: boom in {g}" for g in groups]


def _two_sources_over_one_folder(tmp_path, second: dict | None = None):
    """Signers hand1..hand4 in class folders a, b; two [[download.sources]] name that one folder."""
    for c in ("a", "b"):
        for signer in range(1, 5):
            flat_images(tmp_path / "B" / c, [f"hand{signer}_{c}_{i}.png" for i in range(2)])
    rules = {"uppercase": True, "group_regex": r"^(hand\d+)_"}
    return tiny_config(tmp_path, {
        "run.name": "overlap", "datablock.split": "group", "datablock.valid_pct": 0.25, "datablock.verify": False,
        "download.sources": [{"name": "first", "source": f"path:{tmp_path / 'B'}", **rules},
                             {"name": "again", "source": f"path:{tmp_path / 'B'}", **rules, **(second or {})}]})


def test_a_file_two_sources_list_lands_on_one_side_of_the_split(tmp_path, capsys):
    """Two sources over one folder: each file is in splits.csv once (where it was first listed), so no signer's
    photo is on both sides of a group split; the log says how many were left out."""
    cfg = _two_sources_over_one_folder(tmp_path)
    runner.run(cfg, ["download", "datablock"])
    ws = Workspace.from_config(cfg)
    df = pd.read_csv(ws.artifact("datablock", "splits.csv"), keep_default_na=False)
    assert len(df) == 16 and df["path"].is_unique and set(df["source"]) == {"first"}
    assert df.groupby("path")["is_valid"].nunique().max() == 1
    assert read_json(ws.artifact("datablock", "vocab.json"))["n_duplicates"] == 16
    assert "left out 16 file(s) listed by more than one source" in capsys.readouterr().out


def test_a_file_with_two_labels_is_an_error_naming_it_and_both(tmp_path):
    cfg = _two_sources_over_one_folder(tmp_path, {"label_map": {"a": "b", "b": "a"}})
    runner.run(cfg, ["download"])
    with pytest.raises(PipelineError, match=rf"file '{tmp_path}/B/a/hand1_a_0.png' is labelled both 'A' \(source "
                                            r"first\) and 'B' \(source again\)"):
        runner.run(cfg, ["datablock"])


def test_a_copy_of_an_image_is_kept_once_unless_its_label_differs(tmp_path, capsys):
    """The same bytes under another name (another signer's folder) would sit on the other side of a group split:
    the copy is left out. A copy under another label is the dataset's own question: both stay, and the log says so."""
    cfg = _two_sources_over_one_folder(tmp_path)
    cfg = tiny_config(tmp_path, {"run.name": "copies", "datablock.split": "group", "datablock.valid_pct": 0.25,
                                 "datablock.verify": False, "download.sources": [cfg.download.sources[0].__dict__]})
    b = tmp_path / "B"
    (b / "a" / "hand4_a_9.png").write_bytes((b / "a" / "hand1_a_0.png").read_bytes())   # same label: a copy
    (b / "b" / "hand4_b_9.png").write_bytes((b / "a" / "hand2_a_0.png").read_bytes())   # another label
    runner.run(cfg, ["download", "datablock"])
    df = pd.read_csv(Workspace.from_config(cfg).artifact("datablock", "splits.csv"), keep_default_na=False)
    assert "a/hand4_a_9.png" not in set(df["path"]) and "b/hand4_b_9.png" in set(df["path"]) and len(df) == 17
    out = capsys.readouterr().out
    assert "left out 1 file(s) that are copies of another image of their label" in out
    assert "note: 1 image(s) hold the same bytes as an image of another label, e.g. b/hand4_b_9.png" in out


def test_a_holdout_that_takes_everything_says_so(three_sources):
    runner.run(load(three_sources), ["download"])
    with pytest.raises(PipelineError, match=r"datablock.holdout = \['one', 'hands', 'flat'\] took every image \(38 "
                                            r"held out\): nothing is left to train a classifier on"):
        runner.run(load(three_sources, 'datablock.holdout=["one", "hands", "flat"]'), ["datablock"])


@pytest.mark.slow
def test_crossval_locks_each_fold_and_a_busy_fold_is_a_row_saying_why(three_sources, monkeypatch):
    """Each fold's run folder is locked while it runs: one another process holds is a failed row naming the holder;
    the other folds run and the table is still written."""
    import subprocess
    import sys

    from pipeline.core import runlock
    from tests.conftest import subprocess_env

    monkeypatch.chdir(three_sources)
    busy = Workspace.from_config(load(three_sources, f"run.name={crossval.fold_name('multi', 'one')}")).root
    with runlock.hold(busy), runlock.hold(busy):  # reentrant within a process
        pass
    assert runlock.holder(busy) is None
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pipeline.core import runlock\n"
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
