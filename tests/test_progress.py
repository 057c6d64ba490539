"""pipeline.core.progress: when progress lines come and what they say (a fake clock: no timed test)."""
from pipeline.core import progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_line_every_30_s_or_each_10_percent_after_5_s():
    clock, lines = Clock(), []
    p = progress.Progress(lines.append, "verify", total=1000, clock=clock)
    for _ in range(50):          # 50 images in 1 s: under 10 %, under 30 s: nothing
        clock.t += 0.02
        p.update(1)
    assert lines == []
    clock.t = 4.0
    p.update(60)                 # 11 %, but only 4 s since the start: still quiet
    assert lines == []
    clock.t = 5.0
    p.update(1)                  # 11 % and 5 s: a line, with rate and ETA
    assert lines == ["verify: 111/1,000 images (11 %), 22.2 images/s, ETA 40s"]
    clock.t = 36.0
    p.update(1, extra="loss 0.5000")  # 30 s later: a line whatever the percentage
    assert lines[-1] == "verify: 112/1,000 images (11 %), 3.1 images/s, ETA 4m45s, loss 0.5000"
    for _ in range(3):
        clock.t += 1
        p.update(1)
    assert len(lines) == 2


def test_a_quick_loop_prints_nothing():
    clock, lines = Clock(), []
    p = progress.Progress(lines.append, "x", total=10, clock=clock)
    for _ in range(10):
        clock.t += 0.1
        p.update(1)
    assert lines == []
