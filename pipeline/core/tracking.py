"""Experiment tracking: with `run.track = "tensorboard"` each run's metrics and params go to TensorBoard event files
(torch's `SummaryWriter`; the `tensorboard` package, `pip install -e '.[track]'`), files only, no server.

One TensorBoard run (a folder) per thing tracked, under `runs/<run>/tracking/`: `train-<UTC time>` (each epoch's
history.csv row at step = the epoch counted from 1, then the config and the exported model's metrics in the HPARAMS
tab; a resumed train goes on in the folder it began), `evaluate-<UTC time>` (each test set's metrics), and one per
row of `compare` (`compare-<UTC time>`) and of `crossval` (`crossval-<UTC time>/<fold>`), so `tensorboard --logdir
runs` shows every run, and its HPARAMS tab the tables.
"""
from __future__ import annotations

import importlib.util
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from .errors import PipelineError

TRACKERS = ("none", "tensorboard")
FOLDER = "tracking"  # under runs/<run>/


def check(track: str) -> None:
    """The one-line error for a tracker that cannot run here (before any stage starts)."""
    if track not in TRACKERS:
        raise PipelineError(f"run.track must be {' or '.join(TRACKERS)}")
    if track == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise PipelineError("run.track = \"tensorboard\" needs the tensorboard package: pip install -e '.[track]' "
                            "(or set run.track = \"none\")")


def stamped(what: str) -> str:
    """`what-<UTC time>`: the name of a fresh TensorBoard run."""
    return f"{what}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S-%f')}"


def new_folder(root: Path, what: str) -> Path:
    """A fresh TensorBoard run folder for `what` in the run folder `root`."""
    return Path(root) / FOLDER / stamped(what)


def safe_name(name: str) -> str:
    """`name` as one folder name (a crossval group such as massey/hand1)."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("._") or "_"


def numbers(values: dict) -> dict[str, float]:
    """The finite numbers among `values` (a history row, a metrics.json), as floats."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def params(sections: dict) -> dict:
    """A config (`Config.to_saved_dict()`) as flat hparams, `section.key` → a number, string or bool (lists and
    tables as JSON text)."""
    out = {}
    for section, table in sections.items():
        for key, value in (table.items() if isinstance(table, dict) else [("", table)]):
            name = f"{section}.{key}" if key else section
            out[name] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value, sort_keys=True)
    return out


class Tracker:
    """One TensorBoard run folder, written through torch's SummaryWriter (every call flushes: a killed run keeps
    what it logged)."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(folder)
        try:
            self.writer = SummaryWriter(log_dir=str(self.folder))
        except OSError as e:
            raise PipelineError(f"cannot write {self.folder}: {e.strerror or e}") from None

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        for key, value in numbers(values).items():
            self.writer.add_scalar(prefix + key, value, step)
        self.writer.flush()

    def restart(self, step: int) -> None:
        """Mark a resumed run: TensorBoard drops what an earlier process logged at `step` and after (its readers
        purge on a SessionLog START), so the epochs logged again from the checkpoint are each there once."""
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        self.writer._get_file_writer().add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
        self.writer.flush()

    def hparams(self, hparams: dict, metrics: dict) -> None:
        """`hparams` and the final `metrics` for TensorBoard's HPARAMS tab (the metrics also as scalars at step 0)."""
        from torch.utils.tensorboard.summary import hparams as summaries

        metrics = numbers(metrics)
        for summary in summaries(hparams, metrics):
            self.writer._get_file_writer().add_summary(summary)
        self.scalars(0, metrics)

    def close(self) -> None:
        self.writer.close()


def open_tracker(track: str, root: Path, what: str, folder: str | None = None) -> Tracker | None:
    """A Tracker for `what` in run folder `root` when `track` (run.track) asks for one (in the existing `folder`, a
    name under tracking/, when one is given: a resumed train), else None."""
    if track == "none":
        return None
    return Tracker(Path(root) / FOLDER / folder if folder else new_folder(root, what))


def log_row(track: str, root: Path, what: str, hparams: dict, metrics: dict) -> Path | None:
    """One table row (a compare experiment, a crossval fold) as its own TensorBoard run in `root`/tracking/`what`:
    the row's columns as hparams, its figures as metrics, when `track` (run.track) asks for it. Returns the folder
    (None when tracking is off)."""
    tracker = open_tracker(track, root, what, folder=what)
    if tracker is None:
        return None
    try:
        tracker.hparams(hparams, metrics)
    finally:
        tracker.close()
    return tracker.folder
