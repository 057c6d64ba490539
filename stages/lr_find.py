"""lr_find: fastai's learning-rate finder on the persisted split; every suggestion, the chosen one, a plot."""
from __future__ import annotations

import math

from pipeline.core import artifacts
from pipeline.core.stagespec import StageSpec
from pipeline.core.workspace import pyplot, save_figure, write_json
from pipeline import kinds
from pipeline.config import LR_SUGGESTIONS

STAGE = StageSpec(
    "lr_find",
    summary="fastai lr_find on the persisted split; all suggestions + the chosen one",
    writes=(artifacts.LR_FIND, artifacts.LR_FIND_PNG),
    reads=lambda cfg: ("datablock",),
    # with the train entries that change the pixels, the model it builds, the loss and the batches it sweeps; not the
    # schedule after the sweep nor how fast it runs (the same arithmetic up to float rounding): train takes those
    params=("lr_find", "train:data,model", "run.seed"),
    builds_model=True)

def _plot(lrs, losses, found: dict, chosen: tuple[str, float], fixed: float | None, path):
    """The sweep with every suggestion marked, the chosen one as a line, and a fixed `train.base_lr` (the lr train
    uses instead) as a dashed line."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set(xscale="log", xlabel="learning rate", ylabel="loss (smoothed)", title="lr_find")
    for (name, lr), color in zip(found.items(), ("C1", "C2", "C3", "C4")):
        if lr:
            i = min(range(len(lrs)), key=lambda k: abs(math.log(lrs[k]) - math.log(lr)))
            ax.plot(lrs[i], losses[i], "o", color=color, label=f"{name} {lr:.2e}")
    ax.axvline(chosen[1], color="C1", linewidth=1, label=f"chosen: {chosen[0]} {chosen[1]:.2e}"
               + (" (not used)" if fixed is not None else " (used by train)"))
    if fixed is not None:
        ax.axvline(fixed, color="k", linestyle="--", linewidth=1, label=f"train.base_lr {fixed:.2e} (fixed: used)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def suggest(lrs, losses, num_it: int, funcs: dict) -> dict:
    """fastai's suggestion functions over the sweep, as in `Learner.lr_find`, but one failing (a short sweep
    that diverged early) gives None for that suggestion instead of failing the stage."""
    import torch

    lr_t, loss_t = torch.tensor(lrs[num_it // 10:-5]), torch.tensor(losses[num_it // 10:-5])
    nan = torch.nonzero(torch.isnan(loss_t)).flatten()
    if len(nan):
        lr_t, loss_t = lr_t[:nan.min()], loss_t[:nan.min()]
    found = {}
    for name, func in funcs.items():
        try:
            value = float(func(lr_t, loss_t, num_it)[0])
        except (IndexError, ValueError, RuntimeError):
            value = None
        found[name] = value if value is not None and math.isfinite(value) and value > 0 else None
    return found


def run(cfg, ws, log):
    from fastai.callback.schedule import minimum, slide, steep, valley
    from fastai.torch_core import set_seed

    from pipeline.models import training  # fastai: imported when the stage runs, not when its declaration is read

    set_seed(cfg.run.seed, reproducible=True)
    kind = kinds.of(cfg)
    learn = kind.make_learner(kind.dataloaders(ws, cfg), cfg, ws)
    c = cfg.lr_find
    log(f"lr_find over {c.num_it} batches, {c.start_lr:g} → {c.end_lr:g} ({cfg.train.arch})")
    with training.quiet(learn), kind.training_data(learn, ws, cfg, log), \
            training.progress_lines(learn, log, lambda training: "lr_find sweep", total=c.num_it):
        learn.lr_find(start_lr=c.start_lr, end_lr=c.end_lr, num_it=c.num_it, show_plot=False, suggest_funcs=None)
    rec = learn.recorder
    lrs, losses = [float(x) for x in rec.lrs], [float(x) for x in rec.losses]
    found = suggest(lrs, losses, c.num_it, dict(zip(LR_SUGGESTIONS, (valley, slide, minimum, steep))))
    chosen = found[c.suggestion]
    if chosen is None:
        chosen = next((v for v in found.values() if v), 1e-3)
        log(f"suggestion {c.suggestion} could not be computed from this sweep; using {chosen:.2e}")
    log("suggestions: " + ", ".join(f"{k} {v:.2e}" if v else f"{k} n/a" for k, v in found.items())
        + f"; chosen {c.suggestion} {chosen:.2e}")
    fixed = cfg.train.base_lr if isinstance(cfg.train.base_lr, float) else None
    if fixed is not None:
        log(f"train.base_lr is fixed at {fixed:.2e}: train does not use this sweep's suggestion")
    n = max(1, len(lrs) - 5)  # fastai drops the last few points from its plot: they are the divergence
    return [write_json(ws.artifact("lr_find", artifacts.LR_FIND),
                       {"suggestions": found, "suggestion": c.suggestion, "chosen": chosen,
                        "lrs": lrs, "losses": losses}),
            _plot(lrs[:n], losses[:n], found, (c.suggestion, chosen), fixed, ws.artifact("lr_find", artifacts.LR_FIND_PNG))]
