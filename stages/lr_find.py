"""lr_find: fastai's learning-rate finder on the persisted split; every suggestion, the chosen one, a plot."""
from __future__ import annotations

import math

from pipeline import data, training
from pipeline.workspace import save_figure, write_json

SUGGESTIONS = ("valley", "slide", "minimum", "steep")


def _plot(lrs, losses, found: dict, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="lr_find")
    for (name, lr), color in zip(found.items(), ("C1", "C2", "C3", "C4")):
        if lr and math.isfinite(lr):
            i = min(range(len(lrs)), key=lambda k: abs(math.log(lrs[k]) - math.log(lr)))
            ax.plot(lrs[i], losses[i], "o", color=color, label=f"{name} {lr:.2e}")
    ax.legend()
    return save_figure(fig, path)


def run(cfg, ws, log):
    from fastai.callback.schedule import minimum, slide, steep, valley
    from fastai.torch_core import set_seed

    set_seed(cfg.run.seed, reproducible=True)
    learn = training.make_learner(data.dataloaders(ws, cfg), cfg, ws)
    c = cfg.lr_find
    log(f"lr_find over {c.num_it} batches, {c.start_lr:g} → {c.end_lr:g} ({cfg.train.arch})")
    with training.quiet(learn):
        res = learn.lr_find(start_lr=c.start_lr, end_lr=c.end_lr, num_it=c.num_it, show_plot=False,
                            suggest_funcs=(valley, slide, minimum, steep))
    found = {name: float(v) for name, v in zip(SUGGESTIONS, res)}
    chosen = found[c.suggestion]
    if not (math.isfinite(chosen) and chosen > 0):
        chosen = next((v for v in found.values() if math.isfinite(v) and v > 0), 1e-3)
        log(f"suggestion {c.suggestion} unusable; falling back to {chosen:.2e}")
    log("suggestions: " + ", ".join(f"{k} {v:.2e}" for k, v in found.items()) + f"; chosen {c.suggestion} {chosen:.2e}")
    rec = learn.recorder
    lrs, losses = [float(x) for x in rec.lrs], [float(x) for x in rec.losses]
    n = max(1, len(lrs) - 5)  # fastai drops the last few points from its plot: they are the divergence
    return [write_json(ws.artifact("lr_find", "lr_find.json"),
                       {"suggestions": found, "suggestion": c.suggestion, "chosen": chosen,
                        "lrs": lrs, "losses": losses}),
            _plot(lrs[:n], losses[:n], found, ws.artifact("lr_find", "lr_find.png"))]
