"""research/*.toml and research/ablation/*.toml load and validate as the shipped recipes do (research/seeds/ has
test_seed_configs.py)."""
import pytest

from pipeline import config
from tests.conftest import REPO

ROWS = sorted((REPO / "research").glob("*.toml")) + sorted((REPO / "research" / "ablation").glob("*.toml"))


def test_there_are_research_rows():
    assert len(ROWS) >= 12  # asl_fused and the eleven ablation rows


@pytest.mark.parametrize("path", ROWS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_research_configs_load_and_validate(path):
    cfg = config.load(path, cwd=REPO)
    assert cfg.run.name and cfg.evaluate.test_sets
    if path.stem.startswith("l_"):
        assert cfg.datablock.input == "landmarks" and cfg.train.arch == "landmark_mlp"
