"""datablock: merge the sources, verify images, sample, hold out groups, split once (RandomSplitter(valid_pct, seed)
or whole groups), persist the split."""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from pipeline import artifacts, cache, content_store, data, datasets, families, hands, sources, splitting
from pipeline.errors import PipelineError
from pipeline.stagespec import StageSpec
from pipeline.workspace import read_json, save_figure, write_csv, write_json

STAGE = StageSpec(
    "datablock",
    summary="merge the sources, verify images, hold out groups, split (random or by group), persist the split",
    writes="splits.csv, vocab.json, corrupt.csv, batch.png, class_counts.png; cache.npy, cache.json (datablock.cache); "
           "landmarks.csv (datablock.input = landmarks); holdout.csv (datablock.holdout)",
    reads=lambda cfg: ("download",),
    params=("datablock", "run.seed"),
    params_if=lambda cfg: ("train.image_size", "train.grayscale") if cfg.datablock.cache else ())  # the cached pixels


def _sample(items: list[tuple[str, str]], per_class: int, seed: int) -> list[tuple[str, str]]:
    """At most `per_class` items per label, chosen with `seed`, in the original order."""
    by_label = defaultdict(list)
    for item in items:
        by_label[item[1]].append(item)
    keep = set()
    for label, group in by_label.items():
        keep.update(random.Random(f"{seed}:{label}").sample(group, min(per_class, len(group))))
    return [it for it in items if it in keep]


