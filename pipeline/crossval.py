"""Leave-one-group-out cross-validation: how a recipe does on signers it has never seen.

    python -m pipeline crossval --config configs/asl_multi.toml [--by group|source]

For every group (a signer: `group_regex` of a `[[download.sources]]`; a source without one, or with
`fold = "source"`, is one group) the recipe trains on all the others and is scored on the one held out. Each
fold is an ordinary run, `run --config X --set run.name=X-cv-GROUP-HASH --set 'datablock.holdout=["GROUP"]'
--set evaluate.test_sets=[]`, with its own run folder (`fold_name`: a readable slug of the group plus a short hash
of it, so two groups never share a folder), through the same stage runner: a fold already up to date is skipped,
and the detection store (`hands.store`) finds each photo's hand once for all folds. The held-out group is set as
a value on the loaded config, never pasted into TOML text, so any group name (quotes, backslashes) holds out
exactly that group. A fold that fails is a row of the table saying why; the other folds still run.

Writes `runs/<run>/crossval/`: crossval.md (per held-out group: images, accuracy, worst letters; mean ± spread;
per-letter mean over folds), crossval.csv, letters.csv and crossval.png.
"""
from __future__ import annotations

import copy
import hashlib
import re
import time
from pathlib import Path

from . import config, conflicts, runner
from .core import artifacts, runlock, tracking
from .core.errors import PipelineError
from .core.workspace import Workspace, pyplot, read_json, save_figure, write_csv, write_text
from .data import loaders

WORST = 3  # letters named per fold


def units(cfg, by: str) -> list[str]:
    """The held-out units of `cfg`'s sources (run its download first): source names with `by` = "source", else
    each source's groups, or the source itself where it has no group_regex or says `fold = "source"`."""
    meta = read_json(Workspace.from_config(cfg).artifact("download", artifacts.DATASET))
    rules = {s.name: s for s in cfg.download.sources}
    out = []
    for entry in meta["sources"]:
        src = rules.get(entry["name"])
        whole = by == "source" or src is None or not src.group_regex or src.fold == "source"
        out += [entry["name"]] if whole else list(entry["groups"])
    if len(out) < 2:
        raise PipelineError(f"crossval needs at least two groups to leave out, found {out}: add sources, or set a "
                            f"source's group_regex (e.g. '^(hand\\d+)_' for Massey's signers)")
    return out


