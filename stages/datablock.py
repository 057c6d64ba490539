"""datablock: verify images, sample, split once with RandomSplitter(valid_pct, seed), persist the split."""
from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from pipeline import cache, data, hands, sources
from pipeline.errors import PipelineError
from pipeline.workspace import read_json, save_figure, write_csv, write_json


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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = df.groupby(["label", "is_valid"]).size().unstack(fill_value=0).reindex(columns=[False, True], fill_value=0)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(counts)), 4))
    ax.bar(counts.index, counts[False], label="train")
    ax.bar(counts.index, counts[True], bottom=counts[False], label="valid")
    ax.set(xlabel="class", ylabel="images", title="images per class")
    ax.tick_params(axis="x", rotation=90)
    ax.legend()
    return save_figure(fig, path)


def _landmarks(df, root: Path, ws, log) -> list[Path]:
    """landmarks.csv (path, hand found, handedness, score, the model's features) for every image of the split,
    the detection rate per class in the log, and batch.png: training images with their keypoints drawn."""
    feats = hands.extract([root / p for p in df["path"]], log)
    feats.insert(0, "path", df["path"].to_numpy())
    rate = feats["hand_found"].groupby(df["label"].to_numpy()).mean().sort_values()
    log("hand found per class, lowest first: " + ", ".join(f"{k} {v:.0%}" for k, v in rate.head(6).items()))
    train = df[~df["is_valid"]].sample(n=min(16, int((~df["is_valid"]).sum())), random_state=0)
    return [write_csv(ws.artifact("datablock", hands.LANDMARKS_CSV), feats),
            hands.plot_landmarks([root / p for p in train["path"]], list(train["label"]),
                                 ws.artifact("datablock", "batch.png"), "training images: hand landmarks")]


def run(cfg, ws, log):
    import pandas as pd
    from fastai.data.transforms import RandomSplitter

    if cfg.datablock.input == "landmarks":
        hands.require()  # before minutes of verifying: the one-line install hint now
    meta = read_json(ws.artifact("download", "dataset.json"))
    root = Path(meta["root"])
    if not root.is_dir():
        raise PipelineError(f"dataset root {root} is gone: rerun `python -m pipeline run --stages download,datablock`")
    files, misnamed = data.split_unencodable([p for p in data.list_images(root) if len(p.relative_to(root).parts) > 1])
    bad = [(data.shown_name(p), reason) for p, reason in misnamed]
    if bad:
        log(f"{len(bad)} file(s) with names that are not valid UTF-8 excluded, e.g. {bad[0][0]}")
    bad += [(data.shown_name(p), "symbolic link: not followed inside a dataset") for p in sources.list_links(root)]
    items = [(p.relative_to(root).as_posix(), p.relative_to(root).parts[0]) for p in files]
    seed, b = cfg.run.seed, cfg.datablock
    if b.max_per_class:
        items = _sample(items, b.max_per_class, seed)
        log(f"sampled at most {b.max_per_class} per class (seed {seed}): {len(items)} images")
    if b.verify:
        ok, corrupt = data.verify_images([root / p for p, _ in items], log)
        bad += corrupt
        good = {p.relative_to(root).as_posix() for p in ok}
        items = [it for it in items if it[0] in good]
    write_csv(ws.artifact("datablock", "corrupt.csv"), pd.DataFrame(bad, columns=["path", "reason"]))
    vocab = sorted({label for _, label in items})
    if len(vocab) < 2:
        raise PipelineError(f"the dataset has {len(vocab)} class(es) with usable images ({', '.join(vocab) or 'none'}): "
                            f"a classifier needs at least two class folders under {root}")
    _, valid_idx = RandomSplitter(valid_pct=b.valid_pct, seed=seed)(items)
    df = pd.DataFrame(items, columns=["path", "label"])
    df["is_valid"] = False
    df.loc[list(valid_idx), "is_valid"] = True
    n_valid = int(df["is_valid"].sum())
    log(f"split {len(df) - n_valid} train / {n_valid} valid (valid_pct {b.valid_pct}, seed {seed}), "
        f"{len(vocab)} classes, {len(bad)} corrupt excluded")
    write_csv(ws.artifact("datablock", data.SPLITS), df)
    outputs = [ws.artifact("datablock", data.SPLITS), ws.artifact("datablock", "corrupt.csv"),
               write_json(ws.artifact("datablock", data.VOCAB), {
                   "root": str(root), "vocab": vocab, "n_train": len(df) - n_valid, "n_valid": n_valid,
                   "valid_pct": b.valid_pct, "seed": seed, "n_corrupt": len(bad)}),
               _plot_counts(df, ws.artifact("datablock", "class_counts.png"))]
    # an artifact of the other input kind, or a cache from an earlier run with the option on, would be stale:
    # never leave one to be mistaken for current
    stale = [hands.LANDMARKS_CSV] if b.input != "landmarks" else []
    if b.input == "landmarks" or not b.cache:
        stale += [cache.CACHE_META, cache.CACHE]
    for name in stale:
        ws.artifact("datablock", name).unlink(missing_ok=True)
    if b.input == "landmarks":
        return outputs + _landmarks(df, root, ws, log)
    dls = data.dataloaders(ws, cfg, batch_size=max(1, min(16, len(df) - n_valid)))
    dls.show_batch(max_n=16, figsize=(8, 8))
    import matplotlib.pyplot as plt
    outputs.append(save_figure(plt.gcf(), ws.artifact("datablock", "batch.png")))
    if b.cache:
        outputs += cache.build(ws, cfg, dls, df, log)
    return outputs
