"""`python -m pipeline report`: one self-contained HTML page built from a run's artifacts."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from pipeline import config, report, runner
from pipeline.core import artifacts
from pipeline.core.workspace import Workspace, write_json
from tests.conftest import BROWSER, needs_browser, pipeline_cmd, subprocess_env


@pytest.fixture(scope="module")
def finished_run(trained, tmp_path_factory):
    """A copy of the session's tiny run through all five stages (conftest's `tiny_project`: run `tiny`, test set
    `t`), shared by the tests that read its report."""
    project = trained.copy("tiny_run", tmp_path_factory.mktemp("run") / "project")
    return project, config.load(None, cwd=project)


def test_report_is_self_contained_and_shows_every_stage(finished_run):
    project, cfg = finished_run
    page = report.build(cfg, runner.status(cfg)).read_text()
    for heading in ("Dataset", "Learning-rate finder", "Training", "Test sets", "<h3>t</h3>", "Per category",
                    "Worst mistakes", "Per class: precision, recall, F1", "Top losses"):
        assert heading in page
    assert "Cross-validation" not in page  # crossval has not run for this run
    # every plot inlined (batch, class counts, the validation split's near-copies, lr_find, curves, confusion,
    # reliability, the test set's near-copies, the validation split's and the test set's top losses), nothing fetched
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 10
    assert not re.search(r'(src|href)="(https?:|file:|/)', page)
    assert "<script" not in page
    # the figures are the run's own
    import json
    test = json.loads((project / "runs" / "tiny" / "evaluate" / "t" / "metrics.json").read_text())
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
    assert p.returncode == 2 and p.stderr.startswith("error: run tiny has no completed stage in ")


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


def test_the_held_out_groups_are_shown_as_a_test_set(tmp_path):
    """A run with datablock.holdout (each crossval fold) is scored on its held-out groups: the page shows that set,
    its interpretation included, before the configured test sets."""
    import pandas as pd

    from pipeline.core.workspace import write_csv
    from pipeline.data import loaders
    from pipeline.models import interpretation

    cfg = config.load(None, cwd=tmp_path)  # the demo config: one test set, digits_test
    cfg.datablock.holdout = ["signer1"]
    folder = Workspace.from_config(cfg).stage_dir("evaluate") / loaders.HOLDOUT_SET
    write_json(folder / artifacts.METRICS, {"accuracy": 0.5, "correct": 2, "scored": 4, "unmatched": 0,
                                            "out_of_vocab": 0, "unreadable": 0, "source": "datablock.holdout: s",
                                            "root": str(tmp_path)})
    truth, predicted = ["A", "A", "B", "B"], ["A", "B", "B", "A"]
    write_csv(folder / artifacts.CLASS_REPORT, interpretation.classification_report(truth, predicted, ["A", "B"]))
    write_csv(folder / artifacts.MOST_CONFUSED, interpretation.most_confused(truth, predicted))
    page = report.build(cfg, []).read_text()
    assert page.index(f"<h3>{loaders.HOLDOUT_SET}</h3>") < page.index("<h3>digits_test</h3>")
    assert f'id="report-{loaders.HOLDOUT_SET}"' in page and "(2/4)" in page
    assert "<td>A</td><td>B</td><td>1</td>" in page.replace("\n", "")  # most confused: A as B once
    assert pd.read_csv(folder / artifacts.CLASS_REPORT)["recall"].tolist()[:2] == [0.5, 0.5]


def test_report_shows_near_copies_and_label_conflicts(finished_run):
    """The validation split's and the test set's near-copies (their share and the gallery of closest pairs) and
    crossval's label conflicts: the flagged cell with thumbnails of its photos, the spread one named apart."""
    import json

    import pandas as pd

    from pipeline import crossval

    project, cfg = finished_run
    photos = sorted(str(p) for p in (project / "train" / "A").glob("*.png"))
    preds = pd.DataFrame([{"held_out": "grassknoted", "true": "A", "predicted": "B", "path": p} for p in photos[:8]]
                         + [{"held_out": "grassknoted", "true": "C", "predicted": c, "path": ""} for c in "ABCAB"])
    folder = Workspace.from_config(cfg).root / "crossval"
    folds = pd.DataFrame([{"held_out": "grassknoted", "images": 13, "accuracy": 0.1, "worst": "A 0%"}])
    try:
        summary = crossval.write_table(folder, cfg, "group", folds, None, None, [], preds)
        page = report.build(cfg, runner.status(cfg)).read_text()
    finally:
        shutil.rmtree(folder)
    assert summary["conflicts"].startswith("label conflicts: 1 class(es)")
    assert "grassknoted's A is read as B in 100% (8 of 8 photos)" in summary["conflicts"]
    table = page[page.index('id="conflicts-table"'):page.index("</table>", page.index('id="conflicts-table"'))]
    assert "<td>grassknoted</td><td>A</td>" in table and "100.0 %" in table and "8 of 8" in table
    assert table.count('src="data:image/jpeg;base64,') == 4  # the flagged cell's first photos
    assert "spread confusion" in page and "grassknoted C" in page
    vocab = json.loads((project / "runs" / "tiny" / "datablock" / "vocab.json").read_text())
    assert "valid photos with a near-copy in train" in page and f"of {vocab['n_valid']};" in page
    assert "near-copies of training photos" in page
    for alt in ("leakage", "t: nearest training photos"):
        assert f'alt="{alt}" src="data:image/png;base64,' in page


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


