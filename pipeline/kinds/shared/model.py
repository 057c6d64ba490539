"""What several kinds share on the model side: the keypoint MLP's pieces (`LAYERS`, the `shape_features` of a hand and
`LandmarkNet`, the tabular DataLoaders over keypoint rows `dataloaders`, the training `jitter_callback`) and
`SettleBatchNorm`, which settles a keypoint model's batch-norm statistics after each fit. The landmark, hand-network
and fused kinds build on them. Torch at the top: exports pickle `LandmarkNet` by its class name."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.tabular.model import TabularModel
from torch import nn

from ...core import artifacts
from ...core.errors import PipelineError
from ...data.hands import FEATURES, N_POINTS


N_SHAPE = N_POINTS * (N_POINTS - 1) // 2 + 9  # 210 distances, then 3 unit vectors
LAYERS = [512, 256]  # the hidden layers of every keypoint MLP (this one, the hand-network kinds', research/keypoint_levers.py)
STRETCH = 0.1       # the jitter's stretch of each axis, up to ± this fraction (with a rotation)


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


def dataloaders(split, feats, vocab: list[str], batch_size: int, columns: list[str] = FEATURES):
    """fastai tabular DataLoaders over the persisted split joined with its landmarks (`columns`, FEATURES unless
    more, as continuous columns, no preprocessing: the coordinates are already on one scale, and the model
    batch-normalises its input)."""
    import numpy as np
    from fastai.data.block import CategoryBlock
    from fastai.tabular.core import TabularPandas
    from fastai.tabular.data import TabularDataLoaders  # its import makes `to.dataloaders` one (with a tabular test_dl)

    df = split.merge(feats[["path"] + columns], on="path", how="inner", validate="one_to_one")
    if len(df) != len(split):
        raise PipelineError(f"{artifacts.LANDMARKS} lacks {len(split) - len(df)} image(s) of the split: "
                            "rerun datablock")
    valid = df["is_valid"].to_numpy()
    to = TabularPandas(df, procs=[], cat_names=[], cont_names=list(columns), y_names="label",
                       y_block=CategoryBlock(vocab=vocab),
                       splits=(np.flatnonzero(~valid).tolist(), np.flatnonzero(valid).tolist()))
    dls = to.dataloaders(bs=batch_size, num_workers=0)
    assert isinstance(dls, TabularDataLoaders)
    return dls


class SettleBatchNorm(Callback):
    """After each fit (not lr_find's): every BatchNorm's statistics computed anew over the whole training set as
    the model reads a photo's keypoints (no jitter; a cumulative average, not the running average of the last ~10
    jittered batches), from one batch of them all. Those running averages are all that changes at the end of a one-cycle schedule, where the
    learning rate is near 0, and they moved the held-out loss 2x from one epoch to the next (crossval's Massey
    folds: 0.22 → 0.48 between epochs 28 and 29), so which epoch ended the fit decided several points of a fold."""
    order = 90

    def before_fit(self):
        self.trained = False  # fastai fires before_fit/after_fit around `get_preds` too: only a fit counts

    def after_train(self):  # every epoch of a fit, one skipped on resume included; never in `get_preds`
        self.trained = True

    def after_fit(self):
        # not after lr_find, nor after a prediction (`get_preds`: a loaded export's training set is empty, and
        # settling on it reset every statistic, so every prediction after the first was wrong)
        if hasattr(self.learn, "lr_finder") or not getattr(self, "trained", False):
            return
        norms = [m for m in self.learn.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # the cumulative average over every batch below
        model, n_inp = self.learn.model, self.learn.dls.n_inp
        was_training = model.training
        model.train()
        try:
            with torch.no_grad():
                # one batch of every training row: its mean and variance are the set's (an average of batch
                # variances would leave out how the batches' means differ); keypoint rows are small (100k: 26 MB)
                dl = self.learn.dls.train
                for batch in dl.new(shuffle=False, drop_last=False, bs=max(1, len(dl.dataset))):
                    model(*batch[:n_inp])
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            model.train(was_training)
        self.learn.final_valid = self._validate()

    def _validate(self) -> dict:
        """The validation metrics of the model as settled (the train stage's metrics: the last epoch's row of
        history.csv was measured before)."""
        model, n_inp = self.learn.model, self.learn.dls.n_inp
        was_training, loss, right, n = model.training, 0.0, 0, 0
        model.eval()
        try:
            with torch.no_grad():
                for batch in self.learn.dls.valid:
                    out, y = model(*batch[:n_inp]), batch[n_inp].view(-1)
                    loss += float(self.learn.loss_func(out, y)) * len(y)
                    right, n = right + int((out.argmax(1) == y).sum()), n + len(y)
        finally:
            model.train(was_training)
        if not n:
            return {}
        return {"valid_loss": loss / n, "valid_accuracy": right / n, "valid_error_rate": 1 - right / n}


def random_rotations(n: int, degrees: float, generator=None):
    """`n` 3x3 rotation matrices, each about x, then y, then z by angles uniform in ±`degrees`."""
    import math

    import torch

    a = (torch.rand(n, 3, generator=generator) * 2 - 1) * math.radians(degrees)
    c, s = a.cos(), a.sin()
    one, zero = torch.ones(n), torch.zeros(n)

    def mat(rows):
        return torch.stack([torch.stack(r, dim=1) for r in rows], dim=1)

    rx = mat([(one, zero, zero), (zero, c[:, 0], -s[:, 0]), (zero, s[:, 0], c[:, 0])])
    ry = mat([(c[:, 1], zero, s[:, 1]), (zero, one, zero), (-s[:, 1], zero, c[:, 1])])
    rz = mat([(c[:, 2], -s[:, 2], zero), (s[:, 2], c[:, 2], zero), (zero, zero, one)])
    return rz @ ry @ rx


def jitter_callback(degrees: float, scale: float = STRETCH, mirror: float = 0.0):
    """A fastai Callback that, on training batches only, turns each hand by a random 3D rotation (up to `degrees`
    about each axis: the viewpoint changes from camera to camera), stretches each axis by up to ±`scale` (hand
    proportions differ from signer to signer; only with a rotation), and mirrors it left to right with probability
    `mirror` (a letter signed with the other hand is its mirror image, and MediaPipe sometimes names the wrong hand
    in a photo taken from the signer's own side, which `canonical` then mirrors wrongly). Rows with no hand stay
    all 0."""
    import torch
    from fastai.callback.core import Callback

    class LandmarkJitter(Callback):
        order = 5

        def before_batch(self):
            if not self.training:
                return
            cats, conts = self.learn.xb
            n = conts.shape[0]
            pts = conts[:, :3 * N_POINTS].reshape(n, N_POINTS, 3)
            rot = random_rotations(n, degrees).to(conts)
            stretch = 1 + (torch.rand(n, 1, 3, device=conts.device) * 2 - 1) * (scale if degrees else 0.0)
            flip = torch.ones(n, 1, 3, device=conts.device)
            flip[torch.rand(n, device=conts.device) < mirror, 0, 0] = -1
            moved = (pts @ rot.transpose(1, 2)) * stretch * flip
            self.learn.xb = (cats, torch.cat([moved.reshape(n, -1), conts[:, 3 * N_POINTS:]], dim=1))

    return LandmarkJitter()
