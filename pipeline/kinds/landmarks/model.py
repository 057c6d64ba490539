"""The classes a landmark export pickles (`HandLearner`; its network is fastai's TabularModel, or with shape
features `shared.model.LandmarkNet`) and the learner's factory. Torch at the top: `load_learner` unpickles the
learner by its class name (so the export needs this package installed, and the model card says so)."""
from __future__ import annotations

import warnings

import torch
from fastai.tabular.learner import TabularLearner
from fastai.tabular.model import TabularModel
from torch import nn

from ...data.hands import FEATURES
from ...models.card import BATCH
from ...models.inference import predict_rows
from ..shared.model import LAYERS, LandmarkNet, SettleBatchNorm


class HandLearner(TabularLearner):
    """fastai's TabularLearner over the keypoint FEATURES, whose `predict` also takes a photo, as a vision learner's
    does: `load_learner(pkl).predict("photo.jpg")` finds the hand (MediaPipe, in this process) and returns (label,
    index, probabilities). A row of features (a pandas Series) is predicted as TabularLearner does. For a photo with
    no hand the model answers as it learned for the all-0 row, and a warning says that no hand was found."""

    def predict(self, row, *args, **kwargs):
        import pandas as pd

        if isinstance(row, pd.Series):
            return super().predict(row, *args, **kwargs)
        probs, found = photo_probs(self, [row], log=lambda message: None)
        if not found[0]:
            warnings.warn(f"no hand found in {row}: the label is the model's answer for an image without a hand",
                          stacklevel=2)
        idx = int(probs[0].argmax())
        return self.dls.vocab[idx], torch.tensor(idx), probs[0]


def photo_probs(learn, paths: list, batch_size: int = BATCH, log=print, store=None) -> tuple[torch.Tensor, list[bool]]:
    """(probabilities, hand found per photo) of a hand-landmark learner for image files: MediaPipe finds each
    photo's keypoints (`hands.extract`, reusing `store`'s), the model classifies them (a photo without a hand
    gets the all-0 row the model learned)."""
    from ...data import hands

    x, found = hands.photo_features(paths, log, store)
    return predict_rows(learn, x, batch_size), found


def network(n_out: int, shape: bool, ps: float) -> nn.Module:
    """fastai's tabular MLP (LAYERS, dropout `ps` between them) on FEATURES, or with `shape` on FEATURES plus the
    shape features computed from them (`LandmarkNet`: `train.landmark_features = "coords+shape"`)."""
    if shape:
        return LandmarkNet(n_out, LAYERS, ps)
    # what fastai's tabular_learner builds for continuous columns only
    return TabularModel([], len(FEATURES), n_out, LAYERS, ps=ps, embed_p=0.0, y_range=None)


def make_learner(dls, shape: bool, ps: float, **common) -> HandLearner:
    """A `HandLearner` over `network`; its batch-norm statistics are settled over the training set after each fit
    (`SettleBatchNorm`)."""
    common = {**common, "cbs": [*common.get("cbs", []), SettleBatchNorm()]}
    return HandLearner(dls, network(len(dls.vocab), shape, ps), **common)
