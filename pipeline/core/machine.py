"""What this machine lets the process use (a floor below `runtime`, `hands` and `cache`, importing nothing of the
project)."""
from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity: `taskset` and container limits count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
