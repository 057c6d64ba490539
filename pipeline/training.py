"""Learner construction and the training loop glue shared by lr_find and train."""
from __future__ import annotations

import contextlib
import sys
import time
from functools import partial

from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastcore.basics import noop

from . import backbones, baselines
from .errors import PipelineError


class EpochLog(Callback):
    """Collect one history row per epoch across fits and, without a terminal, print one line per epoch."""

    order = 60  # after Recorder (50), so recorder.values holds this epoch

    def __init__(self, log, echo: bool = True):
        self.log, self.echo, self.rows = log, echo, []

    def before_fit(self):
        frozen = getattr(self.learn.opt, "frozen_idx", 0) if self.learn.opt else 0
        self.phase = "frozen" if frozen else "train"

    def before_epoch(self):
        self._t0 = time.perf_counter()

    def after_epoch(self):
        names = [n for n in self.recorder.metric_names[1:] if n != "time"]
        row = {"epoch": len(self.rows), "phase": self.phase, **dict(zip(names, map(float, self.recorder.values[-1]))),
               "seconds": round(time.perf_counter() - self._t0, 2)}
        self.rows.append(row)
        if self.echo:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "phase", "seconds"))
            self.log(f"epoch {row['epoch'] + 1} ({self.phase}) {shown} ({row['seconds']:.1f}s)")


def interactive() -> bool:
    return sys.stdout.isatty()


@contextlib.contextmanager
def logged(learn, log):
    """Attach an EpochLog; in a non-terminal drop fastprogress' per-batch bars. Detach afterwards."""
    cb = EpochLog(log, echo=not interactive())
    bar = not interactive() and any(isinstance(c, ProgressCallback) for c in learn.cbs)
    if bar:
        learn.remove_cb(ProgressCallback)
    logger, learn.logger = learn.logger, noop if bar else learn.logger  # Recorder prints otherwise
    learn.add_cb(cb)
    try:
        yield cb
    finally:
        learn.remove_cb(cb)
        learn.logger = logger
        if bar:
            learn.add_cb(ProgressCallback())


def quiet(learn):
    """`learn.no_bar()` without a terminal (no per-batch redraws in logs); nothing in one."""
    return contextlib.nullcontext() if interactive() else learn.no_bar()


def opt_func(t):
    from fastai.optimizer import SGD, Adam

    return Adam if t.opt == "adam" else partial(SGD, mom=t.momentum)


def make_learner(dls, cfg, ws):
    """A fastai Learner for `cfg.train.arch`: a from-scratch baseline or a (pretrained) vision backbone."""
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy, error_rate
    from fastai.vision.learner import vision_learner

    t = cfg.train
    common = dict(loss_func=CrossEntropyLossFlat(), opt_func=opt_func(t), metrics=[error_rate, accuracy],
                  path=ws.scratch, model_dir="models", wd=t.wd or None)
    n_in = 1 if t.grayscale else 3
    if baselines.is_baseline(t.arch):
        model = baselines.create_baseline(t.arch, len(dls.vocab), n_in=n_in, size=t.image_size)
        learn = Learner(dls, model, **common)
    else:
        arch, extra = backbones.resolve(t.arch, t.pretrained, ws.data)
        try:
            learn = vision_learner(dls, arch, pretrained=t.pretrained, n_in=n_in, ps=t.head_dropout, **extra, **common)
        except (RuntimeError, OSError) as e:
            if t.pretrained and ("download" in str(e).lower() or "connect" in str(e).lower() or "hub" in str(e).lower()):
                raise PipelineError(f"could not get pretrained weights for {t.arch} ({type(e).__name__}); set "
                                    f"train.pretrained=false or use arch '{backbones.OFFLINE_TIMM}'") from None
            raise
    learn.recorder.train_metrics = True
    return learn


def fit(learn, t, lr: float, log) -> list[dict]:
    """Train with `t.method` (fine_tune / fit_one_cycle / fit) at `lr`; returns the per-epoch history rows."""
    with logged(learn, log) as cb:
        if t.method == "fine_tune":
            learn.fine_tune(t.epochs, lr, freeze_epochs=t.freeze_epochs, lr_mult=t.lr_mult)
        elif t.method == "fit_one_cycle":
            learn.fit_one_cycle(t.epochs, lr)
        else:
            learn.fit(t.epochs, lr)
    return cb.rows


def strip_for_export(learn) -> None:
    """Remove anything that would tie the pickled learner to this project (our callbacks)."""
    for cb in list(learn.cbs):
        if type(cb).__module__.startswith("pipeline"):
            learn.remove_cb(cb)
