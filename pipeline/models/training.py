"""The training loop glue shared by lr_find and train: epoch and batch progress lines, the schedule, the fit with its
checkpoints and resume (`checkpoints.py` holds them), and stripping a learner for export (`models.make_learner`
builds the learner)."""
from __future__ import annotations

import contextlib
import shutil
import sys
import time
from functools import partial

from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastcore.basics import noop

from ..core import runtime
from ..core.errors import PipelineError
from ..core.progress import Progress
from .checkpoints import BestEpoch, Checkpoint, RestoreSmoothLoss
from .checkpoints import apply as apply_checkpoint
from .checkpoints import load as load_checkpoint


class EpochLog(Callback):
    """Collect one history row per epoch across fits and print one line per epoch (numbered across the fits)."""

    order = 60  # after Recorder (50), so recorder.values holds this epoch

    def __init__(self, log, phase: str, offset: int = 0, skip_below: int = 0, echo: bool = True):
        self.log, self.phase, self.offset, self.skip_below, self.echo, self.rows = log, phase, offset, skip_below, echo, []

    def before_epoch(self):
        self._t0 = time.perf_counter()

    def after_epoch(self):
        if self.epoch < self.skip_below:  # an epoch SkipToEpoch passed over on resume
            return
        names = [n for n in self.recorder.metric_names[1:] if n != "time"]
        row = {"epoch": self.offset + len(self.rows), "phase": self.phase, **dict(zip(names, map(float, self.recorder.values[-1]))),
               "seconds": round(time.perf_counter() - self._t0, 2)}
        self.rows.append(row)
        if self.echo:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "phase", "seconds"))
            self.log(f"epoch {row['epoch'] + 1} ({self.phase}) {shown} ({row['seconds']:.1f}s)")


class BatchProgress(Callback):
    """Progress lines (`pipeline.core.progress`) over the batches of each training or validation pass (`label(training)`
    names it: the epoch as EpochLog numbers it, or "predicted" for `get_preds`), or over `total` training batches in
    all (lr_find's sweep); with the running loss while training."""

    order = 65

    def __init__(self, log, label, total: int | None = None):
        self.log, self.label, self.total, self.progress = log, label, total, None

    def before_fit(self):
        if self.total:
            self.progress = Progress(self.log, self.label(True), self.total, unit="batches")

    def before_train(self):
        if not self.total:
            self.progress = None

    before_validate = before_train

    def after_batch(self):
        if self.total and not self.training:
            return
        if self.progress is None:
            self.progress = Progress(self.log, self.label(self.training), len(self.dl), unit="batches")
        loss = getattr(self.learn, "smooth_loss", None) if self.training else None
        self.progress.update(1, f"loss {float(loss):.4f}" if loss is not None else "")


def interactive() -> bool:
    return sys.stdout.isatty()


@contextlib.contextmanager
def progress_lines(learn, log, label, total: int | None = None):
    """Within the block, without a terminal, `learn` prints `BatchProgress` lines (in one, fastai draws its bar)."""
    cb = None if interactive() else BatchProgress(log, label, total)
    if cb:
        learn.add_cb(cb)
    try:
        yield
    finally:
        if cb:
            learn.remove_cb(cb)


@contextlib.contextmanager
def logged(learn, log, phase: str, offset: int = 0, skip_below: int = 0):
    """Attach an EpochLog (one line per epoch, numbered alike in a terminal and in a log); in a non-terminal replace
    fastprogress' per-batch bars by progress lines. Detach afterwards."""
    cb = EpochLog(log, phase, offset, skip_below)
    bar = not interactive() and any(isinstance(c, ProgressCallback) for c in learn.cbs)
    if bar:
        learn.remove_cb(ProgressCallback)
    logger, learn.logger = learn.logger, noop  # fastai's own epoch table would number the epochs of each fit from 0
    learn.add_cb(cb)
    try:
        with progress_lines(learn, log, lambda training: f"epoch {cb.offset + len(cb.rows) + 1} ({phase})"
                                                        + ("" if training else ", validation")):
            yield cb
    finally:
        learn.remove_cb(cb)
        learn.logger = logger
        if bar:
            learn.add_cb(ProgressCallback())


def quiet(learn):
    """`learn.no_bar()` without a terminal (no per-batch redraws in logs); nothing in one."""
    return contextlib.nullcontext() if interactive() else learn.no_bar()


def opt_func(opt: str, momentum: float = 0.9):
    """fastai's optimiser for `opt` ("adam", or "sgd" with `momentum`)."""
    from fastai.optimizer import SGD, Adam

    return Adam if opt == "adam" else partial(SGD, mom=momentum)


def phases(method: str, epochs: int, lr: float, freeze_epochs: int, lr_mult: float) -> list[tuple[str, int, dict]]:
    """The schedule as (name, epochs, fit_one_cycle kwargs); fine_tune = fastai's frozen then unfrozen cycles (the
    body's earliest layers at `lr / 2 / lr_mult`)."""
    if method == "fine_tune":
        half = lr / 2
        plan = [("frozen", freeze_epochs, {"lr_max": slice(lr), "pct_start": 0.99})] if freeze_epochs else []
        return plan + [("unfrozen", epochs, {"lr_max": slice(half / lr_mult, half), "pct_start": 0.3, "div": 5.0})]
    return [(method, epochs, {"lr_max": lr} if method == "fit_one_cycle" else {"lr": lr})]


