"""Bad configuration and sources through the real CLI: exit 2 and exactly one `error: …` line, never a traceback.
(tests/test_config.py and tests/test_sources.py check the messages themselves; this checks what a user sees.)"""
from __future__ import annotations

import pytest

from tests.conftest import make_image_folder
from tests.reliability.conftest import cli, write_config


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
