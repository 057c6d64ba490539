"""From a stream of per-frame letters to text: the rules the live app (`serve`, pipeline/serve/live.py) and `spell`
(a recorded video) share. Pure Python: no model, no MediaPipe, no torch.

Each frame gives its time (seconds), the model's top-1 label (None when no hand was found) and its probability.

- A label is **written** once it has been the top-1, at or above `threshold`, frame after frame for `hold_s`
  seconds and in at least `min_frames` frames (whichever is longer at the stream's frame rate). `gap_frames`
  frames in a row with another top-1, below the threshold, or with no hand start the count again; fewer are a
  flicker, which the count skips.
- The **same** label is not written twice in a row until there has been a break: `gap_frames` frames in a row
  with no hand, with the model's `nothing`, or with another top-1 (a brief change). So a held L is one L, and
  HELLO's second L needs the hand to drop, show `nothing`, or change briefly.
- `space` and `del` (where the model has them) are written like letters and act as a space and a backspace.
- No hand, or `nothing`, is a pause: never a letter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..core.errors import PipelineError

SPACE, DELETE, NOTHING = "space", "del", "nothing"


@dataclass(frozen=True)
class Rules:
    """When a label is written (see the module docstring); the defaults are measured (docs/live.md)."""

    threshold: float = 0.6  # top-1 probability a frame needs to count for its label
    hold_s: float = 0.5     # how long a label is held (frame after frame) before it is written
    min_frames: int = 3     # and in at least this many frames (a slow stream: a few frames, however far apart)
    gap_frames: int = 2     # frames of something else (no hand, `nothing`, another top-1) before a repeat

    def __post_init__(self):  # named as `spell` and `serve` take them (pipeline/serve/live.py, add_rule_arguments)
        checks = [(0.0 <= self.threshold <= 1.0, f"--threshold must be a probability in [0, 1], got {self.threshold}"),
                  (math.isfinite(self.hold_s) and self.hold_s >= 0,  # nan compares false to everything
                   f"--hold must be a finite number of seconds >= 0, got {self.hold_s}"),
                  (self.min_frames >= 1, f"--min-frames must be >= 1, got {self.min_frames}"),
                  (self.gap_frames >= 1, f"--gap-frames must be >= 1, got {self.gap_frames}")]
        for ok, message in checks:
            if not ok:
                raise PipelineError(message)


@dataclass
class Speller:
    """The text spelled so far from frames given one at a time (`step`); one per stream."""

    rules: Rules = field(default_factory=Rules)
    text: str = ""
    _run: str | None = None     # the label held above the threshold in the latest frames
    _run_start: float = 0.0
    _run_frames: int = 0        # frames that counted for it
    _miss: int = 0              # frames in a row that did not count for it (fewer than gap_frames: a flicker)
    _next: tuple | None = None  # (label, start, frames) of the latest of those frames that share a counting label
    _last: str | None = None    # the label written last, until a break lets it be written again
    _away: int = 0              # frames in a row that were not `_last`

    def clear(self) -> None:
        """Forget the text and everything held."""
        self.text, self._run, self._run_frames, self._miss, self._next = "", None, 0, 0, None
        self._last, self._away = None, 0

    def step(self, t: float, label: str | None, p: float = 1.0) -> str | None:
        """One frame at `t` seconds: top-1 `label` (None: no hand) with probability `p`. The label written on this
        frame (a letter, `space` or `del`), else None."""
        hand = label is not None and label != NOTHING
        if not hand or label != self._last:
            self._away += 1
            if self._away >= self.rules.gap_frames:
                self._last = None  # a break: the last label may be written again
        else:
            self._away = 0
        counts = hand and p >= self.rules.threshold  # this frame counts for its label
        if counts and label == self._run:
            self._run_frames, self._miss, self._next = self._run_frames + 1, 0, None
        else:
            self._miss += 1
            same = counts and self._next is not None and self._next[0] == label
            self._next = (label, self._next[1], self._next[2] + 1) if same else (label, t, 1) if counts else None
            if self._run is None or self._miss >= self.rules.gap_frames:  # not a flicker: the run starts again,
                self._run, self._run_start, self._run_frames = self._next or (None, t, 0)  # from the frames missed
                self._miss, self._next = 0, None
        if self._run is None or self._run == self._last or not self._held(t):
            return None
        label = self._run
        self._last, self._away = label, 0
        self._write(label)
        return label

    def _held(self, t: float) -> bool:
        return self._run_frames >= self.rules.min_frames and t - self._run_start >= self.rules.hold_s - 1e-9

    def _write(self, label: str) -> None:
        if label == DELETE:
            self.text = self.text[:-1]
        else:
            self.text += " " if label == SPACE else label

    def pending(self, t: float) -> tuple[str, float] | None:
        """(the label being held, how far it is from being written: 0..1) at `t`, or None (nothing held, or it is
        the label just written)."""
        if self._run is None or self._run == self._last:
            return None
        r = self.rules
        done = min(1.0, self._run_frames / r.min_frames, (t - self._run_start) / r.hold_s if r.hold_s else 1.0)
        return self._run, max(0.0, done)


def spell(frames, rules: Rules | None = None) -> tuple[str, list]:
    """(text, what was written on each frame: a label or None) for `frames`: (t, label or None, p) triples."""
    speller = Speller(rules or Rules())
    written = [speller.step(t, label, p) for t, label, p in frames]
    return speller.text, written