def _crossval(cfg):
    """A crossval table for the run, written by crossval's own writer: three held-out groups (one failed, one with
    a name holding markup) and their letters."""
    import pandas as pd

    from pipeline import crossval

    folds = pd.DataFrame([{"held_out": "massey/hand1", "images": 40, "accuracy": 0.8, "no_hand": 2, "seconds": 3.0,
                           "worst": "A 50%"},
                          {"held_out": "<i>signer</i>", "images": 10, "accuracy": 0.5, "no_hand": 0, "seconds": 2.0,
                           "worst": "B 0%"},
                          {"held_out": "roboflow", "images": 0, "accuracy": float("nan"),
                           "worst": "failed: no images"}])
    letters = pd.DataFrame({"category": ["A", "B", "C", "A", "B", "C"], "accuracy": [0.5, 1.0, 1.0, 1.0, 0.0, 0.75]})
    folder = Workspace.from_config(cfg).root / "crossval"
    crossval.write_table(folder, cfg, "group", folds, letters, None, [])
    return folder


@needs_browser
def test_report_in_chromium_shows_crossval_and_the_interpretation(finished_run):
    """In a real browser: the crossval tables hold crossval.csv's and letters.csv's figures (lowest letter first), its
    plot and both top-losses galleries are decoded images, and the per-class table shows classification_report.csv's
    recall of each class."""
    import pandas as pd
    from playwright import sync_api

    project, cfg = finished_run
    from PIL import Image

    folder = _crossval(cfg)
    with Image.open(folder / artifacts.CROSSVAL_PNG) as im:
        plot_width = im.width
    try:
        page_file = report.build(cfg, runner.status(cfg))
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=BROWSER, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                fetched = []
                page.on("request", lambda r: fetched.append(r.url)
                        if not r.url.startswith(("file:", "data:")) else None)
                page.goto(page_file.as_uri(), wait_until="load")
                cells = lambda table: page.eval_on_selector_all(  # noqa: E731
                    f"#{table} tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText))")
                folds, by_letter = cells("crossval-folds"), cells("crossval-letters")
                report_rows = cells("report-t")
                summary = page.inner_text("#crossval + p")
                images = page.eval_on_selector_all(
                    "img", "imgs => imgs.map(i => [i.alt, i.complete && i.naturalWidth > 0, i.naturalWidth])")
            finally:
                browser.close()
    finally:
        shutil.rmtree(folder)
    assert fetched == []
    assert folds[0] == ["held out", "images", "accuracy", "no hand", "seconds", "worst"]
    assert folds[1:] == [["massey/hand1", "40", "80.0 %", "2", "3.0", "A 50%"],
                         ["<i>signer</i>", "10", "50.0 %", "0", "2.0", "B 0%"],
                         ["roboflow", "0", "", "", "", "failed: no images"]]
    assert summary.startswith("Mean over 2 folds: 65.0 % ± 15.0 %")
    assert by_letter[1:] == [["B", "50.0 %", "0.0 %", "2"], ["A", "75.0 %", "50.0 %", "2"],
                             ["C", "87.5 %", "75.0 %", "2"]]
    expected = pd.read_csv(project / "runs" / "tiny" / "evaluate" / "t" / artifacts.CLASS_REPORT,
                           dtype={"class": str})
    assert [r[0] for r in report_rows[1:]] == list(expected["class"])
    assert [float(r[2]) for r in report_rows[1:]] == pytest.approx(list(expected["recall"]), abs=5e-4)
    shown = {alt: (ok, width) for alt, ok, width in images}
    assert shown["crossval"] == (True, plot_width)  # the plot crossval drew, decoded at its own size
    for alt in ("validation split: top losses", "t: top losses"):
        assert shown[alt][0], alt
    assert all(ok for ok, _ in shown.values()), shown
