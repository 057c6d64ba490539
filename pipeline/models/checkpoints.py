"""What train keeps beside a fit in its checkpoint folder (`runs/<run>/_scratch/train/`): the checkpoint after each
epoch (`Checkpoint`, read back by `read_checkpoint` to resume) and, with `train.patience`, the best epoch so far
(`BestEpoch`)."""
from __future__ import annotations

import time

from fastai.callback.core import Callback

from ..core import artifacts, distributed
from ..core.errors import PipelineError


class BestEpoch(Callback):
    """`train.patience`: fastai's SaveModelCallback and EarlyStoppingCallback as one callback over the whole schedule.
    After each epoch it compares `monitor` (a history column) with the best so far; a better epoch's weights are saved
    into `folder`, and `patience` epochs in a row without one stop the phase (fine_tune's frozen phase then goes on to
    the unfrozen one, as fine_tune with fastai's callbacks does). At the end of the last phase the best epoch's
    weights are put back, before any later `after_fit` (hand_model.SettleBatchNorm settles the model exported).
    fastai's own two callbacks reset at every fit and number epochs per fit, and SaveModelCallback loads the best
    model at the end of each fit (the unfrozen phase would start from the best frozen epoch), so they are not used
    as they are."""

    order = 62  # after EpochLog (60), whose last row is this epoch's; before Checkpoint (70), which saves the state

    def __init__(self, folder, monitor: str, patience: int, log, state: dict | None = None):
        self.folder, self.monitor, self.patience, self.log = folder, monitor, patience, log
        state = state or {}
        self.best, self.best_at, self.wait = state.get("best"), state.get("epoch"), state.get("wait", 0)
        self.stopped: list[str] = list(state.get("stopped", []))
        self.epoch_log, self.skip_below, self.final = None, 0, False

    def phase(self, epoch_log, skip_below: int, final: bool, resumed: bool) -> None:
        """Watch the phase `epoch_log` logs; its patience starts afresh unless it resumes mid-phase."""
        self.epoch_log, self.skip_below, self.final = epoch_log, skip_below, final
        if not resumed:
            self.wait = 0

    def state(self) -> dict:
        return {"best": self.best, "epoch": self.best_at, "wait": self.wait, "stopped": self.stopped}

    def summary(self, epochs: int) -> dict:
        """What metrics.json and the model card say: the epoch exported (counted from 1, as the log and curves.png
        count), its `monitor` value, and which phases stopped early."""
        return {"monitor": self.monitor, "patience": self.patience, "best_epoch": self.best_at,
                "best_value": self.best, "epochs_run": epochs, "stopped_early": self.stopped}

    def after_epoch(self):
        if self.epoch < self.skip_below or not self.epoch_log.rows:
            return
        row = self.epoch_log.rows[-1]
        value, number = float(row[self.monitor]), row["epoch"] + 1
        lower = self.monitor.endswith("loss")
        if self.best is None or (value < self.best if lower else value > self.best):
            if distributed.is_main():
                import torch

                from ..core.workspace import save_torch

                save_torch(self.folder / artifacts.BEST_WEIGHTS, lambda tmp: torch.save(self.learn.model.state_dict(), tmp))
            self.best, self.best_at, self.wait = value, number, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            from fastai.callback.core import CancelFitException

            self.stopped.append(self.epoch_log.phase)
            self.log(f"no better {self.monitor} for {self.wait} epoch(s) (best {self.best:.4f}, epoch {self.best_at}):"
                     f" the {self.epoch_log.phase} phase stops early")
            raise CancelFitException

    def after_fit(self):
        if not self.final or self.best_at is None or self.best_at == self.epoch_log.offset + len(self.epoch_log.rows):
            return
        import torch

        if not distributed.is_main():  # only rank 0 saved it, and only rank 0 exports
            return
        state = torch.load(self.folder / artifacts.BEST_WEIGHTS, map_location=self.dls.device, weights_only=True)
        self.learn.model.load_state_dict(state)
        self.log(f"the export is epoch {self.best_at}'s model, the best {self.monitor} ({self.best:.4f})")


class Checkpoint(Callback):
    """After each completed epoch, save model + optimizer, then (atomically, last) where training stands."""

    order = 70

    def __init__(self, folder, key: str, phase: int, skip_below: int, rows_before: list, epoch_log,
                 best: BestEpoch | None = None, tracking: str | None = None):
        self.folder, self.key, self.phase, self.skip_below = folder, key, phase, skip_below
        self.rows_before, self.epoch_log, self.best, self.tracking = rows_before, epoch_log, best, tracking
        self.error = None  # a failed write, raised by `fit` (fastai would wrap it in a multi-line message)

    def after_epoch(self):
        if self.epoch < self.skip_below or not distributed.is_main():
            return
        from fastai.callback.core import CancelFitException
        from fastai.learner import save_model

        from ..core.workspace import save_torch, write_json

        t0 = time.perf_counter()
        try:
            save_torch(self.folder / artifacts.CHECKPOINT_WEIGHTS, lambda tmp: save_model(tmp, self.learn.model, self.learn.opt,
                                                                             with_opt=True))
        except PipelineError as e:
            self.error = e
            raise CancelFitException from None
        if self.epoch_log.rows:  # what the checkpoint costs is part of the epoch: history.csv shows it
            self.epoch_log.rows[-1]["checkpoint_seconds"] = round(time.perf_counter() - t0, 3)
        write_json(self.folder / artifacts.CHECKPOINT, {"key": self.key, "phase": self.phase, "done": self.epoch + 1,
                                                    "rows": self.rows_before + self.epoch_log.rows,
                                                    **({"best": self.best.state()} if self.best else {}),
                                                    **({"tracking": self.tracking} if self.tracking else {})})


def read_checkpoint(folder, key: str) -> dict | None:
    """The checkpoint state in `folder` if it was written by a run with the same fingerprint `key`."""
    from ..core.workspace import read_json

    try:
        state = read_json(folder / artifacts.CHECKPOINT)
    except (OSError, ValueError):
        return None
    return state if state.get("key") == key and (folder / artifacts.CHECKPOINT_WEIGHTS).exists() else None
