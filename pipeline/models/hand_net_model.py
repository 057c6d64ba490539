"""The classes a hand-network export pickles (the kind: kinds/hand_net.py): fastai's tabular MLP over the 64 keypoint
FEATURES, their shape features (hand_model.py) and MediaPipe's 1152-value hand-network embedding
(pipeline/data/hand_net.py). Its export answers a photo (`predict("photo.jpg")`), finding the hand and computing
the embedding in that process.

Its own module, importing torch at the top, because `load_learner` unpickles `HandNetModel` and `HandNetLearner` by
their class names (the model card says the export needs this package).
"""
from __future__ import annotations

import warnings

import torch
from fastai.tabular.learner import TabularLearner
from fastai.tabular.model import TabularModel
from torch import nn

from ..data import hand_net
from ..data.hands import FEATURES
from .hand_model import N_SHAPE, feature_probs, shape_features


class HandNetModel(nn.Module):
    """fastai's TabularModel on the keypoint FEATURES, their `shape_features` and the hand network's embedding."""

    def __init__(self, n_out: int, layers: list[int], ps: float):
        super().__init__()
        self.tabular = TabularModel([], len(FEATURES) + N_SHAPE + hand_net.N_EMB, n_out, layers, ps=ps, embed_p=0.0,
                                    y_range=None)

    def forward(self, x_cat, x_cont):
        keypoints = x_cont[:, :len(FEATURES)]
        return self.tabular(x_cat, torch.cat([keypoints, shape_features(keypoints), x_cont[:, len(FEATURES):]], 1))


class HandNetLearner(TabularLearner):
    """A TabularLearner over `hand_net.COLUMNS` whose `predict` also takes a photo: `load_learner(pkl)
    .predict("photo.jpg")` finds the hand (MediaPipe) and its embedding in this process and returns (label, index,
    probabilities); a photo with no hand gets the model's answer for the all-0 row, and a warning."""

    def predict(self, row, *args, **kwargs):
        import pandas as pd

        if isinstance(row, pd.Series):
            return super().predict(row, *args, **kwargs)
        x, found = hand_net.photo_inputs([row], None, log=lambda message: None)
        if not found[0]:
            warnings.warn(f"no hand found in {row}: the label is the model's answer for an image without a hand",
                          stacklevel=2)
        probs = feature_probs(self, x)
        idx = int(probs[0].argmax())
        return self.dls.vocab[idx], torch.tensor(idx), probs[0]
