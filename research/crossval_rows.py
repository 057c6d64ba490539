"""The lever rows of research/notes/crossval.md from finished crossvals, and the late-fusion row (a fixed mix of two crossvals'
fold models' probabilities on each fold's held-out photos).

    python -m research.crossval_rows row --config CONFIG NAME [NAME ...]
    python -m research.crossval_rows late --config CONFIG A B [--weight 0.5] [--name late]
    (either with `--set KEY=VALUE` config overrides, e.g. `--set run.data_dir=...` for filled stores elsewhere)

`row` reads runs/NAME/crossval/ and each fold's holdout metrics.json (ECE); `late` loads the exports of the fold runs
NAME-cv-GROUP of both crossvals (as trained by `python -m pipeline crossval --set run.name=NAME`), predicts every
held-out photo with both (keypoints, crops and embeddings come from the content store), mixes the probabilities
(`weight` × A + (1 − weight) × B over the letters both know), and writes runs/<name>/crossval/ as crossval does.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import config, crossval, kinds
from pipeline.core import artifacts
from pipeline.core.workspace import Workspace, read_json
from pipeline.data import loaders
from pipeline.models import calibration


def _renamed(cfg, name: str):
    import copy

    out = copy.deepcopy(cfg)
    out.run.name = name
    return out


def row(cfg, name: str) -> str:
    """One Markdown row: mean ± sd, each group, pooled, lowest letter, letters < 70 %, mean ECE."""
    folder = Workspace.from_config(_renamed(cfg, name)).root / "crossval"
    folds = pd.read_csv(folder / artifacts.CROSSVAL_CSV, keep_default_na=False)
    letters = pd.read_csv(folder / artifacts.CROSSVAL_LETTERS, keep_default_na=False)
    eces = []
    for unit in folds["held_out"]:
        metrics = Workspace.from_config(_renamed(cfg, crossval.fold_name(name, unit))).stage_dir("evaluate")
        eces.append(read_json(metrics / loaders.HOLDOUT_SET / artifacts.METRICS).get("ece", float("nan")))
    return _row(name, folds, letters, float(np.nanmean(eces)))


def _row(name, folds, letters, ece) -> str:
    acc = folds["accuracy"].astype(float)
    pooled = float((acc * folds["images"]).sum() / folds["images"].sum())
    low = letters.sort_values("mean").iloc[0]
    groups = " | ".join(f"{a:.1%}" for a in acc)
    return (f"| `{name}` | **{acc.mean():.1%}** ± {acc.std(ddof=0):.1%} | {groups} | {pooled:.1%} | "
            f"{low['letter']} {low['mean']:.0%} | {int((letters['mean'] < 0.7).sum())} | {ece:.3f} |")


def _probs(ws: Workspace, paths: list) -> tuple[np.ndarray, list]:
    model = kinds.load(ws.learner, trust=True)  # this project's own fold exports
    preds = model.predict(paths, 256, log=lambda m: None, store=model.store(ws.data, lambda m: None))
    return np.asarray(preds.probs, dtype=np.float64), model.vocab


def late(cfg, a: str, b: str, weight: float, name: str, config_path: str) -> str:
    folds, letters = [], []
    for unit in crossval.units(_renamed(cfg, a), "group"):
        wa, wb = (Workspace.from_config(_renamed(cfg, crossval.fold_name(n, unit))) for n in (a, b))
        held = pd.read_csv(wa.artifact("datablock", artifacts.HOLDOUT), dtype=str, keep_default_na=False)
        root = Path(read_json(wa.artifact("datablock", artifacts.VOCAB))["root"])
        paths = [root / p for p in held["path"]]
        (pa, va), (pb, vb) = _probs(wa, paths), _probs(wb, paths)
        vocab = sorted(set(va) & set(vb))
        mixed = weight * pa[:, [va.index(v) for v in vocab]] + (1 - weight) * pb[:, [vb.index(v) for v in vocab]]
        known = held["label"].isin(vocab).to_numpy()
        pred = np.asarray(vocab)[mixed.argmax(1)][known]
        truth = held["label"].to_numpy()[known]
        correct = pred == truth
        conf = (mixed.max(1) / mixed.sum(1))[known]
        ece, _ = calibration.reliability(conf, correct)
        tally = pd.DataFrame({"category": truth, "correct": correct}).groupby("category")["correct"].mean()
        letters.append(pd.DataFrame({"category": tally.index, "accuracy": tally.values, "held_out": unit}))
        worst = tally.sort_values().head(crossval.WORST)
        folds.append({"held_out": unit, "images": int(known.sum()), "accuracy": float(correct.mean()), "ece": ece,
                      "worst": ", ".join(f"{c} {v:.0%}" for c, v in worst.items())})
        print(f"{unit}: {folds[-1]['accuracy']:.4f} on {folds[-1]['images']} (ECE {ece:.3f})", flush=True)
    folds = pd.DataFrame(folds)
    crossval.write_table(Workspace.from_config(_renamed(cfg, name)).root / "crossval", _renamed(cfg, name), "group",
                         folds.drop(columns="ece"), pd.concat(letters), config_path,
                         [f"late fusion: {weight:g} x {a} + {1 - weight:g} x {b}"])
    per_letter = pd.concat(letters).groupby("category")["accuracy"].mean().reset_index()
    per_letter.columns = ["letter", "mean"]
    return _row(name, folds, per_letter, float(folds["ece"].mean()))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("row", "late"))
    p.add_argument("names", nargs="+")
    p.add_argument("--config", required=True)
    p.add_argument("--weight", type=float, default=0.5)
    p.add_argument("--name", default="late")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    args = p.parse_args()
    cfg = config.load(args.config, args.set)
    if args.what == "row":
        for n in args.names:
            print(row(cfg, n))
    else:
        print(late(cfg, args.names[0], args.names[1], args.weight, args.name, args.config))


if __name__ == "__main__":
    main()
