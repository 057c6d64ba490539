"""The hand-landmark learner (`train.arch = "landmark_mlp"`), and its model with shape features
(`train.landmark_features = "coords+shape"`): fastai's TabularModel over the keypoint FEATURES of `hands.py` plus
features of the hand's shape that no turn of the camera changes, computed from the keypoints inside the model.
Computing them in the forward pass (not in landmarks.csv) means the training jitter turns the keypoints first, and
the export takes the same keypoint rows as the plain model.

Its own module, importing torch at the top, because `load_learner` unpickles the model by its class name; `hands.py`
(keypoint extraction, which needs no torch) does not import it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from fastai.tabular.model import TabularModel
from torch import nn

from .hands import FEATURES, N_POINTS

N_SHAPE = N_POINTS * (N_POINTS - 1) // 2 + 9  # 210 distances, then 3 unit vectors


def shape_features(conts: torch.Tensor) -> torch.Tensor:
    """(n, N_SHAPE) from a batch of FEATURES rows: the distance between every two of the 21 keypoints (in the
    rows' wrist-to-middle-knuckle unit), then where the hand points: unit wrist-to-middle-knuckle, unit index-to-
    little knuckle and the palm's normal (so letters told apart by direction, H/U, K/P, G/Q, stay apart). A row
    with no hand (all 0) gives all 0."""
    pts = conts[:, :3 * N_POINTS].reshape(-1, N_POINTS, 3)
    i, j = torch.triu_indices(N_POINTS, N_POINTS, 1, device=conts.device)
    dist = (pts[:, i] - pts[:, j]).norm(dim=2)
    up, across = F.normalize(pts[:, 9], dim=1), F.normalize(pts[:, 17] - pts[:, 5], dim=1)
    return torch.cat([dist, up, across, F.normalize(torch.linalg.cross(up, across), dim=1)], dim=1)


class LandmarkNet(nn.Module):
    """fastai's TabularModel (`layers` hidden sizes, dropout `ps`) on FEATURES and their `shape_features`."""

    def __init__(self, n_out: int, layers: list[int], ps: float):
        super().__init__()
        self.tabular = TabularModel([], len(FEATURES) + N_SHAPE, n_out, layers, ps=ps, embed_p=0.0, y_range=None)

    def forward(self, x_cat, x_cont):
        return self.tabular(x_cat, torch.cat([x_cont, shape_features(x_cont)], dim=1))


def make_learner(dls, t, **common):
    """fastai's tabular MLP (two hidden layers, `t.head_dropout` between them) on FEATURES (`t.landmark_features`
    "coords": plain `tabular_learner`), or on FEATURES plus the shape features computed from them ("coords+shape":
    `LandmarkNet`)."""
    from fastai.tabular.learner import TabularLearner, tabular_config, tabular_learner

    layers = [512, 256]
    if t.landmark_features == "coords+shape":
        return TabularLearner(dls, LandmarkNet(len(dls.vocab), layers, t.head_dropout), **common)
    return tabular_learner(dls, layers=layers, config=tabular_config(ps=t.head_dropout, embed_p=0.0),
                           y_range=None, **common)