def fold_name(base: str, unit: str) -> str:
    """The run name of the fold holding out `unit`: `BASE-cv-SLUG-HASH`, the slug readable (characters outside
    [A-Za-z0-9_.-] become '-'), the hash (8 hex digits of the group's sha256) making it unique: `s/a b` and `s/a-b`
    share a slug but not a folder."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", unit).strip("-.")[:60]
    return f"{base}-cv-{slug}-{hashlib.sha256(unit.encode()).hexdigest()[:8]}"


def fold_config(base, unit: str):
    """The config of the fold holding out `unit`: `base` with its own run name, `datablock.holdout = [unit]` (the
    value itself, whatever characters it holds) and no test sets, validated as a loaded config is."""
    cfg = copy.deepcopy(base)
    cfg.run.name, cfg.datablock.holdout, cfg.evaluate.test_sets = fold_name(base.run.name, unit), [unit], []
    config.validate(cfg)
    return cfg


def run(config_path, overrides: list[str], by: str = "group", log=print, wait: bool = False) -> dict:
    """Run every fold (up-to-date ones are skipped) and write the table; returns its summary. Each fold's run folder
    is locked while it runs, and the base run's while its download runs and its table is written (`wait`: wait for
    another writer holding one instead of failing)."""
    import pandas as pd

    base = config.load(config_path, overrides)
    if base.datablock.holdout:
        raise PipelineError("crossval chooses datablock.holdout itself: remove it from the config")
    runner.run(base, ["download"], wait=wait)
    folds = units(base, by)
    log(f"[crossval] {len(folds)} folds of {base.run.name}, one per held-out {by}: {', '.join(folds)}")
    rows, letters, failed, tracked, preds = [], [], [], tracking.stamped("crossval"), []
    for i, unit in enumerate(folds, 1):
        log(f"[crossval] fold {i}/{len(folds)}: hold out {unit} (run {fold_name(base.run.name, unit)})")
        t0 = time.perf_counter()
        try:
            cfg = fold_config(base, unit)
            runner.run(cfg, list(runner.STAGE_NAMES), wait=wait)
        except (PipelineError, OSError) as e:  # this fold's failure: a row saying why, and on to the next fold
            why = str(e) if isinstance(e, PipelineError) else f"{type(e).__name__}: {e}"
            log(f"[crossval] fold {unit} failed: {why}")
            failed.append(unit)
            rows.append({"held_out": unit, "images": 0, "accuracy": float("nan"), "worst": f"failed: {why}"})
            continue
        out = Workspace.from_config(cfg).stage_dir("evaluate") / loaders.HOLDOUT_SET
        m = read_json(out / artifacts.METRICS)
        tally = pd.read_csv(out / artifacts.TALLIES, keep_default_na=False)
        tally["held_out"] = unit
        letters.append(tally)
        preds.append(_out_of_fold(out, unit, m["root"]))
        worst = tally.sort_values(["accuracy", "category"]).head(WORST)
        rows.append({"held_out": unit, "images": m["scored"], "accuracy": m["accuracy"],
                     "no_hand": m.get("no_hand", ""), "seconds": round(time.perf_counter() - t0, 1),
                     "worst": ", ".join(f"{c} {a:.0%}" for c, a in zip(worst["category"], worst["accuracy"]))})
        log(f"[crossval] {unit}: accuracy {m['accuracy']:.4f} on {m['scored']} images; worst {rows[-1]['worst']}")
        # run.track: the fold's row as a TensorBoard run of its own, in the base run's folder
        tracking.log_row(base.run.track, Workspace.from_config(base).root, f"{tracked}/{tracking.safe_name(unit)}",
                         {"held_out": unit, "by": by}, rows[-1])
    with runlock.hold(Workspace.from_config(base).root, wait=wait):
        summary = write_table(Workspace.from_config(base).root / "crossval", base, by, pd.DataFrame(rows),
                              pd.concat(letters) if letters else None, config_path, overrides,
                              pd.concat(preds) if preds else None)
    tracking.log_row(base.run.track, Workspace.from_config(base).root, f"{tracked}/mean",
                     {"held_out": "mean over folds", "by": by}, {"accuracy": summary["mean"], "std": summary["std"], "pooled": summary["pooled"]})
    log(f"[crossval] mean {summary['mean']:.4f} ± {summary['std']:.4f}, lowest group {summary['min_group']}, "
        f"lowest letter {summary['min_letter']}; table in {summary['path']}")
    if "conflicts" in summary:
        log(f"[crossval] {summary['conflicts']}")
    if failed:
        raise PipelineError(f"{len(failed)} fold(s) failed: {', '.join(failed)} (the others are in the table)")
    return summary


def _out_of_fold(folder, unit: str, root: str):
    """The held-out set's predictions of one fold (held_out, true, predicted, the photo's path)."""
    import pandas as pd

    df = pd.read_csv(folder / artifacts.PREDICTIONS, dtype={"file": str, "true": str, "predicted": str},
                     keep_default_na=False)
    return pd.DataFrame({"held_out": unit, "true": df["true"], "predicted": df["predicted"],
                         "path": [str(Path(root) / f) for f in df["file"]]})


def write_table(folder, cfg, by: str, folds, letters, config_path, overrides, preds=None) -> dict:
    """crossval.md, crossval.csv, letters.csv, crossval.png and, from the out-of-fold predictions `preds`,
    conflicts.csv in `folder`; returns the summary figures (with `conflicts`, the log's line about them)."""
    import shlex

    ok = folds.dropna(subset=["accuracy"])
    mean, std = float(ok["accuracy"].mean()), float(ok["accuracy"].std(ddof=0)) if len(ok) else float("nan")
    pooled = float((ok["accuracy"] * ok["images"]).sum() / ok["images"].sum()) if len(ok) else float("nan")
    per_letter = (letters.groupby("category")["accuracy"].agg(["mean", "min", "count"]).reset_index()
                  .rename(columns={"category": "letter", "count": "folds"}) if letters is not None else None)
    command = " ".join(["python -m pipeline crossval", f"--config {config_path}" if config_path else "",
                        *(f"--set {shlex.quote(o)}" for o in overrides), f"--by {by}"]).replace("  ", " ")
    lines = [f"# Leave-one-{by}-out: {cfg.run.name}", "", f"`{command}`", "",
             "| held out | images | accuracy | worst letters |", "|---|---:|---:|---|"]
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731  (a group name may hold '|')
    lines += [f"| {cell(r.held_out)} | {r.images} | {r.accuracy:.1%} | {cell(r.worst)} |" for r in folds.itertuples()]
    lines += ["", f"**Mean over {len(ok)} folds: {mean:.1%} ± {std:.1%}** (spread: standard deviation over folds); "
                  f"lowest fold {ok['accuracy'].min():.1%}; all held-out images pooled {pooled:.1%}.", ""]
    if per_letter is not None:
        lines += ["Per letter, mean over the folds that have it (lowest first):", "",
                  "| letter | mean | lowest fold | folds |", "|---|---:|---:|---:|"]
        lines += [f"| {r.letter} | {r.mean:.1%} | {r.min:.1%} | {r.folds} |"
                  for r in per_letter.sort_values(["mean", "letter"]).itertuples()]
    said = None
    if preds is not None:
        found = conflicts.table(preds)
        write_csv(folder / artifacts.CONFLICTS, found)
        said = conflicts.said(found)
        lines += ["", f"Label conflicts ({artifacts.CONFLICTS}): the classes a held-out {by} spells its own way, "
                      f"most of its photos read as one other class by models that never saw it:", ""]
        lines += [f"- {cell(conflicts.sentence(r))}" for _, r in conflicts.flagged(found).iterrows()] or ["- none"]
        lines.append("")
    else:  # no fold scored: a table of an earlier crossval would pass for this one's
        (folder / artifacts.CONFLICTS).unlink(missing_ok=True)
    write_text(folder / artifacts.CROSSVAL_MD, "\n".join(lines) + "\n")
    write_csv(folder / artifacts.CROSSVAL_CSV, folds)
    if per_letter is not None:
        write_csv(folder / artifacts.CROSSVAL_LETTERS, per_letter)
    _plot(folds, per_letter, folder / artifacts.CROSSVAL_PNG, cfg.run.name)
    low = per_letter.sort_values("mean").iloc[0] if per_letter is not None and len(per_letter) else None
    return {"mean": mean, "std": std, "pooled": pooled, "path": str(folder / artifacts.CROSSVAL_MD),
            "min_group": f"{ok.sort_values('accuracy').iloc[0]['held_out']} {ok['accuracy'].min():.1%}" if len(ok) else "",
            "min_letter": f"{low['letter']} {low['mean']:.1%}" if low is not None else "",
            **({"conflicts": said} if said else {})}


def _plot(folds, per_letter, path, name: str):
    plt = pyplot()

    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 4), gridspec_kw={"width_ratios": [1, 2]})
    a.bar(folds["held_out"], folds["accuracy"].fillna(0), color="C0")
    a.axhline(folds["accuracy"].mean(), color="black", linestyle="--", linewidth=1, label="mean")
    a.set(ylim=(0, 1), ylabel="accuracy", title=f"{name}: held-out group")
    a.tick_params(axis="x", rotation=60)
    a.legend()
    if per_letter is not None:
        b.bar(per_letter["letter"], per_letter["mean"], color="C2")
        b.set(ylim=(0, 1), ylabel="mean accuracy over folds", title="per letter")
    return save_figure(fig, path)
