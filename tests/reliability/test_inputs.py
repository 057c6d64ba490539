"""Bad configuration and sources through the real CLI: exit 2 and exactly one `error: …` line, never a traceback.
(tests/test_config.py and tests/test_sources.py check the messages themselves; this checks what a user sees.)"""
from __future__ import annotations

import subprocess

import pytest

from tests.conftest import make_image_folder, pipeline_cmd
from tests.reliability.conftest import cli, env, write_config


@pytest.fixture
def project(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=3)
    return write_config(tmp_path / "proj", f"path:{data}")


def one_error_line(p) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize("extra, expected", [
    ("[trainer]\nepochs = 1\n", "unknown section [trainer]; valid sections: run, download"),
    ("[datablock]\nvalid = 0.2\n", "unknown key config.datablock.valid; valid keys in [config.datablock]"),
    ('[lr_find]\nnum_it = "12"\n', "config.lr_find.num_it: expected an integer, got '12'"),
    ('[[evaluate.test_sets]]\nname = "t"\nsource = "path:x"\nlabel_map = "A"\n',
     "config.evaluate.test_sets[0].label_map: expected a table"),
])
def test_bad_config_file(project, extra, expected):
    with open(project / "pipeline.toml", "a") as f:
        f.write(extra)
    assert expected in one_error_line(cli(project, "status"))


@pytest.mark.parametrize("assignment, expected", [
    ("train.image_size=0", "train.image_size must be a positive number of pixels"),
    ("train.batch_size=0", "train.batch_size must be a positive integer"),
    ("train.epochs=two", "train.epochs: expected an integer, got 'two'"),
    ("download.source=kaggle:no-slash", "bad source 'kaggle:no-slash'"),
    ("run.seed=99999999999999999999999", "run.seed must be a whole number in [0, 2**32)"),
])
def test_bad_set_value(project, assignment, expected):
    assert expected in one_error_line(cli(project, "run", "--stages", "download", "--set", assignment))


def test_missing_source_path(project, tmp_path):
    line = one_error_line(cli(project, "run", "--stages", "download", "--set", f"download.source=path:{tmp_path}/nope"))
    assert line == f"error: source path not found: {tmp_path}/nope"


