"""pipeline.compare (seed configs -> Markdown table) and a short real baseline run on a Sign-MNIST sample."""
import json
import re
import subprocess

import pandas as pd
import pytest

from pipeline import cli
from pipeline import compare as cmp
from tests.conftest import demo_toml, pipeline_cmd, subprocess_env, tiny_config, tiny_toml

# the leading comment block compare reads the published figure and the data from
DIGITS_META = "# published: 82.6 % MNIST test accuracy (tiny test config)\n# data: sklearn digits\n"
# a gray logistic regression by SGD on the demo's digits, scored on their held-out test set
DIGITS_LOGREG = {"datablock.verify": False, "train.method": "fit", "train.opt": "sgd", "train.momentum": 0.9,
                 "train.base_lr": 0.1, "train.batch_size": 64, "train.grayscale": True,
                 "evaluate.test_sets": demo_toml()["evaluate"]["test_sets"]}
FAST = "download,datablock,train,evaluate"  # lr_find is not read when base_lr is a number


def write_config(tmp_path, stem, overrides=None):
    """DIGITS_LOGREG (and `overrides`) as tmp_path/<stem>.toml, run.name `stem`, after DIGITS_META."""
    path = tmp_path / f"{stem}.toml"  # relative paths in it resolve against its folder: runs/ lands in tmp_path
    path.write_text(DIGITS_META + tiny_toml({"run.name": stem, **DIGITS_LOGREG, **(overrides or {})}))
    return path


def table_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[1:]]  # minus the header


@pytest.mark.slow
def test_compare_two_digits_configs_writes_a_table(tmp_path, capsys):
    configs = [write_config(tmp_path, "digits_a"), write_config(tmp_path, "digits_b")]
    out = cmp.compare(configs, tmp_path / "docs" / "table.md", stages=FAST, cwd=tmp_path)

    text = out.read_text()
    assert out == tmp_path / "docs" / "table.md" and cmp.BEGIN in text and cmp.END in text
    rows = table_rows(text)
    assert [r[0] for r in rows] == ["digits_a", "digits_b"]
    for r in rows:
        row = dict(zip(cmp.COLUMNS, r))
        assert row["published"].startswith("82.6 %") and row["data"] == "sklearn digits"
        assert row["model"].startswith("logreg")
        test = float(re.fullmatch(r"(\d+\.\d+) %", row["ours (test acc)"]).group(1))
        assert 0 <= test <= 100
        assert re.fullmatch(r"\d+\.\d+ %", row["ours (valid acc)"])
        assert row["epochs"] == "1"
        assert re.fullmatch(r"\d+\.\d s", row["train time"]) and re.fullmatch(r"\d+\.\d s", row["total time"])
    metrics = json.loads((tmp_path / "runs" / "digits_a" / "evaluate" / "metrics.json").read_text())
    assert f"{100 * metrics['digits_test']['accuracy']:.2f} %" == rows[0][4]
    assert "| digits_b |" in capsys.readouterr().out  # the table is printed too

    # Rerun: notes around the markers survive; up-to-date stages are skipped, the figures stay.
    out.write_text("# My notes\n\nbefore\n\n" + text[text.index(cmp.BEGIN):] + "\nafter\n")
    cmp.compare(configs, out, stages=FAST, cwd=tmp_path)
    again = out.read_text()
    assert again.startswith("# My notes\n\nbefore\n\n" + cmp.BEGIN) and again.endswith(cmp.END + "\n\nafter\n")
    assert table_rows(again) == rows
    assert "up to date, skipped" in capsys.readouterr().out


def test_main_reports_a_failed_experiment_and_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = write_config(tmp_path, "broken", {"download.source": "path:no/such/folder", "download.subdir": ""})
    code = cli.main(["compare", str(bad), "--out", "t.md", "--stages", "download"])  # as `python -m pipeline compare`
    assert code == 1
    (row,) = table_rows((tmp_path / "t.md").read_text())
    assert row[0] == "broken" and row[4].startswith("**failed**") and "no/such/folder" in row[4]
    assert f"python -m pipeline.compare {bad} --out t.md --stages download`" in (tmp_path / "t.md").read_text()


