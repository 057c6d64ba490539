from pathlib import Path

import pytest

from pipeline import config
from pipeline.core.errors import PipelineError
from tests.conftest import REPO, tiny_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_demo_config_is_the_default(tmp_path):
    cfg = config.load(None, cwd=tmp_path)
    assert cfg.source_file == str(config.demo_config())
    assert cfg.download.source == "sklearn:digits"
    assert cfg.evaluate.test_sets[0].label_regex == r"^(\d)_\d+\.png$"


def test_pipeline_toml_in_cwd_wins(tmp_path):
    write(tmp_path, "")
    (tmp_path / "pipeline.toml").write_text('[run]\nname = "mine"\n')
    assert config.load(None, cwd=tmp_path).run.name == "mine"


@pytest.mark.parametrize("assignment, section, key, expected", [
    ("train.epochs=6", "train", "epochs", 6),
    ("train.base_lr=3e-3", "train", "base_lr", 3e-3),
    ("train.base_lr=lr_find", "train", "base_lr", "lr_find"),
    ("datablock.verify=false", "datablock", "verify", False),
    ("datablock.valid_pct=0.3", "datablock", "valid_pct", 0.3),
    ("download.source=kaggle:grassknoted/asl-alphabet", "download", "source", "kaggle:grassknoted/asl-alphabet"),
    ("run.name=123", "run", "name", "123"),
    ("train.momentum=1", "train", "momentum", 1.0),
])
def test_set_values_are_typed_against_the_field(tmp_path, assignment, section, key, expected):
    cfg = config.load(write(tmp_path, ""), [assignment])
    value = getattr(getattr(cfg, section), key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("assignment, message", [
    ("train.epochz=3", "unknown key train.epochz; valid keys in [train]: arch"),
    ("trian.epochs=3", "unknown config section [trian]"),
    ("train.epochs=three", "train.epochs: expected an integer, got 'three'"),
    ("train.epochs=2.5", "train.epochs: expected an integer"),
    ("datablock.verify=yes", "datablock.verify: expected true/false"),
    ("train.image_size=0", "train.image_size must be a positive"),
    ("train.batch_size=0", "train.batch_size must be a positive"),
    ("train.base_lr=fast", "train.base_lr must be a number or \"lr_find\""),
    ("datablock.valid_pct=1.5", "valid_pct must be between 0 and 1"),
    ("epochs=3", "--set expects SECTION.KEY=VALUE"),
    ("run.name=../x", "run.name must be a plain name"),
    # checked before any stage starts, so a typo never reaches a stage (issue 14)
    ("train.base_lr=inf", "train.base_lr must be a finite number > 0"),
    ("train.base_lr=nan", "train.base_lr must be a finite number > 0"),
    ("train.base_lr=0", "train.base_lr must be a finite number > 0"),
    ("lr_find.num_it=0", "lr_find.num_it must be >= 1"),
    ("lr_find.start_lr=20", "lr_find.start_lr must be smaller than lr_find.end_lr"),
    ("lr_find.end_lr=inf", "lr_find.start_lr and lr_find.end_lr must be finite numbers > 0"),
    ("train.image_size=20000", "train.image_size must be a positive number of pixels, at most 1024"),
    ("train.wd=-1", "train.wd must be a finite number >= 0"),
    ("train.lr_mult=inf", "train.lr_mult must be a finite number >= 1"),
    ("download.source=ftp://x/y.zip", "download.source: bad source 'ftp://x/y.zip'"),
    # the seed reaches numpy, torch and fastai's RandomSplitter, which take 0 <= seed < 2**32 (issue 36)
    ("run.seed=99999999999999999999999", "run.seed must be a whole number in [0, 2**32)"),
    ("run.seed=4294967296", "run.seed must be a whole number in [0, 2**32)"),
    ("run.seed=-1", "run.seed must be a whole number in [0, 2**32)"),
])
def test_bad_values_fail_with_one_clear_line(tmp_path, assignment, message):
    with pytest.raises(PipelineError) as e:
        config.load(write(tmp_path, ""), [assignment])
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("test_set, message", [
    ('name = "../../../../x"\nsource = "path:t"', "evaluate.test_sets name '../../../../x' must be a plain name"),
    ('name = "t"\nsource = "kaggle:noslash"', "test set t: bad source 'kaggle:noslash'"),
])
def test_test_set_names_and_sources_are_checked_before_any_stage(tmp_path, test_set, message):
    with pytest.raises(PipelineError) as e:
        config.load(write(tmp_path, f"[[evaluate.test_sets]]\n{test_set}\n"))
    assert message in str(e.value)


def test_unknown_section_and_key_in_file(tmp_path):
    with pytest.raises(PipelineError, match=r"unknown section \[trainer\]; valid sections: run, download"):
        config.load(write(tmp_path, "[trainer]\nepochs = 1\n"))
    with pytest.raises(PipelineError, match=r"unknown key config.train.lr"):
        config.load(write(tmp_path, "[train]\nlr = 1\n"))
    with pytest.raises(PipelineError, match="invalid TOML"):
        config.load(write(tmp_path, "[train\n"))
    with pytest.raises(PipelineError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_test_sets_are_parsed_and_checked(tmp_path):
    cfg = config.load(write(tmp_path, """
[[evaluate.test_sets]]
name = "a"
source = "path:x"
label_regex = '^([A-Z])_'
label_map = { Del = "del" }
"""))
    (t,) = cfg.evaluate.test_sets
    assert (t.name, t.label_map, t.uppercase) == ("a", {"Del": "del"}, False)
    with pytest.raises(PipelineError, match="unique"):
        config.load(write(tmp_path, '[[evaluate.test_sets]]\nname="a"\nsource="x"\n'
                                    '[[evaluate.test_sets]]\nname="a"\nsource="y"\n'))
    with pytest.raises(PipelineError, match="needs a name and a source"):
        config.load(write(tmp_path, '[[evaluate.test_sets]]\nname="a"\n'))


def test_resolved_config_round_trips_as_json(tmp_path):
    import json

    cfg = config.load(write(tmp_path, '[train]\nepochs = 7\n'), ["run.seed=3"])
    saved = json.loads(config.dumps(cfg))
    assert saved["train"]["epochs"] == 7 and saved["run"]["seed"] == 3
    assert saved["source_file"] == str((tmp_path / "c.toml").resolve())


RECIPES = sorted((REPO / "configs").glob("*.toml"))  # research/ tests its own configs (research/tests/)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_configs_load_and_validate(path):
    cfg = config.load(path, cwd=REPO)
    assert cfg.run.name and cfg.evaluate.test_sets
    if path.stem == "asl_robust":
        assert cfg.datablock.input == "landmarks" and cfg.train.arch == "landmark_mlp"


def test_tiny_config_is_the_demo_shrunk(tmp_path):
    """The tests' shared config: demo.toml with SHRINK and the overrides, every other demo value kept."""
    cfg, demo = tiny_config(tmp_path, {"train.epochs": 3}), config.load(config.demo_config())
    assert cfg.train.epochs == 3 and cfg.train.arch == "logreg" and cfg.evaluate.test_sets == []
    assert (cfg.train.lr_mult, cfg.evaluate.batch_size) == (demo.train.lr_mult, demo.evaluate.batch_size)
    assert config.load(None, cwd=tmp_path) == cfg  # the file a `python -m pipeline` run there reads
    with pytest.raises(PipelineError, match=r"unknown key config\.train\.epoch;"):
        tiny_config(tmp_path, {"train.epoch": 3})


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_each_shipped_recipe_opens_with_what_it_is_for_and_its_figure(path):
    """configs/ holds the recipes a user runs; the first line of each says what for and its figure (a %)."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "%" in first and len(first) <= 120, first
