"""Screening keypoint levers the pipeline does not offer, over the stored MediaPipe detections: leave-one-group-out
over the groups `crossval` uses, in seconds a fold instead of a pipeline run each (research/notes/crossval.md, "Screened").

Every photo of the config's sources goes through the detection store (`hands.detections`: the image keypoints and
MediaPipe's world landmarks, one pass, filled if empty); each fold trains the recipe's model (`LandmarkNet`: the 64
features and their shape features, fastai's TabularModel sizes), with its jitter (`random_rotations`, ±10 %
stretch), AdamW and a one-cycle schedule for `--epochs`, on all the other groups (no validation share held back),
its batch norm settled on the unjittered training rows, and scores the held-out group on the letters it knows.
Its image-keypoint row reproduces the pipeline's `kp_settled` crossval within its seed-to-seed spread.

    OMP_NUM_THREADS=1 taskset -c 0 python -m research.keypoint_levers [--keypoints world] [--turn 0.5] [--tta mirror]

Levers: `--keypoints world` (MediaPipe's metric 3D world landmarks, mirrored and scaled as `hands.canonical` does
the image keypoints), `--turn P` (a training hand seen from the other side with probability P: x and z negated, a
180° turn about the vertical), `--tta mirror|turn` (the held-out hands also mirrored, or turned, probabilities
averaged), `--ensemble K` (K models a fold from different seeds, their probabilities averaged), `--seed`;
`--hand-net` (MediaPipe's hand-network embedding beside the keypoints, `hand_net_model.HandNetModel`, embeddings
from the store, computed if missing) with `--emb-drop P` (dropout on the embedding's columns while training);
`--emb-only` (that embedding alone, without the keypoints: the same MLP on the 1152 values); `--views photo|mean`
(which view of the hand the embedding is of: as photographed, left hands not mirrored; or the mean of the embeddings
of the crop and of its mirror image, blind to MediaPipe's handedness; default: left hands mirrored, as the pipeline
does; the mirrored crops' embeddings are computed once and cached as data/hand_net_flip_<key>.npy);
`--set KEY=VALUE` (config overrides, e.g. `run.data_dir=...` to read filled stores).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from bench._common import REPO, header, result


def _photos(cfg):
    """(paths, labels, crossval units) of every image of `cfg`'s sources, as crossval groups them."""
    from pipeline import crossval, runner
    from pipeline.core import artifacts
    from pipeline.core.workspace import Workspace, read_json
    from pipeline.data import datasets

    runner.run(cfg, ["download"])
    meta = read_json(Workspace.from_config(cfg).artifact("download", artifacts.DATASET))
    units = set(crossval.units(cfg, "group"))
    srcs = {s.name: s for s in cfg.download.training_sources()}
    paths, labels, folds = [], [], []
    for entry in meta["sources"]:
        root = Path(entry["root"])
        found, _ = datasets.labelled_images(root, **srcs[entry["name"]].rules())
        for rel, label, group in found:
            paths.append(str(root / rel))
            labels.append(label)
            folds.append(group if group in units else entry["name"])
    return paths, labels, folds


def _features(dets, keypoints: str):
    """float32 (n, 64): `hands.canonical` of each detection's image keypoints or world landmarks; 0 with no hand."""
    import numpy as np

    from pipeline.data import hands

    rows = []
    for det in dets:
        feats = hands.canonical(hands.keypoints(det, world=keypoints == "world"), det[1]) if det[0] else None
        rows.append(feats if feats is not None else np.zeros(len(hands.FEATURES), np.float32))
    return np.stack(rows).astype(np.float32)


def _embedding_net(n_out: int, layers: list[int], ps: float):
    """The recipe's MLP (fastai's TabularModel) on the hand network's embedding alone: it reads the columns after
    the 64 keypoint features and ignores those (the jitter that moves them then changes nothing it sees)."""
    import torch
    from fastai.tabular.model import TabularModel

    from pipeline.data import hands
    from pipeline.kinds.hand_net import data as hand_net

    class _EmbeddingNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tabular = TabularModel([], hand_net.N_EMB, n_out, layers, ps=ps, embed_p=0.0, y_range=None)

        def forward(self, x_cat, x_cont):
            return self.tabular(x_cat, x_cont[:, len(hands.FEATURES):])

    return _EmbeddingNet()


