"""The one exception type the CLI turns into a single clear line, and `guarded`, which does that for every command.

It sits at the bottom of the house (standard library only), so every entry point (`pipeline.cli`,
`pipeline.compare`) can use it without importing another.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import warnings


class PipelineError(Exception):
    """A user-facing error: the message says what went wrong and what to do next.

    The CLI prints `error: <message>` and exits non-zero; `--debug` shows the traceback.
    """


# Third-party noise that says nothing to a user of this tool (the pickle warning: we verify the sha256 first).
QUIET = (".*torch.jit.script.*", ".*mode.chained_assignment.*", ".*__array__ implementation doesn't accept.*",
         ".*load_learner. uses Python's insecure pickle.*", ".*numpy.core is deprecated.*")


STAGES_KEPT = "interrupted: completed stages keep their outputs; rerun to continue"


def guarded(action, debug: bool = False, stopped: str = STAGES_KEPT) -> int:
    """Run `action()` the way every command runs: third-party noise hidden, SIGTERM unwinding like Ctrl-C (then
    `stopped` is the line said: what a command that runs stages keeps, by default), and a user error or file-system
    failure as one `error:` line with exit 2 (the traceback only with `debug`)."""
    for pattern in QUIET:
        warnings.filterwarnings("ignore", message=pattern)
    debug = debug or os.environ.get("PIPELINE_DEBUG") == "1"
    with contextlib.suppress(ValueError):  # `timeout`/CI cancel: SIGTERM unwinds like Ctrl-C (temp files removed)
        signal.signal(signal.SIGTERM, _terminate)
    try:
        code = action()
        sys.stdout.flush()  # inside the try: a reader that went away is handled below
        return code
    except PipelineError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except BrokenPipeError:  # the reader went away (`… | head`): stop quietly, as other command-line tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        return 141
    except OSError as e:  # a file system failure no stage turned into a PipelineError: still one line, with the path
        if debug:
            raise
        print(f"error: {_os_error(e)} (--debug shows the traceback)", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(stopped, file=sys.stderr)
        return 130


# errnos that mean "this path cannot be created or written here" (a read fails with ENOENT, EIO, ...)
_WRITE_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.EFBIG}


def _os_error(e: OSError) -> str:
    """One line naming the path: `cannot write PATH: reason`, `cannot access …` (permissions), `cannot read …`."""
    if e.filename is None:
        text = f"{type(e).__name__}: {e}"
    else:
        what = ("cannot write" if e.errno in _WRITE_ERRNOS else
                "cannot access" if e.errno in (errno.EACCES, errno.EPERM) else "cannot read")
        text = f"{what} {e.filename}: {e.strerror or e}"
    return text.replace("\r", " ").replace("\n", " ")


def _terminate(signum, frame):
    raise KeyboardInterrupt
