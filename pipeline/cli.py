"""`python -m pipeline run | status | stages | predict | report | compare`."""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from . import config, runner
from .errors import PipelineError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description="fastai transfer-learning pipeline: "
                                "download → datablock → lr_find → train → evaluate")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("--config", help="TOML config (default: ./pipeline.toml, else the offline demo)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable)")
        sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    r = sub.add_parser("run", help="run stages in order, skipping up-to-date ones")
    with_config(r)
    r.add_argument("--stages", default="all", help=f"all or a comma list of: {', '.join(runner.STAGE_NAMES)}")
    r.add_argument("--force", action="store_true", help="rerun the selected stages even if up to date")
    with_config(sub.add_parser("status", help="one line per stage: up to date, stale (and why), never run"))
    sub.add_parser("stages", help="the ordered stages with what each reads and writes")
    rp = sub.add_parser("report", help="write runs/<run>/report.html: one self-contained page with every result")
    with_config(rp)
    rp.add_argument("--worst", type=int, default=24, help="how many of the most confident mistakes to show per test set")
    pr = sub.add_parser("predict", help="label images with an exported learner")
    pr.add_argument("--learner", required=True, help="exports/RUN.pkl")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument("--csv", action="store_true", help="machine-readable output: file,label,confidence")
    pr.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--sha256", metavar="HEX",
                    help="the learner's expected sha256, from a source you trust (instead of the model card beside it)")
    pr.add_argument("--trust-learner", action="store_true",
                    help="skip the sha256 check against the model card (unpickling runs code: only for files you trust)")
    pr.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    sub.add_parser("compare", add_help=False,
                   help="run several configs (e.g. configs/seeds/*.toml) and write a Markdown comparison table; "
                        "`compare --help` for options")
    return p


def _cmd_run(args) -> int:
    cfg = config.load(args.config, args.overrides)
    stages = runner.resolve_stages(args.stages)
    t0 = time.perf_counter()
    result = runner.run(cfg, stages, force=args.force)
    ran = [s for s, v in result.items() if v == "ran"]
    from . import distributed

    if not distributed.is_main():
        return 0
    print(f"run {cfg.run.name}: ran {', '.join(ran) or 'nothing'}; skipped "
          f"{', '.join(s for s, v in result.items() if v == 'skipped') or 'nothing'} ({time.perf_counter() - t0:.1f}s)",
          flush=True)
    return 0


def _cmd_status(args) -> int:
    from .workspace import Workspace

    cfg = config.load(args.config, args.overrides)
    print(f"config {cfg.source_file}\nrun    {cfg.run.name} ({Workspace.from_config(cfg).root})")
    for name, state in runner.status(cfg):
        print(f"{name:<10} {state}")
    return 0


def _cmd_report(args) -> int:
    from . import report
    from .workspace import Workspace

    cfg = config.load(args.config, args.overrides)
    ws = Workspace.from_config(cfg)
    if not any(runner.read_manifest(ws, s) for s in runner.STAGE_NAMES):
        raise PipelineError(f"run {cfg.run.name} has no completed stage in {ws.root}: "
                            "`python -m pipeline run --stages all` first")
    print(report.build(cfg, worst=args.worst))
    return 0


def _cmd_stages(args) -> int:
    for s in runner.STAGES:
        reads = ", ".join(f"{r}" for r in s.reads(config.Config())) or "config"
        print(f"{s.name:<10} {s.summary}\n{'':<10} reads: {reads}\n{'':<10} writes: {s.writes}")
    return 0


def _cmd_predict(args) -> int:
    from . import data, inference, sources

    if args.batch_size < 1:
        raise PipelineError(f"--batch-size must be >= 1, got {args.batch_size}")
    files = []
    for item in args.images:
        p = Path(item)
        if p.is_dir():
            files += sources.list_images(p)
        elif p.is_file():
            files.append(p)
        else:
            raise PipelineError(f"{item} is neither an image file nor a folder")
    if not files:
        raise PipelineError("no images found in " + ", ".join(args.images))
    learn = inference.load_verified(Path(args.learner), trust=args.trust_learner, sha256=args.sha256)
    # as evaluate does: unusable images are left out and listed (stdout is the predictions)
    files, skipped = data.verify_images(files, log=lambda m: print(m, file=sys.stderr))
    for path, reason in skipped:
        print(f"skipped {data.shown_name(path)}: {reason}", file=sys.stderr)
    if not files:
        raise PipelineError(f"none of the {len(skipped)} image(s) could be read (listed above)")
    labels, conf, _ = inference.predict(learn, files, args.batch_size,
                                        log=lambda m: print(m, file=sys.stderr))  # stdout is the predictions
    if args.csv:
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(["file", "label", "confidence"])
        w.writerows((data.shown_name(f), y, f"{c:.6f}") for f, y, c in zip(files, labels, conf))
    else:
        for f, y, c in zip(files, labels, conf):
            print(f"{data.shown_name(f)}\t{y}\t{c:.3f}")
    return 0


# Third-party noise that says nothing to a user of this tool (the pickle warning: we verify the sha256 first).
QUIET = (".*torch.jit.script.*", ".*mode.chained_assignment.*", ".*__array__ implementation doesn't accept.*",
         ".*load_learner. uses Python's insecure pickle.*", ".*numpy.core is deprecated.*")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["compare"]:
        from .compare import main as compare_main

        return compare_main(argv[1:])
    args = _parser().parse_args(argv)
    commands = {"run": _cmd_run, "status": _cmd_status, "stages": _cmd_stages, "predict": _cmd_predict,
                "report": _cmd_report}
    return guarded(lambda: commands[args.command](args), args.debug)


def guarded(action, debug: bool = False) -> int:
    """Run `action()` the way every command runs: third-party noise hidden, SIGTERM unwinding like Ctrl-C, and a
    user error or file-system failure as one `error:` line with exit 2 (the traceback only with `debug`)."""
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
        print("interrupted: completed stages keep their outputs; rerun to continue", file=sys.stderr)
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
