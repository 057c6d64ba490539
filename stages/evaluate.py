"""evaluate: batched inference of the exported learner on each test set; accuracy, tallies, plots. The engine is
fastai on the `.pkl`, or with `evaluate.engine = "onnx"` onnxruntime on the `.onnx` (`kinds.load`)."""
from __future__ import annotations

from pathlib import Path

from pipeline.core import artifacts, tracking
from pipeline.core.errors import PipelineError
from pipeline.core.stagespec import StageSpec
from pipeline.core.workspace import pyplot, read_json, save_figure, sha256_text, write_csv, write_json
from pipeline.data import datasets, leakage, loaders, sources
from pipeline.data.labels import Labeller
from pipeline import kinds
from pipeline.models import calibration, interpretation

STAGE = StageSpec(
    "evaluate",
    summary="batched inference on each test set (and the held-out groups); accuracy, tallies, per-class report, plots",
    writes=tuple(f"{{set}}/{n}" for n in (artifacts.PREDICTIONS, artifacts.TALLIES, artifacts.SKIPPED,
                                          artifacts.TALLIES_PNG, artifacts.CONFUSION_PNG, artifacts.RELIABILITY_PNG,
                                          *artifacts.INTERPRETATION, artifacts.LEAKAGE, artifacts.LEAKAGE_PNG,
                                          artifacts.METRICS)) + (artifacts.METRICS,),
    sets=lambda cfg: ((loaders.HOLDOUT_SET,) if cfg.datablock.holdout else ()) + tuple(t.name for t in cfg.evaluate.test_sets),
    reads=lambda cfg: ("datablock", "train"),  # datablock: the held-out groups, and the training photos (leakage)
    params=("evaluate",),
    external=True)


def external_fingerprint(cfg, ws) -> str:
    """Local folder test sets are fingerprinted by their listing."""
    parts = []
    for t in cfg.evaluate.test_sets:
        try:
            parts.append(datasets.local_fingerprint(t.source, t.subdir))
        except PipelineError as e:
            raise PipelineError(f"test set {t.name}: {e}") from None
    return sha256_text("".join(parts))


def tallies(df, vocab: list[str]):
    """Per true category: total, correct, accuracy and the label it is most often mistaken for."""
    import pandas as pd

    rows = []
    for label, g in df.groupby("true", sort=True):
        wrong = g.loc[~g["correct"], "predicted"].value_counts()
        rows.append({"category": label, "total": len(g), "correct": int(g["correct"].sum()),
                     "accuracy": float(g["correct"].mean()),
                     "most_confused_with": wrong.index[0] if len(wrong) else ""})
    return pd.DataFrame(rows, columns=["category", "total", "correct", "accuracy", "most_confused_with"])


def _plot_tallies(tally, name: str, path: Path) -> Path:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(tally)), 4))
    ax.bar(tally["category"], tally["total"], color="lightgray", label="total")
    ax.bar(tally["category"], tally["correct"], color="C2", label="correct")
    ax.set(xlabel="category", ylabel="images", title=f"{name}: correct per category")
    ax.tick_params(axis="x", rotation=90)
    ax.legend()
    return save_figure(fig, path)


def _plot_confusion(df, vocab: list[str], name: str, path: Path) -> Path:
    plt = pyplot()
    import numpy as np

    rows = sorted(set(df["true"]))
    index = {v: i for i, v in enumerate(vocab)}
    m = np.zeros((len(rows), len(vocab)), dtype=int)
    for r, (t, p) in enumerate(zip(df["true"], df["predicted"])):
        m[rows.index(t), index[p]] += 1
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(vocab) + 2), max(4, 0.3 * len(rows) + 1.5)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(vocab)), vocab, rotation=90)
    ax.set_yticks(range(len(rows)), rows)
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > m.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=f"{name}: confusion")
    return save_figure(fig, path)


def _listed(t, ws, vocab: list[str], log) -> dict:
    """Test set `t`'s images: labelled from file names or folders, verified; what was left out, counted."""
    try:
        root = datasets.image_root(t.source, t.subdir, ws.data, log)
    except PipelineError as e:
        raise PipelineError(f"test set {t.name}: {e}") from None
    files, badly_named = loaders.split_unencodable(loaders.list_images(root))
    label = Labeller(t.label_regex, t.label_map, t.uppercase)
    labelled = [(p, label(p)) for p in files]
    unmatched = [p for p, y in labelled if y is None]
    known = [(p, y) for p, y in labelled if y is not None and y in vocab]
    unknown = [(p, y) for p, y in labelled if y is not None and y not in vocab]
    ok, corrupt = loaders.verify_images([p for p, _ in known], log) if known else ([], [])
    good = set(ok)
    links = [(p, "symbolic link: not followed inside a dataset") for p in sources.list_links(root)]
    return {"name": t.name, "root": root, "known": [(p, y) for p, y in known if p in good], "unmatched": unmatched,
            "unknown": unknown,
            "corrupt": [(loaders.shown_name(Path(p).relative_to(root)), r) for p, r in badly_named + links + corrupt],
            "images": len(files) + len(badly_named) + len(links), "groups": None, "source": sources.redact_source(t.source),
            "hint": f"check label_regex {t.label_regex!r}, label_map and uppercase"}


