"""Progress lines for long loops, readable in a log file: done/total, items/s, ETA, and e.g. the running loss.

A line comes about every `EVERY_S` seconds, or at each further 10 % of the total once `MIN_GAP_S` seconds have
passed since the last line (so a quick loop stays quiet). Used by image verification, the preprocessing cache,
lr_find, training (without a terminal: in one, fastai draws its bar) and evaluation."""
from __future__ import annotations

import time

EVERY_S = 30.0
MIN_GAP_S = 5.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Call `update(n, extra)` after each `n` items of `total`; `log` gets the lines (`clock` is for tests)."""

    def __init__(self, log, what: str, total: int, unit: str = "images", clock=time.monotonic):
        self.log, self.what, self.total, self.unit, self.clock = log, what, max(int(total), 0), unit, clock
        self.t0 = self.last = clock()
        self.done, self.tenth = 0, 0

    def update(self, n: int = 1, extra: str = "") -> None:
        self.done += n
        now = self.clock()
        tenth = self.done * 10 // self.total if self.total else 0
        gap = now - self.last
        if not (gap >= EVERY_S or (tenth > self.tenth and gap >= MIN_GAP_S)):
            return
        self.tenth, self.last = tenth, now
        rate = self.done / max(now - self.t0, 1e-9)
        left = f", ETA {_duration((self.total - self.done) / rate)}" if self.total and rate > 0 else ""
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        self.log(f"{self.what}: {self.done:,}/{self.total:,} {self.unit}{pct}, {rate:,.1f} {self.unit}/s{left}"
                 + (f", {extra}" if extra else ""))
