"""datablock: merge the sources, verify images, sample, keep one copy of each file, hold out groups, split once
(RandomSplitter(valid_pct, seed) or whole groups), persist the split."""
from __future__ import annotations

import functools
import os
import random
from collections import defaultdict
from pathlib import Path

from pipeline.core import artifacts
from pipeline.core.errors import PipelineError
from pipeline.core.stagespec import StageSpec
from pipeline.core.workspace import pyplot, read_json, save_figure, sha256_file, write_csv, write_json
from pipeline.data import datasets, leakage, loaders, sources, splitting
from pipeline import kinds

STAGE = StageSpec(
    "datablock",
    summary="merge the sources, verify images, hold out groups, split (random or by group), persist the split",
    writes=(artifacts.SPLITS, artifacts.VOCAB, artifacts.CORRUPT, artifacts.BATCH_PNG, artifacts.CLASS_COUNTS_PNG,
            artifacts.LEAKAGE, artifacts.LEAKAGE_PNG),
    writes_if=lambda cfg: (((artifacts.CACHE, artifacts.CACHE_META) if cfg.datablock.cache else ())
                           + kinds.of(cfg).writes
                           + ((artifacts.HOLDOUT,) if cfg.datablock.holdout else ())),
    reads=lambda cfg: ("download",),
    shared_work=True, model_code=False,  # under torchrun, every process first finds the hands of its 1/N of the images (`warm`)
    params=("datablock", "run.seed"),
    # the cached pixels (train's DATA entries) and what the input's own prepare reads; no other train entry: the
    # split, the keypoints and the cache do not depend on them (batch.png, a picture of one training batch, is drawn
    # at the train settings of the run that made it)
    params_if=lambda cfg: ((("train:data",) if cfg.datablock.cache else ()) + kinds.of(cfg).params),
    ignores=("train",))


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
    plt = pyplot()

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


def _items(meta: dict, cfg, log) -> tuple[Path, list[tuple[str, str, str, str]], list[tuple[str, str]]]:
    """(common root of every source, (path under it, label, source, group) per image, (path, reason) for names
    that are not valid UTF-8), in source order."""
    srcs = {s.name: s for s in cfg.download.training_sources()}
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
        found, _ = datasets.labelled_images(r, **srcs[name].rules())
        under = r.relative_to(root).as_posix()
        for rel, label, group in found:
            path = rel if under == "." else f"{under}/{rel}"
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:
                bad.append((loaders.shown_name(root / path), "file name is not valid UTF-8: rename it"))
                continue
            items.append((path, label, name, group))
    if bad:
        log(f"{len(bad)} file(s) with names that are not valid UTF-8 excluded, e.g. {bad[0][0]}")
    for r in roots.values():
        bad += [(loaders.shown_name(p), "symbolic link: not followed inside a dataset") for p in sources.list_links(r)]
    return root, items, bad


def _digests(root: Path, paths: list[str]) -> dict[str, str]:
    """path under `root` → the sha256 of its bytes, read in threads; an unreadable file is a key of its own (image
    verification reports it)."""
    from concurrent.futures import ThreadPoolExecutor

    def digest(path):
        try:
            return sha256_file(root / path)
        except OSError:
            return f"unreadable:{path}"

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(paths, pool.map(digest, paths)))


def _log_left_out(pairs, what: str, log) -> int:
    if pairs:
        log(f"left out {len(pairs)} file(s) {what} (each kept where first listed), e.g. {pairs[0][0]} "
            f"(kept {pairs[0][1]})")
    return len(pairs)


def warm(cfg, ws, log) -> int:
    """This process's 1/N of the per-image work of the model's input (MediaPipe's keypoints, the crops), into the
    content stores, before rank 0 runs this stage in a distributed launch: every listed image (sampled as `run`
    samples), whether or not it will pass verification (an unreadable one is skipped here, and reported by `run`).
    Returns how many images this process looked at."""
    from pipeline.core import distributed

    kind = kinds.of(cfg)
    kind.require()
    root, items, _ = _items(read_json(ws.artifact("download", artifacts.DATASET)), cfg, log)
    if cfg.datablock.max_per_class:
        items = _sample(items, cfg.datablock.max_per_class, cfg.run.seed)
    return kind.warm(distributed.shard(sorted({root / p for p, *_ in items})), cfg, ws.data, log)


