"""Benchmark 2: train-stage throughput vs a plain hand-written PyTorch loop (same model, data, size, batch, threads).

The pipeline side is the real train stage (`runner.run(cfg, ["train"])`, what `python -m pipeline run` calls); its
per-epoch times come from the run's own `history.csv`, checkpoint writes included (an epoch = the training pass plus the validation pass,
data loading included). The plain side, in this process: the same model (built by the pipeline's
`make_learner`, same seed, same frozen layers), a torchvision-style `Dataset` that opens each file with PIL,
resizes it and normalises it, a `torch.utils.data.DataLoader` with the same batch size, shuffling and worker
count, `torch.optim.Adam`, and the same train + validation passes.

Images/second = (train + valid images) / the median epoch time, over the epochs after the first (warm-up) of\n`--rounds` rounds that alternate the three sides (so a slow spell on a shared machine hits each alike).
Two ratios (target >= 0.9x): the pipeline reading image files, as the plain loop does; and the pipeline with
`datablock.cache = true` (the recommended setting), against the same plain loop.

Data: 20 images per class of ../shared/data/asl_alphabet_train_200 (580 photos, 200x200 JPEG), or generated
images when the shared data is absent.

    python -m bench.train_overhead [--size 64] [--bs 64] [--epochs 3] [--per-class 20]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from bench._common import OUT, SHARED_DATA, header, make_flat_dataset, result


def configure(work: Path, source: Path, a, cache: bool):
    from pipeline import config

    sets = [f"run.name=overhead_{'cache' if cache else 'files'}", f"download.source=path:{source}", "download.subdir=",
            f"datablock.max_per_class={a.per_class}", f"datablock.cache={str(cache).lower()}",
            "train.arch=tf_efficientnet_lite0", "train.pretrained=true", "train.method=fit", "train.base_lr=1e-3",
            f"train.epochs={a.epochs}", f"train.batch_size={a.bs}", f"train.image_size={a.size}"]
    return config.load(None, cwd=work, overrides=sets)


def pipeline_side(cfg) -> dict:
    """The real train stage (runner.run, as `python -m pipeline run --stages train --force` does), in this process
    so that it alternates with the plain loop under the same conditions; seconds per epoch from its history.csv,
    checkpoint writes included."""
    import io
    from contextlib import redirect_stdout

    import pandas as pd

    from pipeline import runner
    from pipeline.core.workspace import Workspace

    with redirect_stdout(io.StringIO()):
        runner.run(cfg, ["download", "datablock"])
        runner.run(cfg, ["train"], force=True)
    hist = pd.read_csv(Workspace.from_config(cfg).artifact("train", "history.csv"))
    return {"epoch_seconds": (hist["seconds"] + hist.get("checkpoint_seconds", 0)).tolist()}


def plain_side(cfg, a) -> dict:
    """The hand-written loop on the split the pipeline persisted, with the model the pipeline builds."""
    import copy

    import torch
    from PIL import Image

    from pipeline.core.workspace import Workspace
    from pipeline.data import loaders
    from pipeline import kinds

    ws = Workspace.from_config(cfg)
    df, root, vocab = loaders.load_split(ws)
    from fastai.torch_core import set_seed

    set_seed(cfg.run.seed, reproducible=True)
    kind = kinds.of(cfg)
    learn = kind.make_learner(kind.dataloaders(ws, cfg), cfg, ws)  # frozen body, as the stage trains it
    model = copy.deepcopy(learn.model)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    index = {v: i for i, v in enumerate(vocab)}

    class Files(torch.utils.data.Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            path, label = self.rows[i]
            with Image.open(root / path) as im:
                im = im.convert("RGB").resize((a.size, a.size), Image.BILINEAR)
                x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(a.size, a.size, 3)
            return (x.permute(2, 0, 1).float() / 255 - mean) / std, index[label]

    train_rows = list(zip(df.loc[~df.is_valid, "path"], df.loc[~df.is_valid, "label"]))
    valid_rows = list(zip(df.loc[df.is_valid, "path"], df.loc[df.is_valid, "label"]))
    workers = learn.dls.train.fake_l.num_workers
    train_dl = torch.utils.data.DataLoader(Files(train_rows), batch_size=a.bs, shuffle=True, drop_last=True,
                                           num_workers=workers)
    valid_dl = torch.utils.data.DataLoader(Files(valid_rows), batch_size=a.bs, num_workers=workers)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds = []
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        for x, y in train_dl:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in valid_dl)
        seconds.append(time.perf_counter() - t0)
    return {"epoch_seconds": seconds, "valid_accuracy": correct / len(valid_rows), "workers": workers,
            "n": len(train_rows) + len(valid_rows)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the three sides")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    header("train-stage throughput vs a plain PyTorch loop")
    work = OUT / "train_overhead"
    work.mkdir(parents=True, exist_ok=True)
    source = SHARED_DATA / "asl_alphabet_train_200"
    if not source.is_dir():
        source = make_flat_dataset(OUT / "generated_580", 29 * a.per_class, size=200)
    print(f"data: {source} ({a.per_class} per class), {a.size}px, bs {a.bs}, {a.epochs} epochs (first is warm-up)")

    import statistics

    files_cfg, cache_cfg = configure(work, source, a, cache=False), configure(work, source, a, cache=True)
    pipeline_side(files_cfg)  # prepares the split (and warms caches) before anything is timed
    times = {"plain": [], "files": [], "cache": []}
    for r in range(a.rounds):  # alternate, so a slow spell on a shared machine hits every side alike
        plain = plain_side(files_cfg, a)
        times["plain"] += plain["epoch_seconds"][1:]
        times["files"] += pipeline_side(files_cfg)["epoch_seconds"][1:]
        times["cache"] += pipeline_side(cache_cfg)["epoch_seconds"][1:]
        print(f"round {r + 1}/{a.rounds}: epoch seconds " + "; ".join(f"{k} {', '.join(f'{x:.2f}' for x in v)}" for k, v in times.items()),
              flush=True)
    n = plain["n"]

    def ips(side):
        return n / statistics.median(times[side])

    print(f"plain loop: {plain['workers']} DataLoader worker(s), valid accuracy {plain['valid_accuracy']:.3f}")
    result("plain PyTorch loop", ips("plain"), "images/s")
    result("train stage, image files", ips("files"), "images/s")
    result("train stage, datablock.cache", ips("cache"), "images/s")
    r1, r2 = ips("files") / ips("plain"), ips("cache") / ips("plain")
    result("ratio train stage (files) / plain loop", r1, "x", ">= 0.9x", r1 >= 0.9)
    result("ratio train stage (cache) / plain loop", r2, "x", ">= 0.9x", r2 >= 0.9)
    return 0 if r1 >= 0.9 and r2 >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
