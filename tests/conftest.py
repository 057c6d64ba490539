"""Shared fixtures: the real data folder (skip when absent) and tiny generated image datasets."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (or $SHARED_DATA); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


def make_image_folder(root: Path, classes=("a", "b"), per_class: int = 6, size: int = 16, seed: int = 0) -> Path:
    """Write `per_class` distinct noisy PNGs for each class under root/<class>/; class k has a bright square in
    quadrant k % 4 (and a brighter frame for k >= 4), so even a linear model separates the classes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    h = size // 2
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.random((size, size, 3)) * 60
            r, q = divmod(k % 4, 2)
            arr[r * h:(r + 1) * h, q * h:(q + 1) * h] += 180
            if k >= 4:
                arr[[0, -1], :] = arr[:, [0, -1]] = 255
            Image.fromarray(arr.clip(0, 255).astype("uint8")).save(root / c / f"{c}_{i}.png")
    return root


def pipeline_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env
