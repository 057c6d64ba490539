"""Calibration: expected calibration error (ECE), reliability diagrams, and temperature scaling folded into the
model's last layer (so the export stays a plain fastai learner whose `predict` gives calibrated probabilities).

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 fitted to minimise the negative
log-likelihood on the validation split; predictions (the argmax) do not change, only the confidences."""
from __future__ import annotations

import math

from ..core.errors import PipelineError

BINS = 15


def reliability(confidence, correct, bins: int = BINS) -> tuple[float, list[dict]]:
    """(ECE, one row per non-empty equal-width confidence bin: lo, hi, count, confidence, accuracy)."""
    import numpy as np

    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    if len(conf) == 0:
        return float("nan"), []
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (lo, hi]; 0 goes to the first
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        c, a = float(conf[mask].mean()), float(ok[mask].mean())
        ece += mask.sum() / len(conf) * abs(a - c)
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": int(mask.sum()), "confidence": c,
                     "accuracy": a})
    return float(ece), rows


def plot_reliability(rows: list[dict], ece: float, title: str, path):
    from ..core.workspace import pyplot, save_figure

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    width = [r["hi"] - r["lo"] for r in rows]
    ax.bar([r["lo"] for r in rows], [r["accuracy"] for r in rows], width=width, align="edge", alpha=0.7,
           edgecolor="black", label="accuracy in bin")
    ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color="C3", label="mean confidence")
    for r in rows:
        ax.text((r["lo"] + r["hi"]) / 2, min(r["accuracy"] + 0.02, 0.97), str(r["count"]), ha="center", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=f"{title}: ECE {ece:.3f}")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def fit_temperature(logits, targets) -> float:
    """The T > 0 minimising the cross-entropy of logits / T (LBFGS on log T, from T = 1)."""
    import torch

    logits, targets = logits.detach().float(), targets.detach().long()
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0:
        raise PipelineError("temperature scaling failed to converge: set train.calibrate = false")
    return t


def last_linear(model):
    """The model's final nn.Linear when it is the last module of a Sequential tree (it then produces the logits);
    fastai's TabularModel (alone or inside kinds.shared.model.LandmarkNet) ends in its `layers` Sequential when it has no
    `y_range`."""
    import torch

    last = model = getattr(model, "tabular", model)  # LandmarkNet: its TabularModel gives the logits
    if type(model).__name__ == "TabularModel" and getattr(model, "y_range", None) is None:
        last = model.layers
    while isinstance(last, torch.nn.Sequential) and len(last):
        last = last[-1]
    return last if isinstance(last, torch.nn.Linear) else None


def fold_temperature(model, t: float, probe=None) -> None:
    """Divide the final Linear's weight and bias by `t`, so the model outputs logits / t. With a `probe` batch
    (the model's input, or a tuple of its inputs), check that the outputs really scaled (i.e. nothing after
    that layer)."""
    import torch

    layer = last_linear(model)
    if layer is None:
        raise PipelineError("train.calibrate: the model does not end in a Linear layer to fold the temperature into")
    before = None
    if probe is not None:
        with torch.no_grad():
            model.eval()
            probe = probe if isinstance(probe, tuple) else (probe,)
            before = model(*probe)
    with torch.no_grad():
        layer.weight.div_(t)
        if layer.bias is not None:
            layer.bias.div_(t)
    if before is not None:
        with torch.no_grad():
            after = model(*probe)
        if not torch.allclose(after, before / t, rtol=1e-4, atol=1e-5):
            raise PipelineError("train.calibrate: the model's output is not its last Linear layer's; cannot fold "
                                "the temperature")
