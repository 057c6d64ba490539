"""What a model got wrong on one labelled set, as fastai's `ClassificationInterpretation` shows it: the loss of each
photo (-ln p(true class)), top-1 and top-5 accuracy, per-class precision, recall and F1 (`classification_report.csv`,
sklearn's definitions, 0 where a class is never predicted), the most confused (true, predicted) pairs
(`most_confused.csv`) and a gallery of the photos with the highest loss (`top_losses.png`, the hand's keypoints drawn
for a model that finds hands). evaluate calls `write` for each test set, train `validation` for its validation split:
one computation for both.
"""
from __future__ import annotations

from pathlib import Path

from ..core import artifacts
from ..core.errors import PipelineError
from ..core.workspace import pyplot, save_figure, write_csv

TOP_K = 5           # metrics.json's top5_accuracy, beside top-1
GALLERY = 16        # photos in top_losses.png, highest loss first
MIN_P = 1e-12       # a probability of 0 is taken as this: the loss stays finite (27.6)
REPORT_COLUMNS = ["class", "precision", "recall", "f1", "support", "predicted"]


def losses(probs, truth: list, vocab: list[str]):
    """(p of the true class, its loss -ln p) per row of `probs` (n, len(vocab)), as float64 arrays."""
    import numpy as np

    index = {v: i for i, v in enumerate(vocab)}
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(truth)), [index[y] for y in truth]]
    return p, -np.log(np.maximum(p, MIN_P))


def top_k_accuracy(probs, truth: list, vocab: list[str], k: int) -> float:
    """The fraction of rows whose true class is among the `k` most probable (all of them when `k` >= the vocab)."""
    import numpy as np

    probs = np.asarray(probs)
    if len(truth) == 0:
        return 0.0
    k = min(k, probs.shape[1])
    best = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    index = {v: i for i, v in enumerate(vocab)}
    return float(np.mean([index[y] in row for y, row in zip(truth, best)]))


def classification_report(truth: list, predicted: list, vocab: list[str]):
    """Per class (every class that is true or predicted at least once, in vocab order): precision, recall, F1, support
    (true photos) and predicted (photos given it); then `macro avg` (unweighted mean over those classes) and
    `weighted avg` (weighted by support), as sklearn's `classification_report` with zero_division=0."""
    import pandas as pd

    t, p = pd.Series(list(truth), dtype=str), pd.Series(list(predicted), dtype=str)
    hit = t == p
    rows = []
    for c in [v for v in vocab if v in set(t) | set(p)]:
        tp, support, given = int((hit & (t == c)).sum()), int((t == c).sum()), int((p == c).sum())
        precision, recall = tp / given if given else 0.0, tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": c, "precision": precision, "recall": recall, "f1": f1, "support": support,
                     "predicted": given})
    df = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    n = int(df["support"].sum())
    scores = ("precision", "recall", "f1")
    averages = [{"class": "macro avg", **{m: float(df[m].mean()) if len(df) else 0.0 for m in scores}},
                {"class": "weighted avg",
                 **{m: float((df[m] * df["support"]).sum() / n) if n else 0.0 for m in scores}}]
    for a in averages:
        a.update(support=n, predicted=n)
    return pd.concat([df, pd.DataFrame(averages, columns=REPORT_COLUMNS)], ignore_index=True)


def most_confused(truth: list, predicted: list, min_count: int = 1):
    """(true, predicted, count) of every wrong pair seen at least `min_count` times, most frequent first (ties: by
    true, then predicted), as fastai's `most_confused`."""
    import pandas as pd

    df = pd.DataFrame({"true": list(truth), "predicted": list(predicted)}, dtype=str)
    wrong = df[df["true"] != df["predicted"]]
    pairs = wrong.groupby(["true", "predicted"]).size().reset_index(name="count")
    pairs = pairs[pairs["count"] >= min_count]
    return pairs.sort_values(["count", "true", "predicted"], ascending=[False, True, True],
                             kind="stable").reset_index(drop=True)


def score(df, probs, vocab: list[str]) -> dict:
    """Add `p_true` and `loss` to the predictions `df` (columns true, predicted, correct; one row per row of `probs`,
    in place) and return the summary metrics: top1_accuracy, top5_accuracy, mean_loss."""
    df["p_true"], df["loss"] = losses(probs, list(df["true"]), vocab)
    return {"top1_accuracy": float(df["correct"].mean()) if len(df) else 0.0,
            "top5_accuracy": top_k_accuracy(probs, list(df["true"]), vocab, TOP_K),
            "mean_loss": float(df["loss"].mean()) if len(df) else 0.0}


def write(df, vocab: list[str], folder: Path, root: Path, finds_hands: bool, title: str) -> list[Path]:
    """classification_report.csv, most_confused.csv and top_losses.png in `folder`, from the scored predictions `df`
    (`score` first; `file` relative to `root`)."""
    return [write_csv(folder / artifacts.CLASS_REPORT, classification_report(df["true"], df["predicted"], vocab)),
            write_csv(folder / artifacts.MOST_CONFUSED, most_confused(df["true"], df["predicted"])),
            gallery(df, root, folder / artifacts.TOP_LOSSES_PNG, finds_hands, title)]