def _flipped(paths, dets, folder: Path):
    """float32 (n, N_EMB): the embedding of each photo's crop mirrored (`hand_net.crop` flipped left to right),
    zeros with no hand; from the .npy in `folder` (keyed by the network's file, the crop settings and the photos),
    computed with LiteRT and written atomically when missing."""
    import hashlib
    import json
    import os
    import time

    import numpy as np

    from pipeline.kinds.hand_net import data as hand_net

    have = [i for i, r in enumerate(dets) if r[0]]
    key = hashlib.sha256(json.dumps([hand_net.settings(), "flipped", [str(paths[i]) for i in have]], default=str)
                         .encode()).hexdigest()[:16]
    file = Path(folder) / f"hand_net_flip_{key}.npy"
    out = np.zeros((len(paths), hand_net.N_EMB), np.float32)
    if file.exists():
        out[have] = np.load(file)
        result("mirrored crops' embeddings", str(file), note="read, not recomputed")
        return out
    net, t0 = hand_net.network(), time.perf_counter()
    for i in have:
        out[i] = net(hand_net.crop(paths[i], dets[i])[:, ::-1])
    result("mirrored crops' embeddings", round((time.perf_counter() - t0) / max(len(have), 1) * 1000, 1), "ms a photo",
           note=f"{len(have)} photos, written to {file}")
    tmp = file.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, out[have])
    os.replace(tmp, file)
    return out


def _views(x, tta: str):
    import torch

    out = [x]
    if tta:
        v = x.clone()
        p = v[:, :63].view(-1, 21, 3)
        p[:, :, 0] *= -1
        if tta == "turn":
            p[:, :, 2] *= -1
        out.append(v)
    return out


