"""`python -m pipeline report`: one self-contained HTML page built from a run's artifacts."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from pipeline import config, report, runner
from pipeline.core import artifacts
from pipeline.core.workspace import Workspace, write_json
from tests.conftest import BROWSER, make_image_folder, pipeline_cmd, subprocess_env, tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny run through all five stages, shared by the tests that read its report."""
    tmp_path = tmp_path_factory.mktemp("run")
    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=12, size=16)
    test = make_image_folder(tmp_path / "test", classes=("A", "B", "C"), per_class=4, size=16, seed=5)
    cfg = tiny_config(tmp_path, {"run.name": "rep", "download.source": f"path:{src}", "download.subdir": "",
                                 "datablock.valid_pct": 0.25,
                                 "evaluate.test_sets": [{"name": "held_out", "source": f"path:{test}"}]})
    runner.run(cfg, list(runner.STAGE_NAMES))
    return tmp_path, cfg


def test_report_is_self_contained_and_shows_every_stage(finished_run):
    project, cfg = finished_run
    page = report.build(cfg, runner.status(cfg)).read_text()
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


def test_names_with_markup_are_escaped(tmp_path):
    """A file name, a test set's source and a status line land in the page as text, never as markup."""
    cfg = config.load(None, cwd=tmp_path)  # the demo config: one test set, digits_test
    ws = Workspace.from_config(cfg)
    evil = '<img src=x onerror="alert(1)">'
    write_json(ws.artifact("download", artifacts.DATASET), {"source": f"path:{evil}", "root": str(tmp_path),
                                                            "classes": ["1"], "counts": {"1": 1}})
    folder = ws.stage_dir("evaluate") / "digits_test"
    write_json(folder / artifacts.METRICS, {"accuracy": 0.0, "correct": 0, "scored": 1, "unmatched": 0,
                                            "out_of_vocab": 0, "unreadable": 0, "source": evil, "root": str(tmp_path)})
    (folder / artifacts.PREDICTIONS).write_text(f"file,true,predicted,confidence,correct\n"
                                                f"{evil}.png,1,<b>7</b>,0.9,0\n")
    page = report.build(cfg, [("download", f"stale ({evil})")]).read_text()
    assert "<img src=x" not in page and "<b>7</b>" not in page
    assert page.count("&lt;img src=x onerror=&#34;alert(1)&#34;&gt;") == 4  # source twice, the figure's name, status
    assert "&lt;b&gt;7&lt;/b&gt;" in page and "unreadable" in page  # the file itself does not exist


@pytest.mark.skipif(not BROWSER, reason="no Chromium browser found (chromium, chromium-browser or google-chrome on "
                                        "PATH): apt-get install chromium")
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    _, cfg = finished_run
    page = report.build(cfg, runner.status(cfg))
    shot = tmp_path / "report.png"
    subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2000",
                    f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        screen = np.asarray(im.convert("RGB"))
    # the first plot on the page (the sample batch) is drawn pixel for pixel: a blank or error screen has no such block
    with Image.open(Workspace.from_config(cfg).artifact("datablock", artifacts.BATCH_PNG)) as im:
        plot = np.asarray(im.convert("RGB"))
    assert _find(screen, plot) is not None


def _find(screen, img):
    """(top, left) where `img` appears exactly inside `screen` (both H x W x 3 uint8), or None."""
    h, w, _ = img.shape
    r = max(range(h), key=lambda i: len(np.unique(img[i], axis=0)))  # the row least likely to match by chance
    needle = img[r].tobytes()
    for y in range(r, screen.shape[0] - h + r + 1):
        line, start = screen[y].tobytes(), 0
        while (i := line.find(needle, start)) >= 0:
            if i % 3 == 0 and np.array_equal(screen[y - r:y - r + h, i // 3:i // 3 + w], img):
                return y - r, i // 3
            start = i + 1
    return None
