"""research/seeds/*.toml: one loadable config per published baseline row (cheap: nothing is trained)."""
import re
import tomllib
from pathlib import Path

import pytest

from pipeline import config
from pipeline.compare import read_meta
from pipeline.data.idx import FLAT_LABEL_RE as IDX_LABEL_RE
from pipeline.data.sign_mnist import FLAT_LABEL_RE
from pipeline.data.sources import split_converted
from pipeline.kinds.images.model import BASELINES, baseline_info
from tests.conftest import REPO, SHARED_DATA

SEEDS = REPO / "research" / "seeds"
CONFIGS = sorted(SEEDS.glob("*.toml"))
IDS = [p.stem for p in CONFIGS]
# One config per published row of issue 3 (the digits_* twins of the mnist_* rows run without ../shared/data).
PUBLISHED_ROWS = {"signmnist_logreg", "signmnist_mlp", "signmnist_cnnnet", "signmnist_cnnnet_aug",
                  "mnist_logreg", "mnist_mlp_5ep", "mnist_mlp_10ep", "asl28_aslnet"}
GRAY_PREFIXES = ("signmnist_", "mnist_", "digits_")


def load(path: Path) -> config.Config:
    return config.load(path, cwd=REPO)


def test_every_published_row_has_a_config():
    assert PUBLISHED_ROWS <= set(IDS)
    for stem in IDS:
        if stem.startswith("mnist_"):
            assert "digits_" + stem[len("mnist_"):] in IDS, f"{stem} has no data-free digits_ twin"


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_seed_config_loads_and_is_a_from_scratch_baseline(path):
    cfg = load(path)
    t = cfg.train
    assert cfg.run.name == path.stem, "run.name must be the experiment (file) name: runs/<name>/ must not collide"
    assert t.arch in BASELINES
    assert t.pretrained is False
    assert isinstance(t.base_lr, float), "published recipes state their lr"
    if "VARIANT of" in path.read_text():
        assert t.method in ("fit", "fit_one_cycle")
    else:
        assert t.method == "fit", "published recipes use a constant lr"
    assert t.image_size == 28
    assert t.grayscale is path.stem.startswith(GRAY_PREFIXES), "grayscale data stays single-channel, colour not"
    assert cfg.evaluate.test_sets, "every row is scored on a test set"


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_seed_config_names_its_published_figure(path):
    meta = read_meta(path)
    assert re.search(r"\d+(\.\d+)?\s*%", meta.get("published", "")), "needs a '# published: NN %' header line"
    assert meta.get("data")


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_seed_config_data_sources(path):
    cfg = load(path)
    sources = [cfg.download.source] + [t.source for t in cfg.evaluate.test_sets]
    for source in sources:
        inner = split_converted(source)[1]
        if inner.startswith("path:"):
            resolved = Path(inner[len("path:"):])  # resolved against the config file's folder at load
            shared = REPO.parent / "shared" / "data"
            assert resolved.is_relative_to(shared), "shared data is addressed relative to the config, beside the repo"
            if SHARED_DATA.is_dir() and SHARED_DATA.resolve() == shared.resolve():
                assert resolved.exists(), f"{resolved} does not exist beside the repo"
    if path.stem.startswith("signmnist_"):
        assert cfg.download.source.startswith("sign_mnist:") and cfg.download.subdir == "train"
        (t,) = cfg.evaluate.test_sets
        assert t.source == cfg.download.source and t.subdir == "test" and t.label_regex == FLAT_LABEL_RE
    if path.stem.startswith("digits_"):
        assert cfg.download.source == "sklearn:digits" and cfg.download.subdir == "train"
        (t,) = cfg.evaluate.test_sets
        assert (t.source, t.subdir) == ("sklearn:digits", "test") and re.match(t.label_regex, "7_123.png")
    if path.stem.startswith("mnist_"):  # the original IDX files: 60,000 training images, the official 10,000 test
        assert cfg.download.source.startswith("mnist:path:") and cfg.download.subdir == "train"
        (t,) = cfg.evaluate.test_sets
        assert t.source == cfg.download.source and t.subdir == "test" and t.label_regex == IDX_LABEL_RE
        assert 'source = "mnist:url:https://' in path.read_text(), "the comment gives the published files' URL"


@pytest.mark.parametrize("stem", [p.stem for p in CONFIGS if p.stem.startswith("mnist_")])
def test_digits_twin_trains_exactly_like_the_mnist_config(stem):
    mnist = tomllib.loads((SEEDS / f"{stem}.toml").read_text())
    digits = tomllib.loads((SEEDS / f"digits_{stem[len('mnist_'):]}.toml").read_text())
    assert mnist["train"] == digits["train"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_published_figures_agree_with_the_seed_configs(path):
    """A seed config's `# published:` figures are the ones `baseline_info` (compare's fallback) gives its arch."""
    arch = config.load(path, cwd=REPO).train.arch
    figures = re.findall(r"\d+(?:[.–]\d+)?\s*%", read_meta(path)["published"])
    assert figures and all(f in baseline_info(arch)["published"] for f in figures), (figures, baseline_info(arch))