def _fold(x, y, train, test, n_out, a, seed: int, t):
    """Held-out probabilities of one fold's model, trained from `seed` with the config's recipe `t` (`cfg.train`:
    its model as the pipeline builds it, `base_lr`, `wd`, `epochs`, `batch_size`, `landmark_rotate`), one cycle as
    fastai's `fit_one_cycle` schedules it (pct_start 0.25)."""
    import torch
    import torch.nn.functional as F

    from pipeline.kinds.shared import model as shared_model
    from pipeline.kinds.landmarks import model as landmark_model

    torch.manual_seed(seed)
    xtr, ytr = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    if a.emb_only:
        model = _embedding_net(n_out, shared_model.LAYERS, t.head_dropout)
    elif a.hand_net:
        from pipeline.kinds.hand_net import model as hand_net_model

        model = hand_net_model.HandNetModel(n_out, shared_model.LAYERS, t.head_dropout)
    else:
        model = landmark_model.network(n_out, t.landmark_features == "coords+shape", t.head_dropout)
    bs, lr = t.batch_size, float(t.base_lr)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=t.wd or 0.01)  # fastai's Adam: 0.01 when unset
    steps = t.epochs * (len(xtr) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.25)
    no_cats = torch.zeros(bs, 0, dtype=torch.long)
    model.train()
    for _ in range(t.epochs):
        order = torch.randperm(len(xtr))
        for i in range(len(xtr) // bs):
            idx = order[i * bs:(i + 1) * bs]
            xb = _jitter(xtr[idx], a.turn, t.landmark_rotate)
            if a.emb_drop:
                xb = torch.cat([xb[:, :64], F.dropout(xb[:, 64:], a.emb_drop)], 1)
            loss = F.cross_entropy(model(no_cats, xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:  # as shared_model.SettleBatchNorm: the unjittered training rows, one batch
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        model(torch.zeros(len(xtr), 0, dtype=torch.long), xtr)
        model.eval()
        xt = torch.from_numpy(x[test])
        cats = torch.zeros(len(xt), 0, dtype=torch.long)
        return sum(F.softmax(model(cats, v), 1) for v in _views(xt, a.tta)).numpy()


def _jitter(x, turn: float, degrees: float):
    """The recipe's jitter (3D turns of up to `degrees` about each axis, ± `shared_model.STRETCH` stretch), then the
    `turn` lever."""
    import torch

    from pipeline.kinds.shared import model as shared_model
    from pipeline.kinds.landmarks import model as landmark_model

    n = len(x)
    pts = x[:, :63].reshape(n, 21, 3)
    stretch = 1 + (torch.rand(n, 1, 3) * 2 - 1) * (shared_model.STRETCH if degrees else 0.0)
    moved = (pts @ shared_model.random_rotations(n, degrees).transpose(1, 2)) * stretch
    flip = torch.ones(n, 1, 3)
    back = torch.rand(n) < turn
    flip[back, 0, 0] = flip[back, 0, 2] = -1
    out = torch.cat([(moved * flip).reshape(n, 63), x[:, 63:]], 1)
    out[x[:, 63] == 0] = 0
    return out


def main(argv=None) -> int:
    import numpy as np
    import torch

    from pipeline import config
    from pipeline.core.workspace import Workspace
    from pipeline.data import hands

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs" / "asl_multi.toml"))
    p.add_argument("--keypoints", choices=("image", "world"), default="image")
    p.add_argument("--turn", type=float, default=0.0)
    p.add_argument("--tta", choices=("", "mirror", "turn"), default="")
    p.add_argument("--epochs", type=int, default=None, help="train.epochs of the config unless given")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ensemble", type=int, default=1,
                   help="models a fold, from different seeds, probabilities averaged")
    p.add_argument("--hand-net", action="store_true", help="the hand network's embedding beside the keypoints")
    p.add_argument("--emb-drop", type=float, default=0.0, help="dropout on the embedding while training")
    p.add_argument("--emb-only", action="store_true", help="the hand network's embedding alone, no keypoints")
    p.add_argument("--views", choices=("mirrored", "photo", "mean"), default="mirrored",
                   help="the embedding's view of the hand: left hands mirrored, as photographed, or both averaged")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    a = p.parse_args(argv)
    a.hand_net = a.hand_net or a.emb_only
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    emb = (f", hand-net embedding{' alone' if a.emb_only else ''} ({a.views} view, dropout {a.emb_drop:g})"
           if a.hand_net else "")
    header(f"keypoint levers: {a.keypoints} keypoints, turn {a.turn:g}, tta {a.tta or 'none'}, seed {a.seed}, "
           f"{a.ensemble} model(s) a fold{emb}")
    cfg = config.load(a.config, a.set + ([f"train.epochs={a.epochs}"] if a.epochs else []))
    if not isinstance(cfg.train.base_lr, float):
        raise SystemExit(f"error: {a.config}: train.base_lr must be a number here (lr_find runs no sweep in a fold)")
    paths, labels, folds = _photos(cfg)
    folder = Workspace.from_config(cfg).data
    dets, looked = hands.detections(paths, hands.store(folder), log=lambda m: None)
    result("photos", len(paths), note=f"{looked} looked at by MediaPipe now, the rest from the detection store")
    x, vocab = _features(dets, a.keypoints), sorted(set(labels))
    if a.hand_net:
        from pipeline.kinds.hand_net import data as hand_net

        folder = Workspace.from_config(cfg).data
        emb = hand_net.embed(paths, dets, folder, log=lambda m: None)
        if a.views != "mirrored":
            flipped = _flipped(paths, dets, folder)
            left = np.array([bool(r[0]) and r[1] == "Right" for r in dets])  # the crops hand_net mirrored
            emb = (emb + flipped) / 2 if a.views == "mean" else np.where(left[:, None], flipped, emb)
        x = np.concatenate([x, emb], 1)
    y, folds = np.array([vocab.index(v) for v in labels]), np.array(folds)
    accs = []
    for unit in dict.fromkeys(folds):
        train, test = folds != unit, folds == unit
        known = sorted(set(y[train]))
        test &= np.isin(y, known)
        probs = sum(_fold(x, y, train, test, len(vocab), a, a.seed + 1000 * k, cfg.train) for k in range(a.ensemble)) / a.ensemble
        mask = np.full(len(vocab), -np.inf)
        mask[known] = 0
        accs.append(float(((np.log(probs) + mask).argmax(1) == y[test]).mean()))
        result(f"held out {unit}", round(accs[-1], 4), note=f"{int(test.sum())} images")
    result("mean over folds", round(float(np.mean(accs)), 4), note=f"sd {np.std(accs):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