def worst(df, n: int = GALLERY):
    """The `n` rows of `df` with the highest loss, highest first (ties: in `df`'s order)."""
    return df.sort_values("loss", ascending=False, kind="stable").head(n)


def gallery(df, root: Path, path: Path, finds_hands: bool, title: str, n: int = GALLERY) -> Path:
    """top_losses.png: the `n` photos with the highest loss, row by row, each titled with its file name, true and
    predicted class, p of the prediction and the loss; a hand model's photos with the keypoints MediaPipe finds drawn on
    them (found again here, as `hands.plot_landmarks` does)."""
    from ..data import hands

    plt = pyplot()
    rows = worst(df, n)
    cols = max(1, min(4, len(rows)))
    lines = max(1, -(-len(rows) // cols))
    fig, axes = plt.subplots(lines, cols, figsize=(2.6 * cols, 3.1 * lines), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    detector = hands.Detector() if finds_hands and len(rows) else None
    try:
        for ax, r in zip(axes.flat, rows.itertuples()):
            photo, note = _photo(root / r.file, detector)
            if photo is not None:
                ax.imshow(photo)
            name = Path(r.file).name
            ax.set_title(f"{name if len(name) <= 28 else '…' + name[-27:]}\ntrue {r.true} · pred {r.predicted}\n"
                         f"p {r.confidence:.2f} · loss {r.loss:.2f}{note}",
                         fontsize=8, color="black" if r.true == r.predicted else "#b00020")
    finally:
        if detector is not None:
            detector.close()
    fig.suptitle(f"{title}: top losses (the {len(rows)} photos the model got most wrong)", fontsize=10)
    return save_figure(fig, path)


def _photo(path: Path, detector):
    """(the photo as an RGB array or PIL image, with the keypoints drawn when `detector` is given, or None when it
    cannot be read; a note for the title)."""
    from ..data import hands

    try:
        img = hands.load_rgb(path)
    except (OSError, ValueError):
        return None, "\n(unreadable)"
    if detector is None:
        return img, ""
    points, _, _ = detector(path)
    return (hands.draw_keypoints(img, points), "") if points is not None else (img, "\n(no hand found)")


def validation(learn, ws, finds_hands: bool, log=print) -> tuple[dict, list[Path]]:
    """train's interpretation of its validation split: `learn`'s predictions on it (as exported: after the fit and any
    temperature folded in) written to train's predictions.csv (file, true, predicted, confidence, correct, p_true,
    loss) with the other files of `write`; returns (metrics for train's metrics.json, the files written)."""
    import numpy as np
    import pandas as pd

    from ..data import loaders

    probs, targets = _valid_probs(learn)
    vocab = list(learn.dls.vocab)
    split, root, _ = loaders.load_split(ws)
    valid = split[split["is_valid"]].reset_index(drop=True)
    truth = [vocab[i] for i in targets]
    if len(valid) != len(truth) or list(valid["label"]) != truth:  # the valid loader reads the split's rows in order
        raise PipelineError(f"the validation predictions ({len(truth)}) do not line up with the split's "
                            f"{len(valid)} validation rows: rerun datablock")
    idx = probs.argmax(axis=1)
    df = pd.DataFrame({"file": valid["path"], "true": truth, "predicted": [vocab[i] for i in idx],
                       "confidence": probs[np.arange(len(idx)), idx].astype(float)})
    df["correct"] = df["true"] == df["predicted"]
    summary = score(df, probs, vocab)
    folder = ws.artifact("train", artifacts.PREDICTIONS).parent
    files = [write_csv(folder / artifacts.PREDICTIONS, df), *write(df, vocab, folder, root, finds_hands, "validation")]
    log(f"validation: top-1 {summary['top1_accuracy']:.4f}, top-5 {summary['top5_accuracy']:.4f}, "
        f"mean loss {summary['mean_loss']:.4f} (per-class report, most confused pairs, top losses: beside the metrics)")
    return {f"valid_{k}": v for k, v in summary.items()}, files


def _valid_probs(learn):
    """(softmax probabilities, target indices) of `learn`'s model over its validation loader, as numpy arrays: the
    model's forward in eval mode, batch by batch, as `kinds.shared.model.SettleBatchNorm._validate` does. Not `get_preds`: it
    fires `after_fit`, where SettleBatchNorm recomputes the BatchNorm statistics (through dropout, so differently each
    time) and would change the model about to be exported."""
    import torch

    model, n_inp = learn.model, learn.dls.n_inp
    was_training = model.training
    model.eval()
    probs, targets = [], []
    try:
        with torch.no_grad():
            for batch in learn.dls.valid:
                x = [b.as_subclass(torch.Tensor) if isinstance(b, torch.Tensor) else b for b in batch[:n_inp]]
                probs.append(torch.softmax(model(*x).float(), dim=1).cpu())
                targets.append(batch[n_inp].flatten().long().cpu())  # a tabular learner's: an (N, 1) column
    finally:
        model.train(was_training)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()
