"""The classes a hand-network export pickles (the kind: `kind.py`): fastai's tabular MLP over
the 64 keypoint FEATURES, their shape features (`shared.model`) and MediaPipe's 1152-value hand-network embedding
(`data.py`). Its export answers a photo (`predict("photo.jpg")`), finding the hand and computing the
embedding (LiteRT) in that process. Its ONNX graph (`graph.py`: `HandNetGraph`) takes the uint8 crop and the
keypoint rows and runs the hand network itself, rebuilt in torch (`network.py`), then the head. `HandNetLateModel` (`train.arch = "late_fusion"`) is late fusion in one model: the keypoint recipe's
MLP and this MLP, each trained on its own loss (`BranchLoss`), their probabilities averaged.

Its own module, importing torch at the top, because `load_learner` unpickles `HandNetModel` and `HandNetLearner` by
their class names (the model card says the export needs this package).
"""
from __future__ import annotations

import warnings

import torch
from fastai.tabular.learner import TabularLearner
from fastai.tabular.model import TabularModel
from torch import nn

from ...data import hands
from ...data.hands import FEATURES
from ...models.inference import predict_rows
from ..shared.model import N_SHAPE, LandmarkNet, shape_features
from . import data as hand_net

LATE_WEIGHT = 0.5  # the keypoint model's share of a late-fusion mixture (0.5 and 0.8 tried by crossval: docs/crossval.md)


class HandNetModel(nn.Module):
    """fastai's TabularModel on the keypoint FEATURES, their `shape_features` and the hand network's embedding."""
    graph_does = "concatenated with the keypoint features and their shape features, the MLP"  # a card's onnx entry

    def __init__(self, n_out: int, layers: list[int], ps: float):
        super().__init__()
        self.tabular = TabularModel([], len(FEATURES) + N_SHAPE + hand_net.N_EMB, n_out, layers, ps=ps, embed_p=0.0,
                                    y_range=None)

    def training_loss(self, base):
        """The loss it trains on: fastai's (`base`) as it is."""
        return base

    def forward(self, x_cat, x_cont):
        keypoints = x_cont[:, :len(FEATURES)]
        return self.tabular(x_cat, torch.cat([keypoints, shape_features(keypoints), x_cont[:, len(FEATURES):]], 1))


class HandNetLateModel(nn.Module):
    """Late fusion in one model: the keypoint recipe's `LandmarkNet` on the 64 FEATURES (`keypoints`) and a
    `HandNetModel` on them beside the embedding (`both`). It outputs the log of their probabilities mixed
    (`weight` × the keypoints' + the rest × both's), so fastai's softmax, the ONNX graph and both engines read the
    mixture. While training it keeps each branch's logits for `BranchLoss`, which trains each on its own loss, as two
    models trained apart (the mixture's own loss would let the branch that fits the training rooms best take over)."""
    graph_does = ("beside the keypoint features into the MLP on both, the keypoint features alone into the keypoint "
                  f"MLP, their probabilities mixed ({LATE_WEIGHT:g} x the keypoint MLP's), log")

    def __init__(self, n_out: int, layers: list[int], ps: float, weight: float = LATE_WEIGHT):
        super().__init__()
        self.keypoints, self.both, self.weight = LandmarkNet(n_out, layers, ps), HandNetModel(n_out, layers, ps), weight
        self.branches = None

    def training_loss(self, base):
        """`BranchLoss`: each branch trained on `base` of its own logits."""
        return BranchLoss(base, self)

    def forward(self, x_cat, x_cont):
        a, b = self.keypoints(x_cat, x_cont[:, :len(FEATURES)]), self.both(x_cat, x_cont)
        if self.training:
            self.branches = (a, b)
        mixed = self.weight * torch.softmax(a, dim=1) + (1 - self.weight) * torch.softmax(b, dim=1)
        return torch.log(mixed.clamp_min(1e-12))

    def __getstate__(self):  # an export pickles no batch of the last training forward
        return {**self.__dict__, "branches": None}


class BranchLoss:
    """The loss of a `HandNetLateModel`: in a training batch, `base` of each branch's logits, summed (each branch
    learns as if alone); otherwise (validation, `get_preds`) `base` of the mixture. fastai's activation and decodes
    are `base`'s: softmax of the mixture's log is the mixture."""

    def __init__(self, base, model: HandNetLateModel):
        self.base, self.model = base, model

    def __call__(self, out, targ, **kwargs):
        branches, self.model.branches = self.model.branches, None
        if self.model.training and branches is not None:
            return sum(self.base(b, targ, **kwargs) for b in branches)
        return self.base(out, targ, **kwargs)

    def activation(self, x):
        return self.base.activation(x)

    def decodes(self, x):
        return self.base.decodes(x)


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
        probs = predict_rows(self, x)
        idx = int(probs[0].argmax())
        return self.dls.vocab[idx], torch.tensor(idx), probs[0]