class FiniteLoss(Callback):
    """Stop training at the first training batch whose loss is NaN or infinite (the weights are ruined from there
    on): `fit` turns it into a one-line error, so nothing is exported."""

    order = 1

    def __init__(self):
        self.bad = None  # (epoch, batch, loss) of the first non-finite loss

    def after_loss(self):
        import torch

        if self.training and not bool(torch.isfinite(self.learn.loss).all()):
            from fastai.callback.core import CancelFitException

            self.bad = (self.epoch, self.iter, float(self.learn.loss))
            raise CancelFitException


class Tracked(Callback):
    """Each epoch's history row to the experiment tracker (`core.tracking`), at step = the epoch counted from 1."""

    order = 61  # after EpochLog (60), before BestEpoch (62), which may stop the fit in the same after_epoch

    def __init__(self, tracker, epoch_log: EpochLog, skip_below: int):
        self.tracker, self.epoch_log, self.skip_below = tracker, epoch_log, skip_below

    def after_epoch(self):
        if self.epoch >= self.skip_below and self.epoch_log.rows:
            row = self.epoch_log.rows[-1]
            self.tracker.scalars(row["epoch"] + 1, history_metrics(row))


def history_metrics(row: dict) -> dict:
    """A history row's metrics (its losses, error rates and accuracies; not its epoch, phase or timings)."""
    return {k: v for k, v in row.items() if k not in ("epoch", "phase") and not k.endswith("seconds")}


def fit(learn, lr: float, log, *, method: str, epochs: int, freeze_epochs: int, lr_mult: float, patience: int = 0,
        monitor: str = "valid_loss", checkpoints=None, key: str = "", tracker=None) -> tuple[list[dict], dict | None]:
    """Train with `method` for `epochs` at `lr` (`phases`), checkpointing each epoch into `checkpoints` (a folder)
    and resuming from a checkpoint there with the same `key`; with `patience`, stop a phase early when `monitor`
    has not improved for that many epochs and end on the best epoch's weights (`BestEpoch`: `checkpoints` holds
    them); each epoch's row to `tracker` (`core.tracking`) when one is given. Returns the per-epoch history rows,
    and with `patience` what `BestEpoch.summary` says (None without)."""
    plan, rows, start_phase, start_epoch = phases(method, epochs, lr, freeze_epochs, lr_mult), [], 0, 0
    blob = checkpoints and load_checkpoint(checkpoints, key, learn.dls.device, log)
    state = blob["state"] if blob else None
    best = BestEpoch(checkpoints, monitor, patience, log, (state or {}).get("best")) if patience else None
    total = sum(n for _, n, _ in plan)
    for i, (name, n, kwargs) in enumerate(plan):
        if state and i < state["phase"]:
            continue
        if name == "frozen":
            learn.freeze()
        elif name == "unfrozen":
            learn.unfreeze()
        resumed, extra = bool(state), []
        if state:
            apply_checkpoint(learn, blob)
            rows, start_phase, start_epoch = state["rows"], state["phase"], state["done"]
            log(f"resuming from the checkpoint after epoch {len(rows)} of {total} ({name} phase, its epoch "
                f"{start_epoch} of {n})")
            if start_epoch < n:  # mid-phase: the running training loss goes on as it was
                extra = [RestoreSmoothLoss(blob["smooth_loss"])]
            if tracker and rows:  # the epochs an earlier process logged after this one are dropped, this one relogged
                tracker.restart(len(rows))
                tracker.scalars(len(rows), history_metrics(rows[-1]))
            state = blob = None
        skip = start_epoch if i == start_phase else 0
        if skip >= n and i < len(plan) - 1:
            continue
        finite = FiniteLoss()
        with logged(learn, log, name, len(rows), skip) as cb:
            if best:
                best.phase(cb, skip, final=i == len(plan) - 1, resumed=resumed)
            ckpt = Checkpoint(checkpoints, key, i, skip, list(rows), cb, best,
                              tracker.folder.name if tracker else None, (n, total)) if checkpoints else None
            cbs = ([finite] + extra + ([Tracked(tracker, cb, skip)] if tracker else []) + ([best] if best else [])
                   + ([ckpt] if ckpt else []))
            if method == "fit":
                learn.fit(n, start_epoch=skip, cbs=cbs, **kwargs)
            else:
                learn.fit_one_cycle(n, start_epoch=skip, cbs=cbs, **kwargs)
        if ckpt and ckpt.error:
            raise ckpt.error
        if finite.bad:
            epoch, batch, loss = finite.bad
            if checkpoints:  # a diverging schedule's epochs: resuming it would diverge again, so nothing to resume
                shutil.rmtree(checkpoints, ignore_errors=True)
            raise PipelineError(f"training diverged: the loss became {loss} in epoch {len(rows) + epoch - skip + 1} "
                                f"({name} phase), batch {batch + 1}, at lr {lr:.2e}; nothing was exported: lower "
                                "train.base_lr (or use base_lr = \"lr_find\")")
        rows += cb.rows
    for i, r in enumerate(rows):
        r["epoch"] = i
    return rows, best.summary(len(rows)) if best else None


def strip_for_export(learn) -> None:
    """Remove anything that would tie the pickled learner to this project (our callbacks) or to this machine
    (mixed precision, channels-last)."""
    runtime.undo(learn)
    for cb in list(learn.cbs):
        if type(cb).__module__.startswith("pipeline"):
            learn.remove_cb(cb)


def normalisation(dl):
    """(mean, std) of the Normalize among `dl`'s batch transforms, as float32 CPU tensors, or (None, None): the
    statistics the learner was built with (a pretrained backbone's own, from its config), read where fastai put
    them, for the model card and the ONNX graph."""
    from fastai.data.transforms import Normalize

    for tfm in dl.after_batch.fs:
        if isinstance(tfm, Normalize):
            return tfm.mean.detach().cpu().float(), tfm.std.detach().cpu().float()
    return None, None