def test_usage_errors_fail_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = write_config(tmp_path, "good")
    assert cmp.main([str(tmp_path / "missing.toml"), "--out", "t.md"]) == 2
    assert cmp.main([str(good), "--out", "t.md", "--set", "train.nope=1"]) == 2
    dup = write_config(tmp_path, "dup", {"run.name": "good"})
    assert cmp.main([str(good), str(dup), "--out", "t.md"]) == 2
    (tmp_path / "notes.md").write_text("hand-written, no markers\n")
    assert cmp.main([str(good), "--out", "notes.md"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert "both use run.name 'good'" in err[2] and "markers" in err[3]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "t.md").exists()
    assert (tmp_path / "notes.md").read_text() == "hand-written, no markers\n"


def test_read_meta_only_reads_the_leading_comment_block(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("# an experiment\n#  published:  50 % test  \n# data: somewhere\n\n[run]\n# published: later\n")
    assert cmp.read_meta(path) == {"published": "50 % test", "data": "somewhere"}
    path.write_text("[run]\nname = 'x'\n")
    assert cmp.read_meta(path) == {}


def test_table_formats_cells():
    rows = [cmp.Row("a", None, model="m", data="d|x", published="p", test={"t": 0.51234}, valid=0.9, epochs=3,
                    train_s=75.4, total_s=3725.0),
            cmp.Row("b", None, test={"t1": 0.5, "t2": 0.25}),
            cmp.Row("c", None, error="boom")]
    (a, b, c) = table_rows(cmp.table(rows))
    assert a == ["a", "m", "d\\|x", "p", "51.23 %", "90.00 %", "3", "1 min 15 s", "1 h 02 min"]
    assert b[4] == "t1: 50.00 %; t2: 25.00 %" and b[5:] == ["—", "—", "—", "—"]
    assert c[4] == "**failed**: boom"
    assert [cmp._lr(x) for x in (1e-3, 6.3e-4, 0.1)] == ["1e-3", "6.3e-4", "0.1"]


# ------------------------------------------------------------------ a real baseline on a Sign-MNIST sample

@pytest.fixture
def sign_mnist_sample(shared_data, tmp_path):
    """The first 2,000 training and 500 test rows of the real Sign-MNIST CSVs."""
    src = shared_data / "sign_mnist"
    if not src.is_dir():
        pytest.skip(f"{src} not present")
    out = tmp_path / "sign_mnist_sample"
    out.mkdir()
    for name, rows in (("sign_mnist_train", 2000), ("sign_mnist_test", 500)):
        pd.read_csv(src / f"{name}.csv.gz", nrows=rows).to_csv(out / f"{name}.csv", index=False)
    return out


@pytest.mark.slow
@pytest.mark.shared_data
def test_cnnnet_on_a_sign_mnist_sample_beats_chance_by_far(sign_mnist_sample, tmp_path):
    src = f"sign_mnist:path:{sign_mnist_sample}"
    tiny_config(tmp_path, {"run.name": "sample_cnnnet", "download.source": src, "download.subdir": "train",
                           "datablock.valid_pct": 0.1, "datablock.verify": False, "train.arch": "cnnnet",
                           "train.base_lr": 3e-3, "train.epochs": 2, "train.batch_size": 32, "train.image_size": 28,
                           "train.grayscale": True, "evaluate.batch_size": 256,
                           "evaluate.test_sets": [{"name": "sign_mnist_test", "source": src, "subdir": "test",
                                                   "label_regex": r"^([A-Z])_\d+\.png$"}]})
    p = subprocess.run(pipeline_cmd("run", "--stages", FAST), cwd=tmp_path,
                       env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    metrics = json.loads((tmp_path / "runs" / "sample_cnnnet" / "evaluate" / "metrics.json").read_text())
    test = metrics["sign_mnist_test"]
    assert test["scored"] == 500 and test["unmatched"] == 0
    assert test["accuracy"] >= 0.5, f"test accuracy {test['accuracy']:.3f}; chance is 1/24 ≈ 0.042\n{p.stdout}"
    history = pd.read_csv(tmp_path / "runs" / "sample_cnnnet" / "train" / "history.csv")
    assert len(history) == 2 and (tmp_path / "runs" / "sample_cnnnet" / "train" / "curves.png").is_file()
