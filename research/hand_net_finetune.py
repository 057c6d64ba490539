"""Fine-tuning the end of MediaPipe's hand network on the signs, against the frozen embedding, by leave-one-group-out
crossval over the stored detections (research/keypoint_levers.py's photos, folds, jitter and scoring).

Every photo with a hand: its upright, left-mirrored 224 px crop (`hand_net.crop`) through the network ONCE (LiteRT,
as `hand_net` does), up to `--cut` (default `model_1/model/add_8/add`, the input of the last stage: (192, 7, 7) a
photo, 37.6 kB, 332 MB float32 for ~8,800 photos; the ops after it are `hand_net_torch`'s rebuild), cached as a
.npy in the data folder (keyed by the network's sha256, the tensor, the crop settings and the photos). Each
fold then trains, as fastai's `fine_tune` does:
  1. `--head-epochs` with the network frozen: the keypoint recipe's MLP (`HandNetModel`: 64 features, their shape
     features, the 1152 pooled values beside them; jitter on the keypoints, AdamW, one cycle at 3e-3), which is the
     frozen-embedding model (`keypoint_levers --hand-net`); its held-out score is printed as the "frozen" row;
  2. `--tune-epochs` with the network's ops after the cut unfrozen (initialised from the tflite weights), one cycle
     with discriminative learning rates: the head at `--lr`/2, the network's layers at `--lr`/2/`--lr-mult`;
then batch norm settled on the unjittered training rows (the recipe's `SettleBatchNorm`), and the held-out group is
scored on the letters the training groups know, as keypoint_levers does. The crops are not augmented (their
activations are cached); the keypoints are jittered as in the recipe.

    OMP_NUM_THREADS=1 taskset -c 1 python -m research.hand_net_finetune [--cut TENSOR] [--seed 0]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

from bench._common import REPO, header, result
from research.keypoint_levers import _features, _jitter, _photos

CUT = "model_1/model/add_8/add"


def _tail(cut: str):
    """(the frozen network up to `cut`, the ops after it up to the pooled embedding as a module on `cut`'s tensor)."""
    import torch
    from torch import nn

    from pipeline.kinds.hand_net import network as hand_net_torch

    full = hand_net_torch.load()
    head = hand_net_torch.load(outputs=(cut,))
    cut_id = head.output_ids[0]
    # the ops after the cut: those of the full graph whose output the cut graph does not make
    made = {out for _, out in head.wiring}
    keep = [k for k, (_, out) in enumerate(full.wiring) if out not in made]
    tail = hand_net_torch.HandNet(nn.ModuleList(full.ops[k] for k in keep), [full.wiring[k] for k in keep],
                                  cut_id, full.output_ids, {full.output_ids[0]: hand_net_torch.EMBEDDING})

    class Tail(nn.Module):  # HandNet.forward checks for an RGB image; this one starts at the cut
        def __init__(self):
            super().__init__()
            self.net = tail

        def forward(self, x):
            env = {self.net.input_id: x}
            for op, (ins, out) in zip(self.net.ops, self.net.wiring):
                env[out] = op(*(env[i] for i in ins))
            return env[self.net.output_ids[0]]

    return head.to(memory_format=torch.channels_last), Tail()


def _cache(paths, dets, folder: Path, cut: str) -> "np.ndarray":
    """float32 (n_with_hand, C, H, W): `cut`'s activations of each photo with a hand, from the .npy in `folder`,
    computed (one pass through LiteRT) and written atomically when missing."""
    import numpy as np
    import torch

    from pipeline.kinds.hand_net import data as hand_net

    have = [i for i, r in enumerate(dets) if r[0]]
    key = hashlib.sha256(json.dumps([hand_net.settings(), cut, [paths[i] for i in have]], default=str)
                         .encode()).hexdigest()[:16]
    file = folder / f"hand_net_cut_{key}.npy"
    if file.exists():
        result("cached activations", str(file), note="read, not recomputed")
        return np.load(file, mmap_mode="r")
    # LiteRT (9 ms a photo to the pooled feature on one core; the torch rebuild 70 ms, within 2e-5 of it) keeps
    # every tensor with experimental_preserve_all_tensors, so `cut`'s is read there, NHWC -> NCHW
    import warnings as _w

    from pipeline.data import hands

    with _w.catch_warnings(), hands.native_stderr_silenced():
        _w.simplefilter("ignore")
        it = hand_net.require()(model_path=str(hand_net.network_path()), experimental_preserve_all_tensors=True,
                                num_threads=1)
        it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    found = [t["index"] for t in it.get_tensor_details() if t["name"] == cut]
    if not found:
        raise SystemExit(f"the hand network has no tensor {cut!r}")
    t0, out = time.perf_counter(), None
    for n, i in enumerate(have):
        it.set_tensor(inp, np.ascontiguousarray(hand_net.crop(paths[i], dets[i]), np.float32)[None])
        it.invoke()
        a = it.get_tensor(found[0])[0].transpose(2, 0, 1)
        if out is None:
            out = np.empty((len(have),) + a.shape, np.float32)
        out[n] = a
    tmp = file.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, out)
    os.replace(tmp, file)
    took = time.perf_counter() - t0
    result("cached activations", str(file), note=f"{len(have)} photos, {out.nbytes / 1e6:.0f} MB, computed in "
                                                   f"{took:.0f} s ({1000 * took / len(have):.1f} ms a photo)")
    return out


