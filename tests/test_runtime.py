"""Per-machine execution choices: what "auto" resolves to, and that the export never carries them."""
from dataclasses import replace

import pytest

from pipeline.config import RUNTIME, TrainCfg
from pipeline.core import runtime
from pipeline import kinds


@pytest.mark.parametrize("cuda,bf16,cpus,arch,want", [
    (False, False, 2, "tf_efficientnet_lite0", (0, False, "fp32", False)),
    (False, False, 16, "resnet18", (2, False, "fp32", False)),
    (True, True, 16, "resnet18", (8, True, "bf16", True)),
    (True, False, 4, "resnet18", (3, True, "fp16", True)),
    (True, True, 16, "cnnnet", (8, True, "bf16", False)),
])
def test_auto_choices(cuda, bf16, cpus, arch, want):
    rt = runtime.decide(**TrainCfg(arch=arch).entries(RUNTIME),
                        suits_channels_last=kinds.find("images", arch).channels_last, cuda=cuda, bf16=bf16, cpus=cpus)
    assert (rt.workers, rt.pin_memory, rt.precision, rt.channels_last) == want
    assert rt.device == ("cuda" if cuda else "cpu")


def test_explicit_choices_win():
    t = replace(TrainCfg(), num_workers=3, precision="fp16", channels_last="off")
    rt = kinds.find("images", "resnet18").decide_runtime(t)  # what a kind decides for a [train] section
    assert (rt.workers, rt.precision, rt.channels_last) == (3, "fp16", False)
    assert t.entries(RUNTIME) == {"num_workers": 3, "precision": "fp16", "channels_last": "off"}


def test_undo_leaves_a_plain_fp32_learner():
    import torch
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.fp16 import MixedPrecision
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner

    from pipeline.kinds.images.model import create_baseline

    dl = torch.utils.data.DataLoader([(torch.zeros(1, 28, 28), 0)] * 4, batch_size=2)
    learn = Learner(DataLoaders(dl, dl), create_baseline("cnnnet", 3), loss_func=torch.nn.CrossEntropyLoss())
    runtime.apply(learn, runtime.Runtime("cuda", 0, True, "fp16", True, 1))
    assert any(isinstance(c, ChannelsLast) for c in learn.cbs) and any(isinstance(c, MixedPrecision) for c in learn.cbs)
    assert next(p for p in learn.model.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    runtime.undo(learn)
    assert not any(isinstance(c, (ChannelsLast, MixedPrecision)) for c in learn.cbs)
    assert all(p.is_contiguous() and p.dtype == torch.float32 for p in learn.model.parameters())
