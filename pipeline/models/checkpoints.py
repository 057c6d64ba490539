"""What train keeps beside a fit in its checkpoint folder (`runs/<run>/_scratch/train/`): the checkpoint after each
epoch (`Checkpoint`, read back by `read_checkpoint` to resume) and, with `train.patience`, the best epoch so far
(`BestEpoch`)."""
from __future__ import annotations

import re
import time

from fastai.callback.core import Callback

from ..core import artifacts, distributed
from ..core.errors import PipelineError


class BestEpoch(Callback):
    """`train.patience`: fastai's SaveModelCallback and EarlyStoppingCallback as one callback over the whole schedule.
    After each epoch it compares `monitor` (a history column) with the best so far; a better epoch's weights are saved
    into `folder`, and `patience` epochs in a row without one stop the phase (fine_tune's frozen phase then goes on to
    the unfrozen one, as fine_tune with fastai's callbacks does). At the end of the last phase the best epoch's
    weights are put back, before any later `after_fit` (kinds.shared.model.SettleBatchNorm settles the model exported).
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
    """After each completed epoch, one file (atomic) with everything the next epoch starts from: the model, the
    optimizer, every random state (Python's, numpy's, torch's, each DataLoader's own shuffling generator), the
    running training loss and where training stands (`state`); then `checkpoint.json`, the same state for people
    and `status`. A run resumed from it trains the remaining epochs as the uninterrupted run would have."""

    order = 70

    def __init__(self, folder, key: str, phase: int, skip_below: int, rows_before: list, epoch_log,
                 best: BestEpoch | None = None, tracking: str | None = None, epochs: tuple[int, int] = (0, 0)):
        self.folder, self.key, self.phase, self.skip_below = folder, key, phase, skip_below
        self.rows_before, self.epoch_log, self.best, self.tracking = rows_before, epoch_log, best, tracking
        self.phase_epochs, self.total = epochs
        self.error = None  # a failed write, raised by `fit` (fastai would wrap it in a multi-line message)

    def after_epoch(self):
        if self.epoch < self.skip_below or not distributed.is_main():
            return
        import torch
        from fastai.callback.core import CancelFitException

        from ..core.workspace import save_torch, write_json

        rows = self.rows_before + self.epoch_log.rows
        state = {"key": self.key, "phase": self.phase, "phase_name": self.epoch_log.phase, "done": self.epoch + 1,
                 "phase_epochs": self.phase_epochs, "epochs_done": len(rows), "epochs_total": self.total,
                 "rows": rows, **({"best": self.best.state()} if self.best else {}),
                 **({"tracking": self.tracking} if self.tracking else {})}
        smooth = self.learn.recorder.smooth_loss
        blob = {"model": self.learn.model.state_dict(), "opt": self.learn.opt.state_dict(), "rng": rng_state(self.dls),
                "smooth_loss": {"count": smooth.count, "val": torch.as_tensor(smooth.val).as_subclass(torch.Tensor)},
                "state": state}
        t0 = time.perf_counter()
        try:
            save_torch(self.folder / artifacts.CHECKPOINT_WEIGHTS, lambda tmp: torch.save(blob, tmp))
        except PipelineError as e:
            self.error = e
            raise CancelFitException from None
        if self.epoch_log.rows:  # what the checkpoint costs is part of the epoch: history.csv shows it
            self.epoch_log.rows[-1]["checkpoint_seconds"] = round(time.perf_counter() - t0, 3)
        write_json(self.folder / artifacts.CHECKPOINT, state)


def rng_state(dls) -> dict:
    """Every random state a fit draws from, in types `torch.load(weights_only=True)` reads back."""
    import random

    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, keys.tolist(), pos, has_gauss, cached),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "loaders": [dl.rng.getstate() if hasattr(dl, "rng") else None for dl in dls.loaders]}


def _set_rng_state(rng: dict, dls) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(rng["python"])
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    for dl, state in zip(dls.loaders, rng["loaders"]):
        if state is not None and hasattr(dl, "rng"):
            dl.rng.setstate(state)


class RestoreSmoothLoss(Callback):
    """Put back the running training loss (fastai's Recorder starts it afresh at every fit) in a resumed fit, so the
    resumed epochs' train_loss is what the uninterrupted run logged."""

    order = 51  # after Recorder (50), which resets it in before_fit

    def __init__(self, smooth: dict):
        self.smooth = smooth

    def before_fit(self):
        self.learn.recorder.smooth_loss.count = self.smooth["count"]
        self.learn.recorder.smooth_loss.val = self.smooth["val"]


def state_problem(state) -> str | None:
    """What is wrong with a checkpoint's `state` (checkpoint.json, or the state inside the weights file), or None
    when it has the shape `Checkpoint` writes: a run resumes only from a state it can use, whatever the file holds
    (valid JSON such as `[1, 2]`, rows that are not rows, a `tracking` folder that is a path)."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a checkpoint's state"
    if not isinstance(state.get("key"), str):
        return "its key is missing"
    for field in ("phase", "done"):
        if not whole(state.get(field)):
            return f"{field} is not a whole number"
    rows = state.get("rows")
    if not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
        return "rows is not a list of history rows"
    best = state.get("best")
    if best is not None and not (isinstance(best, dict) and isinstance(best.get("stopped", []), list)
                                 and whole(best.get("wait", 0))
                                 and (best.get("epoch") is None or whole(best["epoch"]))
                                 and (best.get("best") is None or isinstance(best["best"], (int, float)))):
        return "best is not the best epoch's record"
    folder = state.get("tracking")  # a TensorBoard run under runs/<run>/tracking/: one plain folder name
    if folder is not None and not (isinstance(folder, str) and re.fullmatch(r"[A-Za-z0-9_.=-]+", folder)
                                   and folder not in (".", "..")):
        return f"tracking {folder!r} is not the name of a folder in the run's tracking folder"
    return None


def read_checkpoint(folder, key: str) -> dict | None:
    """The checkpoint state in `folder` (its checkpoint.json) if it was written by a run with the same fingerprint
    `key` and has the shape `Checkpoint` writes (`state_problem`)."""
    from ..core.workspace import read_json

    try:
        state = read_json(folder / artifacts.CHECKPOINT)
    except (OSError, ValueError):
        return None
    if state_problem(state) is not None:
        return None
    return state if state.get("key") == key and (folder / artifacts.CHECKPOINT_WEIGHTS).exists() else None


def _best_problem(folder, model: dict) -> str | None:
    """What is wrong with the best epoch's weights (`train.patience`) a resumed fit would end on, or None: they
    must load (weights only) and fit the checkpoint's model (`model`, its state dict): the same tensors, shaped
    alike. Checked when resuming, not after the whole training."""
    import torch

    path = folder / artifacts.BEST_WEIGHTS
    try:
        best = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - missing, damaged or foreign: the fit cannot end on it
        return f"{path.name}: {type(e).__name__}: {' '.join(str(e).split())[:120]}"
    if not (isinstance(best, dict) and set(best) == set(model)
            and all(getattr(best[k], "shape", None) == getattr(model[k], "shape", None) for k in model)):
        return f"{path.name} does not hold this model's weights"
    return None


def load(folder, key: str, device, log) -> dict | None:
    """The checkpoint in `folder` (model, optimizer, random states, running loss and `state`) if it was written
    under fingerprint `key`, else None. The weights file is the truth: a checkpoint.json that a killed run left an
    epoch behind it gives way (when the two agree, its rows add the time the last checkpoint took). A damaged one
    (unreadable, a state of the wrong shape, or with `train.patience` best weights that do not load or fit the
    model) is one note, and the fit starts over."""
    import numpy as np
    import torch
    from fastcore.foundation import L

    path = folder / artifacts.CHECKPOINT_WEIGHTS
    if not path.exists():
        return None

    def starting_over(why: str) -> None:
        log(f"note: cannot resume from {path} ({why}): starting over")

    allowed = [L, np.core.multiarray.scalar, np.dtype, *[getattr(np.dtypes, dt) for dt in np.dtypes.__all__]]
    try:
        with torch.serialization.safe_globals(allowed):  # what fastai's optimizer state holds, as load_model allows
            blob = torch.load(path, map_location=device, weights_only=True)
        state = blob["state"]
    except Exception as e:  # noqa: BLE001 - a checkpoint of an older layout, or damaged: start over, as without one
        return starting_over(f"{type(e).__name__}: {' '.join(str(e).split())[:150]}")
    if problem := state_problem(state):
        return starting_over(problem)
    if state.get("key") != key:
        return None
    if not isinstance(blob.get("model"), dict):
        return starting_over("it holds no model weights")
    if (state.get("best") or {}).get("epoch") is not None and (problem := _best_problem(folder, blob["model"])):
        return starting_over(problem)
    mirror = read_checkpoint(folder, key) or {}
    if all(mirror.get(k) == state[k] for k in ("phase", "done")) and len(mirror.get("rows", [])) == len(state["rows"]):
        # its rows in the weights file's column order (JSON sorts them), with the checkpoint time the mirror adds
        blob["state"]["rows"] = [{**r, **{k: v for k, v in m.items() if k not in r}}
                                 for r, m in zip(state["rows"], mirror["rows"])]
    return blob


def apply(learn, blob: dict) -> None:
    """Put a loaded checkpoint's model, optimizer and random states into `learn` (already frozen or unfrozen as
    the checkpoint's phase was)."""
    learn.model.load_state_dict(blob["model"])
    if learn.opt is None:
        learn.create_opt()
    learn.opt.load_state_dict(blob["opt"])
    _set_rng_state(blob["rng"], learn.dls)