def _holdout(ws, vocab: list[str]) -> dict:
    """The images datablock held out (datablock.holdout), already labelled and verified, with their groups."""
    import pandas as pd

    df = pd.read_csv(ws.artifact("datablock", artifacts.HOLDOUT), dtype=str, keep_default_na=False)
    root = Path(read_json(ws.artifact("datablock", artifacts.VOCAB))["root"])
    inside = df["label"].isin(vocab)
    return {"name": loaders.HOLDOUT_SET, "root": root, "known": [(root / p, y) for p, y in zip(df["path"][inside], df["label"][inside])],
            "unmatched": [], "unknown": [(root / p, y) for p, y in zip(df["path"][~inside], df["label"][~inside])],
            "corrupt": [], "images": len(df), "groups": list(df["group"][inside]),
            "source": "datablock.holdout: " + ", ".join(sorted(set(df["source"]))), "hint": "none of its labels was trained on"}


def _training_photos(ws) -> tuple[list[Path], list[str], Path]:
    """The photos the model trained on (datablock's split, training side), their labels, and their root."""
    df, root, _ = loaders.load_split(ws)
    train = df[~df["is_valid"]]
    return [root / p for p in train["path"]], list(train["label"]), root


def evaluate_set(model, listing: dict, cfg, ws, log, folder=None, train=None) -> tuple[dict, list[Path]]:
    """Predict one listed test set; write its CSVs, plots and metrics (per group too, where it has groups); with
    `train` (`_training_photos`), its near-copies of training photos (data/leakage.py)."""
    import pandas as pd

    name, root, known = listing["name"], listing["root"], listing["known"]
    unmatched, unknown, corrupt, n_images = (listing[k] for k in ("unmatched", "unknown", "corrupt", "images"))
    out = ws.stage_dir("evaluate") / name
    vocab = model.vocab
    log(f"{name}: {n_images} images, {len(known)} scored, {len(unmatched)} not matching the label regex, "
        f"{len(unknown)} with labels outside the model's vocab, {len(corrupt)} unreadable")
    if not known:
        raise PipelineError(f"test set {name}: no image under {root} has a label in the model's vocab "
                            f"({listing['hint']})")
    paths = [p for p, _ in known]
    preds, conf, probs, found = model.predict(paths, cfg.evaluate.batch_size, tta=cfg.evaluate.tta, log=log,
                                              folder=folder)
    df = pd.DataFrame({"file": [str(p.relative_to(root)) for p in paths], "true": [y for _, y in known],
                       "predicted": preds, "confidence": conf})
    df["correct"] = df["true"] == df["predicted"]
    if listing["groups"] is not None:
        df["group"] = listing["groups"]
    if found is not None:  # scored all the same: a hand the detector misses is a miss of the whole model
        df["hand_found"] = found
    ece, bins = calibration.reliability(df["confidence"], df["correct"])
    interpreted = interpretation.score(df, probs, vocab)  # p_true and loss per photo; top-1 and top-5 accuracy
    tally = tallies(df, vocab)
    skipped = pd.DataFrame([(str(p.relative_to(root)), "label regex did not match", "") for p in unmatched]
                           + [(str(p.relative_to(root)), "label not in the model's vocab", y) for p, y in unknown]
                           + [(p, f"unreadable: {r}", "") for p, r in corrupt],
                           columns=["file", "reason", "label"])
    metrics = {"accuracy": float(df["correct"].mean()), "scored": len(df), "correct": int(df["correct"].sum()),
               "images": n_images, "unmatched": len(unmatched), "out_of_vocab": len(unknown),
               "unreadable": len(corrupt), "missing_classes": sorted(set(vocab) - set(df["true"])),
               **interpreted, "ece": ece, "mean_confidence": float(df["confidence"].mean()), "tta": cfg.evaluate.tta,
               "source": listing["source"], "root": str(root), "engine": cfg.evaluate.engine}
    if listing["groups"] is not None:  # held-out groups: per group, and per source (a source may hold hundreds)
        for key, col in (("groups", df["group"]), ("sources", df["group"].str.split("/").str[0])):
            by = df["correct"].groupby(col.to_numpy())
            metrics[key] = {g: {"images": int(n), "accuracy": float(a)} for g, n, a in zip(by.size().index, by.size(), by.mean())}
        shown = metrics["groups"] if len(metrics["groups"]) <= 12 else metrics["sources"]
        log(f"{name}: accuracy per {'group' if shown is metrics['groups'] else 'source'}: "
            + ", ".join(f"{g} {v['accuracy']:.3f} ({v['images']})" for g, v in shown.items()))
    if found is not None:
        metrics["no_hand"] = int((~df["hand_found"]).sum())
        metrics["accuracy_hand_found"] = float(df.loc[df["hand_found"], "correct"].mean()) if df["hand_found"].any() else 0.0
        log(f"{name}: no hand found in {metrics['no_hand']} image(s); accuracy where one was found "
            f"{metrics['accuracy_hand_found']:.4f}")
    log(f"{name}: accuracy {metrics['accuracy']:.4f} ({metrics['correct']}/{metrics['scored']}), "
        f"top-5 {metrics['top5_accuracy']:.4f}, "
        f"mean confidence {metrics['mean_confidence']:.4f}, ECE {ece:.4f}")
    if metrics["missing_classes"]:
        log(f"{name}: no test images for {len(metrics['missing_classes'])} of the model's {len(vocab)} classes "
            f"({', '.join(metrics['missing_classes'][:10])}): listed as missing_classes in metrics.json")
    leaks = []
    if train is not None:
        metrics["leakage"], leaks = leakage.check(paths, list(df["true"]), train[0], train[1], (root, train[2]),
                                                  ws.data, out / artifacts.LEAKAGE, out / artifacts.LEAKAGE_PNG,
                                                  f"test set {name}", leakage.TEST_FIX, log)
    files_out = [*leaks, write_csv(out / artifacts.PREDICTIONS, df), write_csv(out / artifacts.TALLIES, tally),
                 write_csv(out / artifacts.SKIPPED, skipped),
                 _plot_tallies(tally, name, out / artifacts.TALLIES_PNG),
                 _plot_confusion(df, vocab, name, out / artifacts.CONFUSION_PNG),
                 calibration.plot_reliability(bins, ece, name, out / artifacts.RELIABILITY_PNG),
                 *interpretation.write(df, vocab, out, root, model.finds_hands, name),
                 write_json(out / artifacts.METRICS, metrics)]
    return metrics, files_out


