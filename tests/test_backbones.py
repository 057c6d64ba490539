"""Each family of arch trains through the real stages and exports a learner that loads without this project."""
import json
import subprocess
import sys

import pytest

from pipeline import runner
from pipeline.core.errors import PipelineError
from pipeline.models import backbones
from pipeline import kinds
from tests.conftest import make_image_folder, tiny_config


def test_lite0_weights_map_onto_timm(tmp_path):
    import timm
    import torch

    path = backbones.lite0_weights(tmp_path)
    assert path.exists() and backbones.lite0_weights(tmp_path) == path  # converted once, then reused
    model = timm.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay={"file": str(path)})
    sd = torch.load(path, weights_only=True)
    assert torch.equal(model.conv_stem.weight, sd["conv_stem.weight"])
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, sd["blocks.6.0.conv_pwl.weight"])


def test_unknown_arch_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="unknown arch 'resnet19'"):
        backbones.resolve("resnet19", False, tmp_path)


# an example arch of every kind that reads images (the hand kinds' tests are tests/test_hands.py and others)
EXAMPLES = [
    ("pretrained image backbone", "resnet18", {"train.method": "fine_tune"}),               # torchvision route
    ("pretrained image backbone", "mobilenetv3_small_050", {"train.method": "fine_tune"}),  # any timm name
    ("from-scratch baseline", "cnnnet", {"train.grayscale": True}),                         # from-scratch baseline
]


def test_every_image_family_has_an_example():
    assert {f for f, _, _ in EXAMPLES} == {k.name for k in kinds.KINDS if k.input == "images"}
    assert all(kinds.find("images", arch).name == f for f, arch, _ in EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("arch, extra", [(arch, extra) for _, arch, extra in EXAMPLES])
def test_arch_trains_and_exports(tmp_path, arch, extra):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B", "C"), per_class=16, size=32)
    cfg = tiny_config(tmp_path, {"run.name": "b", "download.source": f"path:{data}", "download.subdir": "",
                                 "train.arch": arch, "train.base_lr": 1e-3, "train.image_size": 32, **extra})
    assert runner.run(cfg, ["download", "datablock", "train"])["train"] == "ran"
    card = json.loads((tmp_path / "exports" / "b.json").read_text())
    assert card["arch"] == arch and card["vocab"] == ["A", "B", "C"]
    script = (f"from fastai.learner import load_learner\nimport sys\n"
              f"l = load_learner({str(tmp_path / 'exports' / 'b.pkl')!r})\n"
              f"assert not [m for m in sys.modules if m.split('.')[0] in ('pipeline', 'stages')]\n"
              f"print(l.predict({str(sorted(data.glob('A/*.png'))[0])!r})[0])")
    p = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] in ("A", "B", "C")