def test_missing_kaggle_credentials(project, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nokaggle"))
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    line = one_error_line(cli(project, "run", "--stages", "download", "--set", "download.source=kaggle:someone/some-set"))
    assert line.startswith("error: no Kaggle credentials for kaggle:someone/some-set")


def test_config_file_that_is_not_utf8(project):
    (project / "pipeline.toml").write_bytes((project / "pipeline.toml").read_bytes() + b"# caf\xe9\n")
    line = one_error_line(cli(project, "status"))
    assert line.startswith(f"error: {project / 'pipeline.toml'}: not UTF-8 text (byte ")


@pytest.mark.parametrize("card, flags, expected", [
    ('{"sha256": 5}', [], "the model card {card} is damaged: sha256 is not a sha256 (64 hex digits); rerun train"),
    ('{"sha256": "ab', [], "the model card {card} is damaged: its text is not JSON (JSONDecodeError); rerun train"),
    (None, [], "no model card at {card}: refusing to unpickle {pkl}"),
    (None, ["--trust-learner"], "cannot load {pkl} as an exported fastai learner (UnpicklingError"),
])
def test_predict_on_a_bad_learner_or_card(project, tmp_path, card, flags, expected):
    pkl = tmp_path / "m.pkl"
    pkl.write_text("not a pickle")
    if card is not None:
        pkl.with_suffix(".json").write_text(card)
    image = next((tmp_path / "imgs" / "A").glob("*.png"))
    line = one_error_line(cli(project, "predict", "--learner", str(pkl), str(image), *flags))
    assert line.startswith("error: " + expected.format(pkl=pkl, card=pkl.with_suffix(".json"))), line


def test_a_folder_where_a_file_is_named_is_one_line_saying_so(project, tmp_path):
    """A folder given as the config or the learner (`status` said "cannot write … Is a directory"; `predict` named
    `<folder>.json`), and a config that is a symbolic link in a loop (it said "does not exist")."""
    image = next((tmp_path / "imgs" / "A").glob("*.png"))
    assert one_error_line(cli(project, "status", "--config", str(tmp_path))) == \
        f"error: config file {tmp_path} is a folder: name a .toml file (--config FILE)"
    (project / "loop.toml").symlink_to(project / "loop.toml")
    assert one_error_line(cli(project, "status", "--config", "loop.toml")) == \
        "error: config file loop.toml is a symbolic link that leads to no file"
    for engine in ("fastai", "onnx"):
        line = one_error_line(cli(project, "predict", "--engine", engine, "--learner", str(tmp_path), str(image)))
        assert line == f"error: {tmp_path} is a folder: name an export file (exports/RUN.pkl)"


def test_stages_into_a_closed_pipe_is_quiet(project):
    """`python -m pipeline stages | head -1`: the reader goes away; no `error: BrokenPipeError`."""
    proc = subprocess.Popen(pipeline_cmd("stages"), cwd=project, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()                                           # before the command writes its first line
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == "", err


def test_report_of_a_run_with_no_completed_stage(project):
    p = cli(project, "run", "--stages", "download", "--set", "download.source=path:/nonexistent")
    assert p.returncode == 2
    assert (project / "runs/r").is_dir()                          # the run folder exists, with nothing complete in it
    line = one_error_line(cli(project, "report"))
    assert line.startswith("error: run r has no completed stage in ")
    assert not (project / "runs/r/report.html").exists()


def test_status_names_the_config_and_run_and_checks_every_stage_when_a_test_set_is_empty(project, tmp_path):
    (tmp_path / "empty").mkdir()
    (project / "runs/r/evaluate").mkdir(parents=True)             # as if evaluate had run before the folder emptied
    (project / "runs/r/evaluate/manifest.json").write_text('{"parts": {}, "outputs": {}}')
    with open(project / "pipeline.toml", "a") as f:
        f.write(f'[[evaluate.test_sets]]\nname = "t"\nsource = "path:{tmp_path / "empty"}"\n')
    p = cli(project, "status")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:2] == [f"config {project / 'pipeline.toml'}", f"run    r ({project / 'runs/r'})"]
    assert [line.split()[0] for line in lines[2:]] == ["download", "datablock", "lr_find", "train", "evaluate"]
    assert lines[-1].startswith("evaluate   cannot be checked: test set t: no image folder found in ")


@pytest.mark.slow
def test_a_failed_run_keeps_every_stage_that_was_up_to_date(project, tmp_path, monkeypatch):
    """Issue 14's first report: after a typo'd arch or a kaggle: source without credentials, `status` under the
    same config still shows the finished stages as up to date (nothing was deleted before the failure)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nokaggle"))
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    assert cli(project, "run", "--stages", "download,datablock").returncode == 0
    before = cli(project, "status").stdout
    assert "download   up to date" in before and "datablock  up to date" in before

    arch = cli(project, "run", "--stages", "datablock,lr_find", "--force", "--set", "train.arch=resnet19")
    assert one_error_line(arch).startswith("error: unknown arch 'resnet19'") and "running" not in arch.stdout
    kaggle = cli(project, "run", "--stages", "download", "--set", "download.source=kaggle:someone/some-set")
    assert one_error_line(kaggle).startswith("error: no Kaggle credentials") and "[download] running" in kaggle.stdout
    assert cli(project, "status").stdout == before


@pytest.mark.parametrize("command, hold", [("spell", "nan"), ("spell", "inf"), ("serve", "nan")])
def test_spelling_rules_that_are_not_finite_numbers(project, tmp_path, command, hold):
    """`spell --hold nan` spelled nothing and exited 0 (issue 36); `serve` takes the same rules. Refused before any
    model or video is opened."""
    args = ["--learner", str(tmp_path / "none.pkl"), "--hold", hold] + ([str(tmp_path / "none.mp4")]
                                                                       if command == "spell" else [])
    line = one_error_line(cli(project, command, *args))
    assert line == f"error: --hold must be a finite number of seconds >= 0, got {hold}", line


@pytest.mark.parametrize("images, labels, expected", [
    (bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (65536, 2**24, 2**24)), [0, 1, 2],
     "train-images-idx3-ubyte: truncated: its header promises 65536 x 16777216 x 16777216 = "),
    (bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0]), [0, 1, 2],
     "train-images-idx3-ubyte: its images are 0 x 0 pixels: no image to read"),
    (None, [0, 0, 0], "train-labels-idx1-ubyte: every training label is 0: one class, and a classifier needs at"),
])
def test_bad_idx_files_through_the_cli(project, tmp_path, images, labels, expected):
    """An IDX header whose sizes overflow, 0 x 0 images, labels of one class (issue 36): one line each."""
    from tests.helpers import idx_bytes

    import numpy as np

    src = tmp_path / "mnist"
    src.mkdir()
    pictures = np.zeros((3, 4, 4), np.uint8)
    (src / "train-images-idx3-ubyte").write_bytes(images or idx_bytes(pictures))
    (src / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array(labels)))
    (src / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(pictures))
    (src / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 2])))
    line = one_error_line(cli(project, "run", "--stages", "download", "--set", f"download.source=mnist:path:{src}",
                              "--set", "download.subdir=train"))
    assert line.startswith(f"error: {src}/{expected}"), line


def test_a_plot_of_names_outside_the_font_saves_without_warnings(tmp_path):
    """Crossval's plot of groups named `日本` (and a class-count plot of such classes) printed matplotlib's `Glyph
    26085 missing from font(s) DejaVu Sans` twice per glyph, with the source line, on stderr (probed for issue 36).
    The glyph is drawn as a box; the tables beside the plot keep the name."""
    import warnings

    from pipeline.core.workspace import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.bar(["日本", "sïgné"], [1, 2])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        save_figure(fig, tmp_path / "groups.png")
    assert [str(w.message) for w in seen] == [] and (tmp_path / "groups.png").stat().st_size > 0