def run(cfg, ws, log):
    import pandas as pd

    kind = kinds.of(cfg)  # what the model reads: prepared here once, after the split
    kind.require()  # before minutes of verifying: the one-line install hint now
    root, items, bad = _items(read_json(ws.artifact("download", artifacts.DATASET)), cfg, log)
    # one file, one side of the split: a file two sources list (one folder named twice) is kept once, and a file
    # with two labels is an error; below, a copy of an image with the same label is left out too
    folder = functools.cache(os.path.realpath)  # one lookup per folder: files inside a dataset are never links
    items, same_file, _ = splitting.deduplicate(items, lambda p: os.path.join(folder(os.path.dirname(root / p)),
                                                                              os.path.basename(p)), root=str(root))
    n_dup = _log_left_out(same_file, "listed by more than one source", log)
    seed, b = cfg.run.seed, cfg.datablock
    if b.max_per_class:
        items = _sample(items, b.max_per_class, seed)
        log(f"sampled at most {b.max_per_class} per class (seed {seed}): {len(items)} images")
    if b.verify:
        ok, corrupt = loaders.verify_images([root / p for p, *_ in items], log)
        bad += corrupt
        good = {p.relative_to(root).as_posix() for p in ok}
        items = [it for it in items if it[0] in good]
    items, same_bytes, clashes = splitting.deduplicate(items, _digests(root, [p for p, *_ in items]).__getitem__,
                                                       same_file=False)
    n_dup += _log_left_out(same_bytes, "that are copies of another image of their label", log)
    if clashes:
        log(f"note: {len(clashes)} image(s) hold the same bytes as an image of another label, e.g. {clashes[0][0]} "
            f"and {clashes[0][1]}: both kept; check those labels")
    write_csv(ws.artifact("datablock", artifacts.CORRUPT), pd.DataFrame(bad, columns=["path", "reason"]))
    df = pd.DataFrame(items, columns=["path", "label", "source", "group"])
    held = splitting.holdout_mask(list(df["group"]), list(df["source"]), b.holdout)
    holdout, df = df[held].reset_index(drop=True), df[[not h for h in held]].reset_index(drop=True)
    df, noted = kind.keep(df, holdout, root, cfg, ws, log)  # what the input cannot train on, left out before the split
    if b.holdout:
        log(f"held out {len(holdout)} images of {', '.join(b.holdout)} (scored by evaluate as test set "
            f"{loaders.HOLDOUT_SET!r})")
    vocab = sorted(set(df["label"]))
    if len(vocab) < 2 and len(holdout):
        took = "every image" if df.empty else f"all but {len(df)} image(s) of {', '.join(vocab)}"
        raise PipelineError(f"datablock.holdout = {list(b.holdout)} took {took} ({len(holdout)} held out): nothing "
                            f"is left to train a classifier on; hold out fewer groups or sources")
    if len(vocab) < 2:
        raise PipelineError(f"the dataset has {len(vocab)} class(es) with usable images ({', '.join(vocab) or 'none'}): "
                            f"a classifier needs at least two class folders under {root}")
    if b.split == "group":
        valid_groups = splitting.group_split(list(df["group"]), b.valid_pct, seed)
        df.insert(2, "is_valid", df["group"].isin(valid_groups))
        log(f"validation groups (seed {seed}): {', '.join(sorted(valid_groups)[:12])}"
            + (f" and {len(valid_groups) - 12} more" if len(valid_groups) > 12 else ""))
    elif b.split == "monitor":
        df.insert(2, "is_valid", splitting.monitor_split(list(df["group"]), b.valid_pct, seed))
    else:
        valid_idx = splitting.random_split(len(df), b.valid_pct, seed)
        df.insert(2, "is_valid", [i in valid_idx for i in range(len(df))])
    n_valid = int(df["is_valid"].sum())
    log(f"split {len(df) - n_valid} train / {n_valid} valid ({b.split}, valid_pct {b.valid_pct}, seed {seed}), "
        f"{len(vocab)} classes, {df['group'].nunique()} group(s), {len(bad)} corrupt excluded")
    write_csv(ws.artifact("datablock", artifacts.SPLITS), df)
    valid, train = df[df["is_valid"]], df[~df["is_valid"]]  # near-copies of training photos among the valid ones
    leaks, outputs = leakage.check([root / p for p in valid["path"]], list(valid["label"]),
                                   [root / p for p in train["path"]], list(train["label"]), (root, root), ws.data,
                                   ws.artifact("datablock", artifacts.LEAKAGE),
                                   ws.artifact("datablock", artifacts.LEAKAGE_PNG), "validation", leakage.SPLIT_FIX, log)
    outputs += [ws.artifact("datablock", artifacts.SPLITS), ws.artifact("datablock", artifacts.CORRUPT),
                write_json(ws.artifact("datablock", artifacts.VOCAB), {
                    "root": str(root), "vocab": vocab, "n_train": len(df) - n_valid, "n_valid": n_valid,
                    "valid_pct": b.valid_pct, "split": b.split, "seed": seed, "n_corrupt": len(bad),
                    "n_holdout": len(holdout), "n_duplicates": n_dup, "sources": sorted(set(df["source"])),
                    "leakage": leaks, **noted}),
                _plot_counts(df, ws.artifact("datablock", artifacts.CLASS_COUNTS_PNG))]
    if b.holdout:
        outputs.append(write_csv(ws.artifact("datablock", artifacts.HOLDOUT), holdout))
    else:
        ws.artifact("datablock", artifacts.HOLDOUT).unlink(missing_ok=True)
    # an artifact of another input kind, or a cache from an earlier run with the option on (config.validate allows
    # it for pixels only), would be stale: never leave one to be mistaken for current
    stale = {n for k in kinds.KINDS for n in k.writes} - set(kind.writes)
    if not b.cache:
        stale |= {artifacts.CACHE_META, artifacts.CACHE}
    for name in sorted(stale):
        ws.artifact("datablock", name).unlink(missing_ok=True)
    return outputs + kind.prepare(df, root, cfg, ws, log)
