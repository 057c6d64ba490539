"""The keypoint learner with MediaPipe's hand-network embedding beside the keypoints (`train.arch = "landmark_mlp"`
on `datablock.input = "hand_net"`, pipeline/data/hand_net.py): fastai's tabular MLP over the 64 keypoint FEATURES,
their shape features (hand_model.py) and the 1152-value embedding, trained with the keypoint recipe's jitter (on the
keypoint columns only) and `SettleBatchNorm`. Its export answers a photo (`predict("photo.jpg")`), finding the hand
and computing the embedding in that process. No ONNX graph: the hand network is a TFLite graph, not a torch module.

Its own module, importing torch at the top, because `load_learner` unpickles `HandNetModel` and `HandNetLearner` by
their class names (the model card says the export needs this package).
"""
from __future__ import annotations

import warnings

import torch
from fastai.tabular.learner import TabularLearner
from fastai.tabular.model import TabularModel
from torch import nn

from ..core.errors import PipelineError
from ..data import hand_net
from ..data.hands import FEATURES
from .hand_model import N_SHAPE, SettleBatchNorm, feature_probs, shape_features


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


def is_hand_net_learner(learn) -> bool:
    return list(getattr(learn.dls, "cont_names", []) or []) == hand_net.COLUMNS


def dataloaders(ws, cfg, batch_size: int | None = None):
    """Tabular DataLoaders over the persisted split: landmarks.csv's keypoint rows beside each photo's embedding
    (from the store datablock filled; computed for any it lacks)."""
    import pandas as pd

    from ..core import artifacts
    from ..data import hand_crops, loaders
    from . import hand_model

    quiet = lambda message: None  # noqa: E731
    df, root, vocab = loaders.checked_split(ws, cfg, batch_size)
    feats = pd.read_csv(ws.artifact("datablock", artifacts.LANDMARKS), dtype={"path": str}, keep_default_na=False)
    paths = [root / p for p in df["path"]]
    raws, _ = hand_crops.find(paths, ws.data, quiet)
    emb = pd.DataFrame(hand_net.embed(paths, raws, ws.data, quiet), columns=hand_net.COLUMNS[len(FEATURES):])
    emb.insert(0, "path", df["path"].to_numpy())
    table = feats[["path"] + FEATURES].merge(emb, on="path", how="inner", validate="one_to_one")
    return hand_model.dataloaders(df, table, vocab, batch_size or cfg.train.batch_size, hand_net.COLUMNS)


def make_learner(dls, t, **common) -> HandNetLearner:
    """A `HandNetLearner` (two hidden layers, `t.head_dropout`), with the keypoint recipe's jitter (`landmark_rotate`,
    `landmark_mirror`: it moves the keypoint columns, not the embedding) and `SettleBatchNorm`."""
    from .hand_model import jitter_callback

    extra = ([jitter_callback(t.landmark_rotate, mirror=t.landmark_mirror)]
             if t.landmark_rotate or t.landmark_mirror else [])
    common = {**common, "cbs": [*common.get("cbs", []), *extra, SettleBatchNorm()]}
    return HandNetLearner(dls, HandNetModel(len(dls.vocab), [512, 256], t.head_dropout), **common)


def probs(engine, paths: list, batch_size: int = 64, tta: int = 0, log=print, store=None):
    """(probabilities, hand found) for photos (`models.Input.probs`): keypoints and embeddings through the stores
    beside `store` (a content store in the data folder) when given."""
    from pathlib import Path

    if tta:
        raise PipelineError("test-time augmentation augments pixels: a hand-keypoint model takes none")
    x, found = hand_net.photo_inputs(paths, Path(store.path).parent if store is not None else None, log)
    return engine.features(x, batch_size), found


def read(engine, photo, detector):
    """(probabilities or None with no hand, the keypoints or None) for one photo (a path, with a `Detector`) or one
    frame of a stream (an RGB array, with a `Tracker`): `models.Input.read`."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from ..data import hand_crops

    points, handedness, score = detector(photo)
    if points is None:
        return None, None
    img = hand_crops._upright(photo) if isinstance(photo, (str, Path)) else Image.fromarray(np.asarray(photo))
    x = hand_net.frame_inputs(img, points, handedness, score)
    if not x[0, len(FEATURES) - 1]:  # keypoints too close together for the features (the no-hand row)
        return None, None
    return engine.features(x, 1)[0], points


def onnx_plan(learn, t):
    raise PipelineError("the hand-network model reads MediaPipe's hand network, a TFLite graph and not a torch module: "
                        "no ONNX export of it here; use the fastai engine")
