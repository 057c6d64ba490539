"""From-scratch baseline models, the small networks the published sign-language results use.

Every model is an `nn.Sequential` built only from stock `torch.nn` modules (no custom `nn.Module`
subclasses, no lambdas): an exported fastai learner is unpickled by `load_learner` in a process that
need not import this project, and pickle can only rebuild classes it can import there.

Input is a float batch `[B, n_in, size, size]`; output is logits `[B, n_classes]`.
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.errors import PipelineError

_INFO = {
    "logreg": {
        "description": "logistic regression: Flatten -> Linear(pixels, n_classes)",
        "published": "Sign-MNIST test just above 50 % (SGD lr 1e-4, bs 256, 50 ep); "
                     "MNIST 82.6 % (SGD lr 1e-3, bs 100, 5 ep)",
    },
    "mlp": {
        "description": "multilayer perceptron: Flatten -> 512 -> ReLU -> 512 -> ReLU -> n_classes",
        "published": "MNIST 95.1 % (5 ep) / 97.1 % (10 ep); Sign-MNIST 40.5 % (bs 4, 20 ep)",
    },
    "cnnnet": {
        "description": "Kaggle Sign-MNIST Keras CNN: 3 conv3x3 blocks (75, 50, 25) with BatchNorm and "
                       "MaxPool, then 512-unit dense layer with dropout",
        "published": "Sign-MNIST 96.3 % (20 ep, bs 32); 78 % with augmentation",
    },
    "aslnet": {
        "description": "two-block CNN: conv5x5 16 -> pool -> conv5x5 32 -> pool -> Linear(n_classes)",
        "published": "ASL alphabet small, random split, 98–99 % (Adam, bs 32)",
    },
}


BASELINES = tuple(_INFO)  # the names `kinds.images.Baseline.archs` claims (tests/test_kinds.py holds them equal)


def is_baseline(arch: str) -> bool:
    """True when `arch` names one of the from-scratch baselines (not a pretrained timm/torchvision model)."""
    return isinstance(arch, str) and arch in BASELINES


def _check(arch: str, n_classes: int, n_in: int, size: int) -> None:
    if not is_baseline(arch):
        raise PipelineError(f"unknown baseline architecture {arch!r}; choose one of: {', '.join(BASELINES)}")
    for name, value in (("n_classes", n_classes), ("n_in", n_in), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PipelineError(f"baseline {arch}: {name} must be a positive integer, got {value!r}")
    if arch == "aslnet" and size < 4:
        raise PipelineError(f"baseline aslnet needs images of at least 4x4 pixels, got size {size}")


def _flat_features(features: nn.Sequential, n_in: int, size: int) -> int:
    """Number of features the conv part produces for one `[1, n_in, size, size]` input."""
    was_training = features.training
    features.eval()  # BatchNorm must not update its running stats on the dummy input
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, n_in, size, size))
    finally:
        features.train(was_training)
    return int(out.numel())


def _logreg(n_classes: int, n_in: int, size: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in * size * size, n_classes))


def _mlp(n_classes: int, n_in: int, size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in * size * size, 512), nn.ReLU(),
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, n_classes),
    )


def _cnnnet(n_classes: int, n_in: int, size: int) -> nn.Sequential:
    # Keras MaxPool2D((2, 2), strides=2, padding='same') == MaxPool2d(2, 2, ceil_mode=True) (odd sizes round up).
    layers = [
        nn.Conv2d(n_in, 75, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(75),
        nn.MaxPool2d(2, stride=2, ceil_mode=True),
        nn.Conv2d(75, 50, 3, padding=1), nn.ReLU(), nn.Dropout(0.2), nn.BatchNorm2d(50),
        nn.MaxPool2d(2, stride=2, ceil_mode=True),
        nn.Conv2d(50, 25, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(25),
        nn.MaxPool2d(2, stride=2, ceil_mode=True),
        nn.Flatten(),
    ]
    flat = _flat_features(nn.Sequential(*layers), n_in, size)
    return nn.Sequential(
        *layers,
        nn.Linear(flat, 512), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(512, n_classes),
    )


def _aslnet(n_classes: int, n_in: int, size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(n_in, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (size // 4) ** 2, n_classes),
    )


_FACTORIES = {"logreg": _logreg, "mlp": _mlp, "cnnnet": _cnnnet, "aslnet": _aslnet}


def create_baseline(arch: str, n_classes: int, n_in: int = 1, size: int = 28) -> nn.Sequential:
    """A freshly initialised baseline for `[B, n_in, size, size]` inputs and `n_classes` outputs."""
    _check(arch, n_classes, n_in, size)
    return _FACTORIES[arch](n_classes, n_in, size)


def published(arch: str) -> str | None:
    """The published figure a baseline is known for, or None for an arch that is not one of them."""
    return _INFO[arch]["published"] if is_baseline(arch) else None


def baseline_info(arch: str) -> dict:
    """`{"arch", "description", "published"}` for reports: what the model is and the figure it is known for."""
    if not is_baseline(arch):
        raise PipelineError(f"unknown baseline architecture {arch!r}; choose one of: {', '.join(BASELINES)}")
    return {"arch": arch, **_INFO[arch]}