def run(cfg, ws, log):
    if not cfg.evaluate.test_sets and not cfg.datablock.holdout:
        raise PipelineError("no test sets: add [[evaluate.test_sets]] with name, source and label_regex to the config")
    expected = None
    if cfg.evaluate.engine == "fastai":  # an .onnx runs no code when loaded: its card's sha256 catches corruption
        expected = ws.recorded_sha256("train", ws.learner)  # the hash train recorded, not the card beside it
        if expected is None and not cfg.evaluate.trust_learner:
            raise PipelineError(f"train's manifest records no sha256 for {ws.learner}: rerun train")
    model = kinds.load(ws.learner, cfg.evaluate.engine, trust=cfg.evaluate.trust_learner, sha256=expected)
    vocab = model.vocab
    listings = [_holdout(ws, vocab)] if cfg.datablock.holdout else []
    summary, outputs, train = {}, [], _training_photos(ws)
    for listing in listings + [_listed(t, ws, vocab, log) for t in cfg.evaluate.test_sets]:
        summary[listing["name"]], files = evaluate_set(model, listing, cfg, ws, log, ws.data, train)
        outputs += files
    kept = ("accuracy", "top5_accuracy", "scored", "correct", "unmatched", "out_of_vocab", "ece")
    outputs.append(write_json(ws.artifact("evaluate", artifacts.METRICS),
                              {k: {**{m: v[m] for m in kept}, "near_copies": v["leakage"]["share"]}
                               for k, v in summary.items()}))
    if tracker := tracking.open_tracker(cfg.run.track, ws.root, "evaluate"):  # each set's figures, and the params
        try:
            tracker.hparams(tracking.params(cfg.to_saved_dict()),
                            {f"{name}/{k}": v for name, m in summary.items() for k, v in m.items()})
        finally:
            tracker.close()
        log(f"tracked in {tracker.folder.relative_to(ws.root)}")
    return outputs
