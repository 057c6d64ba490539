"""`python -m pipeline run | status | stages | predict | serve | spell | report | crossval | compare | recover`."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import compare, config, kinds, runner
from .core import errors, runlock
from .core.errors import PipelineError, guarded
from .models import card, exported
from .serve import live


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="fastai transfer-learning pipeline: "
                                "download → datablock → lr_find → train → evaluate")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True)

    def with_wait(sp):
        sp.add_argument("--wait", action="store_true",
                        help="if another run is writing this run folder, wait for it instead of stopping")

    def with_config(sp):
        sp.add_argument("--config", help="TOML config (default: ./pipeline.toml, else the offline demo)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable)")
        sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)

    def engine(sp):  # one spelling for every command that loads an export (evaluate: evaluate.engine)
        sp.add_argument("--engine", choices=exported.ENGINES, default="fastai",
                        help="fastai: the .pkl; onnx: the .onnx beside it with onnxruntime (no fastai, nothing unpickled)")

    r = sub.add_parser("run", help="run stages in order, skipping up-to-date ones")
    with_config(r)
    r.add_argument("--stages", default="all", help=f"all or a comma list of: {', '.join(runner.STAGE_NAMES)}")
    r.add_argument("--force", action="store_true", help="rerun the selected stages even if up to date")
    with_wait(r)
    with_config(sub.add_parser("status", help="one line per stage: up to date, stale (and why), never run"))
    sub.add_parser("stages", help="the ordered stages with what each reads and writes")
    rp = sub.add_parser("report", help="write runs/<run>/report.html: one self-contained page with every result")
    with_config(rp)
    rp.add_argument("--worst", type=int, default=24, help="how many of the most confident mistakes to show per test set")
    with_wait(rp)
    pr = sub.add_parser("predict", help="label images with an exported learner")
    pr.add_argument("--learner", required=True, help="exports/RUN.pkl (--engine onnx: the .onnx beside it is run)")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument("--csv", action="store_true", help="machine-readable output: file,label,confidence")
    pr.add_argument("--topk", type=int, default=0, metavar="K",
                    help="also the K most probable classes with their probabilities (CSV: top1,top1_p,…,topK,topK_p)")
    pr.add_argument("--probs", action="store_true",
                    help="also every class's probability (CSV: one p_<class> column per class of the model's vocab)")
    pr.add_argument("--batch-size", type=int, default=card.BATCH, help="images a model reads at once")
    engine(pr)
    pr.add_argument("--sha256", metavar="HEX",
                    help="the learner's expected sha256, from a source you trust (instead of the model card beside it)")
    pr.add_argument("--trust-learner", action="store_true",
                    help="skip the sha256 check against the model card (unpickling runs code: only for files you trust)")
    pr.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    cv = sub.add_parser("crossval", help="leave one group (signer) out at a time: train on the rest, score it; "
                                         "writes runs/<run>/crossval/crossval.md")
    with_config(cv)
    cv.add_argument("--by", choices=("group", "source"), default="group",
                    help="hold out one group (signer) at a time, or one whole source")
    with_wait(cv)
    rc = sub.add_parser("recover", help="finish the commit a stopped run left waiting, and remove what stopped runs "
                                        "left in the run folder")
    with_config(rc)
    with_wait(rc)
    sv = sub.add_parser("serve", help="a web app (Gradio) that reads a letter from a photo or a webcam frame")
    sv.add_argument("--learner", required=True, help="exports/RUN.pkl")
    engine(sv)
    sv.add_argument("--onnx", dest="engine", action="store_const", const="onnx", help=argparse.SUPPRESS)  # = --engine onnx
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=7860, help="port to listen on")
    sv.add_argument("--collect", metavar="DIR", help="collect mode: save photos under DIR/<LETTER>/<timestamp>.jpg")
    sv.add_argument("--parallel", type=int, default=0, metavar="N",
                    help="hand models: photos read at once, one MediaPipe detector each (default: one per core, at most 4)")
    sv.add_argument("--trust-learner", action="store_true", help="skip the sha256 check against the model card")
    sv.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    live.add_rule_arguments(sv)  # hand models: the live fingerspelling section's rules
    live.add_stream_arguments(sv)  # and its limits
    sp = sub.add_parser("spell", help="spell a recorded video of fingerspelling with a hand-landmark model: the text, "
                                      "or one CSV row per frame")
    live.add_arguments(sp)
    engine(sp)
    compare.add_arguments(sub.add_parser("compare", help="run several configs (e.g. research/seeds/*.toml) and write a "
                                                      "Markdown table of the published figures beside ours"))
    return p


def _cmd_run(args) -> int:
    cfg = config.load(args.config, args.overrides)
    stages = runner.resolve_stages(args.stages)
    t0 = time.perf_counter()
    result = runner.run(cfg, stages, force=args.force, wait=args.wait)
    ran = [s for s, v in result.items() if v == "ran"]
    from .core import distributed

    distributed.finish()
    if not distributed.is_main():
        return 0
    print(f"run {cfg.run.name}: ran {', '.join(ran) or 'nothing'}; skipped "
          f"{', '.join(s for s, v in result.items() if v == 'skipped') or 'nothing'} ({time.perf_counter() - t0:.1f}s)",
          flush=True)
    return 0


def _cmd_status(args) -> int:
    from .core.workspace import Workspace

    from .core.commit import describe_export

    cfg = config.load(args.config, args.overrides)
    print(f"config {cfg.source_file}\nrun    {cfg.run.name} ({Workspace.from_config(cfg).root})")
    if export := describe_export(Workspace.from_config(cfg)):
        print(f"export {export}")
    if (busy := runlock.holder(Workspace.from_config(cfg).root)) is not None:
        print(f"lock   a run is in progress: {runlock.describe(busy)}")
    for name, state in runner.status(cfg):
        print(f"{name:<10} {state}")
    return 0


def _cmd_report(args) -> int:
    from . import report
    from .core.workspace import Workspace

    cfg = config.load(args.config, args.overrides)
    ws = Workspace.from_config(cfg)
    if not any(runner.read_manifest(ws, s) for s in runner.STAGE_NAMES):
        raise PipelineError(f"run {cfg.run.name} has no completed stage in {ws.root}: "
                            "`python -m pipeline run --stages all` first")
    with runlock.hold(ws.root, wait=args.wait):
        print(report.build(cfg, runner.status(cfg), worst=args.worst))
    return 0


def _cmd_recover(args) -> int:
    from .core.commit import recover
    from .core.workspace import Workspace

    cfg = config.load(args.config, args.overrides)
    ws = Workspace.from_config(cfg)
    if not ws.root.is_dir():
        print(f"run {cfg.run.name}: nothing to recover ({ws.root} does not exist)")
        return 0
    with runlock.hold(ws.root, wait=args.wait):
        done = recover(ws, runner.STAGE_NAMES)
    for stage, what in done:
        print(f"[{stage}] {what}")
    print(f"run {cfg.run.name}: " + (f"recovered ({len(done)} thing(s) done)" if done else "nothing to recover"))
    return 0


def _cmd_crossval(args) -> int:
    from . import crossval

    crossval.run(args.config, args.overrides, by=args.by, wait=args.wait)
    return 0


def _cmd_stages(args) -> int:
    for s in runner.STAGES:
        reads = ", ".join(f"{r}" for r in s.reads(config.Config())) or "config"
        writes = ", ".join(n.replace("{set}", "<set>") for n in s.writes) + ("; exports/<run>.pkl, .onnx, .json"
                                                                             if s.exports else "")
        print(f"{s.name:<10} {s.summary}\n{'':<10} reads: {reads}\n{'':<10} writes: {writes}")
    return 0


def _cmd_predict(args) -> int:
    from .data import loaders, sources

    if args.batch_size < 1:
        raise PipelineError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.topk < 0:
        raise PipelineError(f"--topk must be >= 1 (the number of classes to list), got {args.topk}")
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
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731  (stdout is the predictions)
    # as evaluate does: unusable images are left out and listed
    files, skipped = loaders.verify_images(files, log=log)
    for path, reason in skipped:
        print(f"skipped {loaders.shown_name(path)}: {reason}", file=sys.stderr)
    if not files:
        raise PipelineError(f"none of the {len(skipped)} image(s) could be read (listed above)")
    model = kinds.load(Path(args.learner), args.engine, trust=args.trust_learner, sha256=args.sha256)
    labels, conf, probs, found = model.predict(files, args.batch_size, log=log)
    hand = found if found is not None else [None] * len(files)  # a hand-keypoint model says where it found none
    if found is not None and not all(found):
        log(f"no hand found in {found.count(False)} of {len(found)} image(s): hand_found is false there")
    k = min(args.topk, len(model.vocab))
    ranked = [[(model.vocab[i], float(row[i])) for i in row.argsort(kind="stable")[::-1][:k]] for row in probs]
    if args.csv:
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(["file", "label", "confidence"] + (["hand_found"] if found is not None else [])
                   + [c for j in range(1, k + 1) for c in (f"top{j}", f"top{j}_p")]
                   + ([f"p_{v}" for v in model.vocab] if args.probs else []))
        w.writerows([loaders.shown_name(f), y, f"{c:.6f}"] + ([str(h).lower()] if h is not None else [])
                    + [x for v, p in top for x in (v, f"{p:.6f}")] + ([f"{p:.6f}" for p in row] if args.probs else [])
                    for f, y, c, h, top, row in zip(files, labels, conf, hand, ranked, probs))
    else:
        for f, y, c, h, top, row in zip(files, labels, conf, hand, ranked, probs):
            print(f"{loaders.shown_name(f)}\t{y}\t{c:.3f}" + ("\tno hand found" if h is False else "")
                  + ("\t" + " ".join(f"{v}:{p:.3f}" for v, p in top) if top else "")
                  + ("\t" + " ".join(f"{v}:{p:.3f}" for v, p in zip(model.vocab, row)) if args.probs else ""))
    return 0


def _cmd_serve(args) -> int:
    from .serve import app

    app.serve(Path(args.learner), engine=args.engine, host=args.host, port=args.port,
                collect=Path(args.collect) if args.collect else None, trust=args.trust_learner, parallel=args.parallel,
                rules=live.rules_of(args), max_streams=args.max_streams, stream_idle=args.stream_idle)
    return 0


def _cmd_spell(args) -> int:
    from .serve import app

    rules = live.rules_of(args)
    reader = app.Reader(Path(args.learner), engine=args.engine, trust=args.trust_learner, parallel=1)
    live.spell_video(reader, Path(args.video), rules, csv_out=args.csv)
    return 0


def main(argv: list[str] | None = None, prog: str = "signpipe") -> int:
    """CLI entry: `signpipe` (the installed script) or `python -m pipeline` (which passes that as `prog`)."""
    args = _parser(prog).parse_args(argv)
    commands = {"run": _cmd_run, "status": _cmd_status, "stages": _cmd_stages, "predict": _cmd_predict,
                "report": _cmd_report, "crossval": _cmd_crossval, "serve": _cmd_serve, "spell": _cmd_spell,
                "compare": compare.command, "recover": _cmd_recover}
    stopped = {"serve": "serve: stopped", "predict": "interrupted", "spell": "interrupted", "status": "interrupted",
               "stages": "interrupted"}.get(args.command, errors.STAGES_KEPT)  # the others run stages
    return guarded(lambda: commands[args.command](args), args.debug, stopped)
