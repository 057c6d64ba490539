"""One writer per run folder: `hold(root)` is the lock that `run` (each crossval fold too), `recover` and `report`
take on `runs/<run>/`; `holder(root)` is what `status` reads, without taking it.

The lock is a `filelock` on `runs/<run>/.lock`. The kernel drops it when its process dies, so a killed run never
blocks a later one. Beside it, `.lock.json` names the holder (pid, command, since when) for a second writer's
refusal. It is removed on release; one a killed process left is ignored (the lock is free) and overwritten by the
next holder.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import PipelineError
from .workspace import read_json, write_json

LOCK, HOLDER = ".lock", ".lock.json"
_held: dict[Path, int] = {}  # the run folders this process holds, and how deeply (crossval holds its own around a run)


def _command() -> str:
    """This process's command line, as a user would type it."""
    prog = "python -m pipeline" if Path(sys.argv[0]).name == "__main__.py" else Path(sys.argv[0]).name
    return " ".join([prog, *sys.argv[1:]])[:300]


def describe(h: dict) -> str:
    """'pid N, `COMMAND`, since TIME' for holder record `h`."""
    return f"pid {h.get('pid', '?')}, `{h.get('command', '?')}`, since {h.get('since', '?')}"


def holder(root: Path) -> dict | None:
    """Who holds the lock on run folder `root` ({pid, command, since}: {} while it is not yet recorded), or None when
    nobody does. It only reads: an instant's shared flock on the lock file, which fails while a writer holds it."""
    try:
        import fcntl
    except ImportError:  # no flock here: the record, if its process still runs
        fcntl = None
    if fcntl is not None:
        try:
            fd = os.open(Path(root) / LOCK, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        h = read_json(Path(root) / HOLDER)
    except (OSError, ValueError):
        return {} if fcntl is not None else None
    return h if fcntl is not None or _alive(h.get("pid")) else None


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _other(root: Path) -> dict:
    """The holder's record, waiting a moment for it: it is written just after the lock is taken."""
    for _ in range(20):
        if h := holder(root):
            return h
        time.sleep(0.05)
    return {}


@contextlib.contextmanager
def hold(root: Path, wait: bool = False, log=print):
    """Hold the lock on run folder `root` (made if missing) for the block. Another writer holding it is one line
    naming it, or with `wait`, a line saying whom this one waits for. Reentrant within a process."""
    from filelock import FileLock, Timeout

    root = Path(root)
    if root in _held:
        _held[root] += 1
        try:
            yield
        finally:
            _held[root] -= 1
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / LOCK))
        try:
            lock.acquire(timeout=0.5, poll_interval=0.02)  # a moment: `status` looks at the lock for an instant
        except Timeout:
            other = _other(root)
            if not wait:
                raise PipelineError(f"another run is writing {root} ({describe(other)}): wait for it to finish, or "
                                    "pass --wait") from None
            log(f"waiting for the run writing {root} ({describe(other)}) to finish")
            lock.acquire()
    except OSError as e:
        raise PipelineError(f"cannot write {e.filename or root}: {e.strerror or e}") from None
    try:
        # the holder's note for a second writer's message; the lock is the file lock itself, so a full disk (which
        # `recover` may be about to relieve by clearing a killed run's staging folder) does not stop the run here
        with contextlib.suppress(OSError, PipelineError):  # write_json says a failed write in one line
            write_json(root / HOLDER, {"pid": os.getpid(), "command": _command(),
                                       "since": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        _held[root] = 1
        yield
    finally:
        _held.pop(root, None)
        with contextlib.suppress(OSError):
            (root / HOLDER).unlink()
        lock.release()