def _embed(tail, acts, idx, batch: int = 256):
    import torch

    with torch.no_grad():
        return torch.cat([tail(torch.from_numpy(acts[idx[s:s + batch]])) for s in range(0, len(idx), batch)])


def _settle_and_score(model, tail, kp, acts, hand_row, train, test):
    """The head's batch norm settled on the unjittered training rows, then the held-out probabilities."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    def rows(mask):
        idx = np.flatnonzero(mask)
        emb = torch.zeros(len(idx), 1152)
        hit = hand_row[idx] >= 0
        if hit.any():
            emb[torch.from_numpy(hit)] = _embed(tail, acts, hand_row[idx][hit])
        return torch.cat([torch.from_numpy(kp[idx]), emb], 1)

    tail.eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        xtr = rows(train)
        model.train()
        model(torch.zeros(len(xtr), 0, dtype=torch.long), xtr)
        model.eval()
        xt = rows(test)
        return F.softmax(model(torch.zeros(len(xt), 0, dtype=torch.long), xt), 1).numpy()


def _fold(kp, acts, hand_row, y, train, test, n_out, tail0, a, t):
    """(held-out probabilities of the frozen model, of the fine-tuned one, seconds of each phase); the head is the
    config's (`t` = `cfg.train`: the pipeline's HandNetModel, `head_dropout`, `wd`, `batch_size`, `landmark_rotate`)."""
    import copy

    import numpy as np
    import torch
    import torch.nn.functional as F

    from pipeline.kinds.shared import model as shared_model
    from pipeline.kinds.hand_net import model as hand_net_model

    torch.manual_seed(a.seed)
    tail = copy.deepcopy(tail0)
    for p in tail.parameters():
        p.requires_grad_(False)
    tr = np.flatnonzero(train)
    ytr = torch.from_numpy(y[tr])
    xkp = torch.from_numpy(kp[tr])
    rows = hand_row[tr]
    emb0 = torch.zeros(len(tr), 1152)
    emb0[torch.from_numpy(rows >= 0)] = _embed(tail, acts, rows[rows >= 0])
    model = hand_net_model.HandNetModel(n_out, shared_model.LAYERS, t.head_dropout)
    bs = t.batch_size
    no_cats = torch.zeros(bs, 0, dtype=torch.long)
    nb = len(tr) // bs

    def run(epochs, groups, lrs, tuned):
        opt = torch.optim.AdamW(groups, lr=lrs[-1], weight_decay=t.wd or 0.01)  # fastai's Adam: 0.01 when unset
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lrs, total_steps=epochs * nb, pct_start=0.25)
        model.train()
        tail.train(tuned)
        for _ in range(epochs):
            order = torch.randperm(len(tr))
            for i in range(nb):
                idx = order[i * bs:(i + 1) * bs]
                if tuned:
                    emb = torch.zeros(len(idx), 1152)
                    r = rows[idx.numpy()]
                    hit = torch.from_numpy(r >= 0)
                    if hit.any():
                        emb[hit] = tail(torch.from_numpy(acts[r[r >= 0]]))
                else:
                    emb = emb0[idx]
                xb = torch.cat([_jitter(xkp[idx], 0.0, t.landmark_rotate), emb], 1)
                loss = F.cross_entropy(model(no_cats, xb), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()

    t0 = time.perf_counter()
    run(a.head_epochs, [{"params": model.parameters()}], [a.lr], False)
    frozen = _settle_and_score(model, tail, kp, acts, hand_row, train, test)
    t1 = time.perf_counter()
    tuned = None
    if a.tune_epochs:
        for p in tail.parameters():
            p.requires_grad_(True)
        lr = a.lr / 2
        run(a.tune_epochs, [{"params": tail.parameters()}, {"params": model.parameters()}], [lr / a.lr_mult, lr], True)
        tuned = _settle_and_score(model, tail, kp, acts, hand_row, train, test)
    return frozen, tuned, t1 - t0, time.perf_counter() - t1


def main(argv=None) -> int:
    import numpy as np
    import torch

    from pipeline import config
    from pipeline.core.workspace import Workspace
    from pipeline.data import hands
    from pipeline.kinds.hand_net import data as hand_net

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "configs" / "asl_multi.toml"))
    p.add_argument("--cut", default=CUT, help="the tensor whose activations are cached; the ops after it are tuned")
    p.add_argument("--head-epochs", type=int, default=30, help="epochs with the network frozen (the frozen model)")
    p.add_argument("--tune-epochs", type=int, default=5, help="epochs with the ops after the cut unfrozen (0: none)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--lr-mult", type=float, default=100.0, help="the network's lr is the head's divided by this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", default="", help="comma-separated held-out groups (default: all)")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    header(f"hand-network fine-tuning: cut at {a.cut}, {a.head_epochs} frozen + {a.tune_epochs} tuned epochs, "
           f"lr {a.lr:g} (network / {a.lr_mult:g}), seed {a.seed}")
    cfg = config.load(a.config, [])
    folder = Workspace.from_config(cfg).data
    paths, labels, folds = _photos(cfg)
    dets, looked = hands.detections(paths, hands.store(folder), log=lambda m: None)
    result("photos", len(paths), note=f"{sum(1 for r in dets if r[0])} with a hand, {looked} looked at now")
    _, tail = _tail(a.cut)
    acts = np.ascontiguousarray(_cache(paths, dets, folder, a.cut))
    hand_row = np.full(len(paths), -1)
    hand_row[[i for i, r in enumerate(dets) if r[0]]] = np.arange(len(acts))
    # the tail on the cached activations against LiteRT's stored embedding: the cut is where it says it is
    some = np.flatnonzero(hand_row >= 0)[:64]
    stored = hand_net.embed([paths[i] for i in some], [dets[i] for i in some], folder, log=lambda m: None)
    gap = float((_embed(tail, acts, hand_row[some]).numpy() - stored).__abs__().max())
    result("tail on the cache vs LiteRT's stored embedding", gap, note="max abs difference, 64 photos")
    kp, vocab = _features(dets, "image"), sorted(set(labels))
    y, folds = np.array([vocab.index(v) for v in labels]), np.array(folds)
    only = [f for f in a.folds.split(",") if f]
    accs = {"frozen": [], "tuned": []}
    for unit in dict.fromkeys(folds):
        if only and unit not in only:
            continue
        train, test = folds != unit, folds == unit
        known = sorted(set(y[train]))
        test &= np.isin(y, known)
        frozen, tuned, t_head, t_tune = _fold(kp, acts, hand_row, y, train, test, len(vocab), tail, a, cfg.train)
        mask = np.full(len(vocab), -np.inf)
        mask[known] = 0
        for name, probs in (("frozen", frozen), ("tuned", tuned)):
            if probs is not None:
                accs[name].append(float(((np.log(probs) + mask).argmax(1) == y[test]).mean()))
        result(f"held out {unit}", round(accs["frozen"][-1], 4),
               note=f"{int(test.sum())} images; fine-tuned {accs['tuned'][-1] if tuned is not None else '-'}; "
                    f"{t_head:.0f} s frozen phase + {t_tune:.0f} s tuning")
    for name, vals in accs.items():
        if vals:
            result(f"mean over folds, {name}", round(float(np.mean(vals)), 4), note=f"sd {np.std(vals):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
