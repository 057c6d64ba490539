"""The README's main job, for real: the offline demo through all five stages, reruns, export round trip."""
import collections
import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import pipeline_cmd, subprocess_env, training_fixture

pytestmark = pytest.mark.slow

ARTIFACTS = ["runs/demo/download/dataset.json", "runs/demo/datablock/splits.csv", "runs/demo/datablock/vocab.json",
             "runs/demo/datablock/batch.png", "runs/demo/datablock/class_counts.png", "runs/demo/lr_find/lr_find.json",
             "runs/demo/lr_find/lr_find.png", "runs/demo/train/history.csv", "runs/demo/train/curves.png",
             "runs/demo/train/metrics.json", "exports/demo.pkl", "exports/demo.json",
             "runs/demo/evaluate/digits_test/predictions.csv", "runs/demo/evaluate/digits_test/tallies.csv",
             "runs/demo/evaluate/digits_test/tallies.png", "runs/demo/evaluate/digits_test/confusion.png",
             "runs/demo/evaluate/metrics.json", "runs/demo/config.json"]


def run(cwd, *args, check=True):
    p = subprocess.run(pipeline_cmd(*args), cwd=cwd, env=subprocess_env(), capture_output=True, text=True)
    if check and p.returncode:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@training_fixture(scope="module")
def demo(tmp_path_factory):
    """One real demo run in a fresh directory (no pipeline.toml: the embedded demo config is used): (its folder,
    the finished process, the seconds it took)."""
    cwd = tmp_path_factory.mktemp("demo")
    t0 = time.monotonic()
    first = run(cwd, "run", "--stages", "all")
    return cwd, first, time.monotonic() - t0


def test_all_stages_leave_every_artifact(demo):
    from pipeline.core.progress import EVERY_S

    cwd, first, seconds = demo
    for stage in ("download", "datablock", "lr_find", "train", "evaluate"):
        assert f"[{stage}] running (never run)" in first.stdout
    missing = [a for a in ARTIFACTS if not (cwd / a).is_file()]
    assert not missing, missing
    # readable in a log: one line per epoch, no per-batch redraws. Progress lines come by the clock (a line every
    # EVERY_S seconds of a loop, or at each further tenth), so a slower machine prints more of them: each loop's
    # are bounded by its tenths and the time the whole run took, not counted against a fixed number
    lines = first.stdout.splitlines()
    progress = [line for line in lines if ", ETA " in line]
    assert len(lines) - len(progress) < 45 and "\r" not in first.stdout, first.stdout
    per_loop = collections.Counter(line.split(": ")[0] for line in progress)
    assert all(n <= 10 + seconds / EVERY_S for n in per_loop.values()), per_loop


def test_demo_reaches_90_percent_on_held_out_digits(demo):
    cwd, *_ = demo
    metrics = json.loads((cwd / "runs/demo/evaluate/metrics.json").read_text())
    assert metrics["digits_test"]["accuracy"] >= 0.90, metrics
    assert metrics["digits_test"]["scored"] >= 250 and metrics["digits_test"]["unmatched"] == 0
    tallies = pd.read_csv(cwd / "runs/demo/evaluate/digits_test/tallies.csv")
    assert list(tallies["category"].astype(str)) == [str(d) for d in range(10)]
    card = json.loads((cwd / "exports/demo.json").read_text())
    assert card["arch"] == "tf_efficientnet_lite0" and card["vocab"] == [str(d) for d in range(10)]
    assert card["normalisation"]["mean"] == [0.5, 0.5, 0.5] and len(card["sha256"]) == 64


def test_second_run_skips_everything(demo):
    cwd, *_ = demo
    again = run(cwd, "run", "--stages", "all")
    assert again.stdout.count("up to date, skipped") == 5, again.stdout
    status = run(cwd, "status").stdout
    assert status.count("up to date") == 5, status


def test_exported_learner_loads_with_only_fastai(demo, tmp_path):
    """A fresh interpreter with only fastai importable (not this project) predicts what evaluate predicted."""
    cwd, *_ = demo
    preds = pd.read_csv(cwd / "runs/demo/evaluate/digits_test/predictions.csv", dtype={"true": str, "predicted": str})
    root = json.loads((cwd / "runs/demo/evaluate/digits_test/metrics.json").read_text())["root"]
    files = [f"{root}/{f}" for f in preds["file"][:40]]
    script = f"""
import json, sys
from fastai.learner import load_learner
learn = load_learner({str(cwd / 'exports/demo.pkl')!r})
assert not any(m == 'pipeline' or m.startswith(('pipeline.', 'stages')) for m in sys.modules), 'project imported'
out = []
for f in {files!r}:
    label, idx, probs = learn.predict(f)
    out.append([str(label), float(probs[idx])])
print(json.dumps(out))
"""
    p = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    fresh = json.loads(p.stdout.strip().splitlines()[-1])
    assert [label for label, _ in fresh] == list(preds["predicted"][:40])
    assert [c for _, c in fresh] == pytest.approx(list(preds["confidence"][:40]), abs=1e-4)


def test_predict_command_and_tamper_check(demo, tmp_path):
    cwd, *_ = demo
    preds = pd.read_csv(cwd / "runs/demo/evaluate/digits_test/predictions.csv", dtype={"predicted": str})
    root = json.loads((cwd / "runs/demo/evaluate/digits_test/metrics.json").read_text())["root"]
    out = run(cwd, "predict", "--learner", "exports/demo.pkl", root, "--csv").stdout
    got = pd.read_csv(__import__("io").StringIO(out), dtype={"label": str})
    got["file"] = got["file"].map(lambda f: f.split("/")[-1])
    merged = preds.assign(file=preds["file"].map(lambda f: f.split("/")[-1])).merge(got, on="file")
    assert len(merged) == len(preds) and (merged["label"] == merged["predicted"]).all()

    tampered = tmp_path / "demo.pkl"
    tampered.write_bytes((cwd / "exports/demo.pkl").read_bytes() + b"\0")
    (tmp_path / "demo.json").write_text((cwd / "exports/demo.json").read_text())
    bad = run(cwd, "predict", "--learner", str(tampered), root, check=False)
    assert bad.returncode == 2 and "does not match its model card" in bad.stderr
    assert "Traceback" not in bad.stderr
