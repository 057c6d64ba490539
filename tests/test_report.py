"""`python -m pipeline report`: one self-contained HTML page built from a run's artifacts."""
import re
import shutil
import subprocess

import pytest

from pipeline import config, report, runner
from tests.conftest import make_image_folder, pipeline_cmd, subprocess_env


@pytest.fixture
def finished_run(tmp_path):
    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=12, size=16)
    test = make_image_folder(tmp_path / "test", classes=("A", "B", "C"), per_class=4, size=16, seed=5)
    (tmp_path / "pipeline.toml").write_text(f"""
[run]
name = "rep"
[download]
source = "path:{src}"
[datablock]
valid_pct = 0.25
[lr_find]
num_it = 8
[train]
arch = "logreg"
pretrained = false
method = "fit_one_cycle"
base_lr = 0.01
epochs = 1
batch_size = 8
image_size = 16
[[evaluate.test_sets]]
name = "held_out"
source = "path:{test}"
""")
    cfg = config.load(None, cwd=tmp_path)
    runner.run(cfg, list(runner.STAGE_NAMES))
    return tmp_path, cfg


def test_report_is_self_contained_and_shows_every_stage(finished_run):
    project, cfg = finished_run
    page = report.build(cfg).read_text()
    for heading in ("Dataset", "Learning-rate finder", "Training", "Test sets", "held_out", "Per category",
                    "Worst mistakes"):
        assert heading in page
    # every plot inlined (batch, class counts, lr_find, curves, confusion, reliability) and nothing fetched
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 6
    assert not re.search(r'(src|href)="(https?:|file:|/)', page)
    assert "<script" not in page
    # the figures are the run's own
    import json
    test = json.loads((project / "runs" / "rep" / "evaluate" / "held_out" / "metrics.json").read_text())
    assert f"({test['correct']}/{test['scored']})" in page
    wrong = test["scored"] - test["correct"]
    assert page.count("<figure>") == min(wrong, 24)


def test_report_command_and_a_run_without_results(finished_run, tmp_path_factory):
    project, _ = finished_run
    p = subprocess.run(pipeline_cmd("report"), cwd=project, env=subprocess_env(), capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.strip().endswith("report.html"), p.stderr
    empty = tmp_path_factory.mktemp("empty")
    shutil.copy(project / "pipeline.toml", empty / "pipeline.toml")
    p = subprocess.run(pipeline_cmd("report"), cwd=empty, env=subprocess_env(), capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.startswith("error: run rep has no completed stage in ")


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no headless Chromium")
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    _, cfg = finished_run
    page = report.build(cfg)
    shot = tmp_path / "report.png"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2000",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        colors = im.convert("L").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # a rendered page with plots, not a blank or error screen
