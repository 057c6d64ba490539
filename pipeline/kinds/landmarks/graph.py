"""The landmark kind's ONNX graph: float32 (N, 64) keypoint rows in, the tabular model and the softmax."""
from __future__ import annotations

import torch
from torch import nn

from ...data.hands import N_FEATURES
from ...models.onnx_export import Plan, cpu_copy
from ..shared.graph import features_entry


class LandmarkGraph(nn.Module):
    """float32 (N, 64) keypoint features → probabilities (the tabular model has no categorical inputs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features):
        return torch.softmax(self.model(features[:, :0].long(), features), dim=1)


def _landmark_batches(learn):
    """Over the validation split: (float32 feature rows for the graph, the model's (cats, conts) inputs)."""
    for cats, conts, *_ in learn.dls.valid:
        conts = conts.as_subclass(torch.Tensor).cpu().float()
        yield conts.numpy(), (cats.as_subclass(torch.Tensor).cpu(), conts)


def landmark_plan(learn) -> Plan:
    """A hand-landmark learner's graph: float32 FEATURES rows in, probabilities out."""
    model = cpu_copy(learn)
    return Plan(model, LandmarkGraph(model), ("features",), (torch.zeros(2, N_FEATURES),),
                (((x,), m) for x, m in _landmark_batches(learn)), features_entry())