def _plot_counts(df, path: Path) -> Path:
    """Images per class, stacked by source; the validation share of each bar hatched."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = df.groupby(["label", "source"]).size().unstack(fill_value=0)
    valid = df[df["is_valid"]].groupby("label").size().reindex(counts.index, fill_value=0)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(counts)), 4))
    bottom = None
    for src in counts.columns:
        ax.bar(counts.index, counts[src], bottom=bottom, label=src if counts.shape[1] > 1 else "images")
        bottom = counts[src] if bottom is None else bottom + counts[src]
    ax.bar(counts.index, valid, fill=False, hatch="//", edgecolor="black", linewidth=0, label="of which valid")
    ax.set(xlabel="class", ylabel="images", title="images per class" + (" and source" if counts.shape[1] > 1 else ""))
    ax.tick_params(axis="x", rotation=90)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _landmarks(df, root: Path, ws, log) -> list[Path]:
    """landmarks.csv (path, hand found, handedness, score, the model's features) for every image of the split,
    the detection rate per class in the log, and batch.png: training images with their keypoints drawn."""
    feats = hands.extract([root / p for p in df["path"]], log, store=content_store.landmarks(ws.data, log))
    feats.insert(0, "path", df["path"].to_numpy())
    rate = feats["hand_found"].groupby(df["label"].to_numpy()).mean().sort_values()
    log("hand found per class, lowest first: " + ", ".join(f"{k} {v:.0%}" for k, v in rate.head(6).items()))
    train = df[~df["is_valid"]].sample(n=min(16, int((~df["is_valid"]).sum())), random_state=0)
    return [write_csv(ws.artifact("datablock", artifacts.LANDMARKS), feats),
            hands.plot_landmarks([root / p for p in train["path"]], list(train["label"]),
                                 ws.artifact("datablock", artifacts.BATCH_PNG), "training images: hand landmarks")]


def _items(meta: dict, cfg, log) -> tuple[Path, list[tuple[str, str, str, str]], list[tuple[str, str]]]:
    """(common root of every source, (path under it, label, source, group) per image, (path, reason) for names
    that are not valid UTF-8), in source order."""
    import os

    srcs = {s.name: s for s in datasets.training_sources(cfg.download)}
    roots = {e["name"]: Path(os.path.abspath(e["root"])) for e in meta["sources"]}
    for name, r in roots.items():
        if not r.is_dir():
            raise PipelineError(f"dataset root {r} of source {name} is gone: rerun `python -m pipeline run "
                                f"--stages download,datablock`")
    if set(roots) != set(srcs):
        raise PipelineError("the download outputs describe other sources than the config: rerun download")
    root = Path(os.path.commonpath([str(r) for r in roots.values()]))
    items, bad = [], []
    for name, r in roots.items():
        found, _ = datasets.labelled_images(r, srcs[name])
        under = r.relative_to(root).as_posix()
        for rel, label, group in found:
            path = rel if under == "." else f"{under}/{rel}"
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                bad.append((data.shown_name(root / path), "file name is not valid UTF-8: rename it"))
                continue
            items.append((path, label, name, group))
    if bad:
        log(f"{len(bad)} file(s) with names that are not valid UTF-8 excluded, e.g. {bad[0][0]}")
    for r in roots.values():
        bad += [(data.shown_name(p), "symbolic link: not followed inside a dataset") for p in sources.list_links(r)]
    return root, items, bad


def run(cfg, ws, log):
    import pandas as pd

    keypoints = not families.of(cfg).sees_pixels  # the model reads hand keypoints, found here once
    if keypoints:
        hands.require()  # before minutes of verifying: the one-line install hint now
    root, items, bad = _items(read_json(ws.artifact("download", artifacts.DATASET)), cfg, log)
    seed, b = cfg.run.seed, cfg.datablock
    if b.max_per_class:
        items = _sample(items, b.max_per_class, seed)
        log(f"sampled at most {b.max_per_class} per class (seed {seed}): {len(items)} images")
    if b.verify:
        ok, corrupt = data.verify_images([root / p for p, *_ in items], log)
        bad += corrupt
        good = {p.relative_to(root).as_posix() for p in ok}
        items = [it for it in items if it[0] in good]
    write_csv(ws.artifact("datablock", artifacts.CORRUPT), pd.DataFrame(bad, columns=["path", "reason"]))
    df = pd.DataFrame(items, columns=["path", "label", "source", "group"])
    held = splitting.holdout_mask(list(df["group"]), list(df["source"]), b.holdout)
    holdout, df = df[held].reset_index(drop=True), df[[not h for h in held]].reset_index(drop=True)
    if b.holdout:
        log(f"held out {len(holdout)} images of {', '.join(b.holdout)} (scored by evaluate as test set "
            f"{data.HOLDOUT_SET!r})")
    vocab = sorted(set(df["label"]))
    if len(vocab) < 2:
        raise PipelineError(f"the dataset has {len(vocab)} class(es) with usable images ({', '.join(vocab) or 'none'}): "
                            f"a classifier needs at least two class folders under {root}")
    if b.split == "group":
        valid_groups = splitting.group_split(list(df["group"]), b.valid_pct, seed)
        df.insert(2, "is_valid", df["group"].isin(valid_groups))
        log(f"validation groups (seed {seed}): {', '.join(sorted(valid_groups)[:12])}"
            + (f" and {len(valid_groups) - 12} more" if len(valid_groups) > 12 else ""))
    else:
        valid_idx = splitting.random_split(len(df), b.valid_pct, seed)
        df.insert(2, "is_valid", [i in valid_idx for i in range(len(df))])
    n_valid = int(df["is_valid"].sum())
    log(f"split {len(df) - n_valid} train / {n_valid} valid ({b.split}, valid_pct {b.valid_pct}, seed {seed}), "
        f"{len(vocab)} classes, {df['group'].nunique()} group(s), {len(bad)} corrupt excluded")
    write_csv(ws.artifact("datablock", artifacts.SPLITS), df)
    outputs = [ws.artifact("datablock", artifacts.SPLITS), ws.artifact("datablock", artifacts.CORRUPT),
               write_json(ws.artifact("datablock", artifacts.VOCAB), {
                   "root": str(root), "vocab": vocab, "n_train": len(df) - n_valid, "n_valid": n_valid,
                   "valid_pct": b.valid_pct, "split": b.split, "seed": seed, "n_corrupt": len(bad),
                   "n_holdout": len(holdout), "sources": sorted(set(df["source"]))}),
               _plot_counts(df, ws.artifact("datablock", artifacts.CLASS_COUNTS_PNG))]
    if b.holdout:
        outputs.append(write_csv(ws.artifact("datablock", artifacts.HOLDOUT), holdout))
    else:
        ws.artifact("datablock", artifacts.HOLDOUT).unlink(missing_ok=True)
    # an artifact of the other input kind, or a cache from an earlier run with the option on, would be stale:
    # never leave one to be mistaken for current
    stale = [] if keypoints else [artifacts.LANDMARKS]
    if keypoints or not b.cache:
        stale += [artifacts.CACHE_META, artifacts.CACHE]
    for name in stale:
        ws.artifact("datablock", name).unlink(missing_ok=True)
    if keypoints:
        return outputs + _landmarks(df, root, ws, log)
    dls = data.dataloaders(ws, cfg, batch_size=max(1, min(16, len(df) - n_valid)))
    dls.show_batch(max_n=16, figsize=(8, 8))
    import matplotlib.pyplot as plt
    outputs.append(save_figure(plt.gcf(), ws.artifact("datablock", artifacts.BATCH_PNG)))
    if b.cache:
        outputs += cache.build(ws, cfg, dls, df, root, log)
    return outputs
