"""The order of the stages (each declares what it reads, uses and writes in its own `stages/<name>.py`), `--stages`
resolution, running a stage (staged, then committed), skip-if-unchanged, the distributed launch, and `status`.

Fingerprints and staleness live in `fingerprints.py`, the staged commit and manifests in `commit.py`.
"""
from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import shutil
import time
from datetime import datetime, timezone

from .config import Config, dumps
from .core import artifacts, distributed, runlock
from .core.commit import cannot_write, claim_exports, commit, recover, waiting, write_manifest
from .core.errors import PipelineError
from .core.fingerprints import Fingerprint, fingerprint, read_manifest, staleness
from .core.stagespec import StageSpec
from .core.workspace import Workspace, write_text
from .data import loaders
from . import kinds


STAGE_NAMES = ("download", "datablock", "lr_find", "train", "evaluate")  # the order they run in
# what each stage reads, which config entries it uses and what it writes: `STAGE` in stages/<name>.py
STAGES: tuple[StageSpec, ...] = tuple(importlib.import_module(f"stages.{name}").STAGE for name in STAGE_NAMES)
BY_NAME = {s.name: s for s in STAGES}


def resolve_stages(spec: str) -> list[str]:
    """`all` or a comma list of stage names → the stages in pipeline order."""
    if spec.strip() == "all":
        return list(STAGE_NAMES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise PipelineError(f"unknown stage {unknown[0] if unknown else spec!r}; stages are: all, {', '.join(STAGE_NAMES)}")
    return [n for n in STAGE_NAMES if n in names]


class StageLog:
    """One prefixed, flushed line per message: readable in a terminal and in a CI log."""

    def __init__(self, stage: str):
        self.stage = stage

    def __call__(self, msg: str) -> None:
        if distributed.is_main():  # in a distributed launch the other ranks stay quiet (errors still show)
            print(f"[{self.stage}] {msg}", flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_stage(cfg: Config, ws: Workspace, stage: StageSpec, fp: Fingerprint, force: bool = False) -> None:
    """Run `stage` into its staging folder, write its manifest there last (a manifest means the outputs are
    complete), then swap the folder in as a whole (`commit`). Until then the stage's previous outputs and
    manifest stay as they were: a failed or interrupted run costs only itself. In a distributed launch only
    rank 0 touches the folders."""
    log = StageLog(stage.name)
    main = distributed.is_main()
    staged = ws.staging(stage.name, exports=stage.exports, fingerprint=fp.digest)
    staging, final = ws.staging_dir(stage.name), ws.root / stage.name
    if main and stage.exports:  # another run folder's export is not replaced unasked (`force`: said, and replaced)
        claim_exports(ws, force, log)
    if main:
        if final.exists() and not final.is_dir():
            raise PipelineError(f"cannot write {final}: {os.strerror(errno.ENOTDIR)}")
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run of this stage left
        try:
            staging.mkdir(parents=True)
        except OSError as e:
            raise cannot_write(e, staging) from None
    started, t0 = _now(), time.perf_counter()
    try:
        with loaders.unverified_images(cfg.datablock.verify):
            outputs = stage.load().run(cfg, staged, log)
        duration = time.perf_counter() - t0
        if not main:
            return
        missing = [n for n in stage.outputs(cfg) if not staged.artifact(stage.name, n).is_file()]
        if missing:
            raise PipelineError(f"{stage.name} finished without writing {missing[0]}, which stages/{stage.name}.py "
                                "declares: nothing was recorded (a bug: please report it)")
        write_manifest(ws, staged, stage.name, fp, outputs, started, _now(), duration)
        if stage.exports:  # again: another run folder's train may have committed meanwhile (no lock covers exports/)
            claim_exports(ws, force, lambda message: None)
    except BaseException:
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    commit(ws, stage.name)
    if stage.checkpoints:  # committed: nothing to resume any more
        shutil.rmtree(ws.checkpoints(stage.name), ignore_errors=True)
    log(f"done in {duration:.1f}s")


def _run_distributed(cfg: Config, ws: Workspace, stage: StageSpec, fp: Fingerprint, force: bool = False) -> None:
    """`run_stage` in a distributed launch: a stage declared `every_rank` (train) on every rank, any other stage on
    rank 0 while the rest wait. A failure on any rank stops them all (a rank that died makes the others' next
    collective call fail)."""
    if stage.every_rank:
        try:
            run_stage(cfg, ws, stage, fp, force)
        except RuntimeError as e:  # torch.distributed's error when a peer process is gone
            raise PipelineError(f"{stage.name} failed on rank {distributed.rank()} of {distributed.world_size()}: "
                                f"{' '.join(str(e).split())[:300]} (did another process die? nothing was recorded "
                                "as complete: rerun the launch)") from None
        distributed.barrier()
        return
    if stage.shared_work:
        _share_work(cfg, ws, stage)
    failed = False
    try:
        if distributed.is_main():
            run_stage(cfg, ws, stage, fp, force)
    except BaseException:
        failed = True
        distributed.broadcast_failure(True)
        raise
    if distributed.broadcast_failure(failed):
        raise PipelineError(f"{stage.name} failed on rank 0 (see its error); this rank stops too")


def _share_work(cfg: Config, ws: Workspace, stage: StageSpec) -> None:
    """Every rank runs the stage's `warm` on its 1/N of the images (into the content stores), then waits for the
    others; rank 0 logs how many images each looked at. A failure on any rank stops them all."""
    log = StageLog(stage.name)
    try:
        done = stage.load().warm(cfg, ws, log)
    except BaseException:
        distributed.broadcast_failure(True)
        raise
    if distributed.broadcast_failure(False):
        raise PipelineError(f"{stage.name} failed on another rank while sharing its per-image work (see its error)")
    counts = distributed.gather(done)
    log(f"per-image work shared over {len(counts)} processes: " + ", ".join(
        f"rank {r} looked at {n} image(s)" for r, n in enumerate(counts)))


def preflight(cfg: Config, stages: list[str]) -> None:
    """What can be checked before any stage starts and the config alone does not show (`config.validate` did the
    rest): that the model kinds know `datablock.input` with `train.arch` and find nothing in the config that does not
    fit the kind (`kinds.check`: the kind's `problems`), and that `train.arch` names a model, when a selected stage
    builds one."""
    kinds.check(cfg)
    if any(BY_NAME[name].builds_model for name in stages):
        kinds.check_arch(cfg)


def run(cfg: Config, stages: list[str], force: bool = False, wait: bool = False) -> dict[str, str]:
    """Run `stages` in order, skipping the up-to-date ones unless `force`; returns stage → ran/skipped. The run
    folder is locked for the whole run (`runlock`): another writer holding it is an error, or with `wait`, waited
    for. Under a distributed launcher (torchrun, accelerate launch) see `pipeline.core.distributed`: rank 0 holds it."""
    preflight(cfg, stages)
    distributed.init()
    ws = Workspace.from_config(cfg)
    with runlock.hold(ws.root, wait=wait) if distributed.is_main() else contextlib.nullcontext():
        return _run(cfg, ws, stages, force)


def _run(cfg: Config, ws: Workspace, stages: list[str], force: bool) -> dict[str, str]:
    if distributed.is_main():
        for name, what in recover(ws, STAGE_NAMES):
            StageLog(name)(what)
        write_text(ws.root / artifacts.CONFIG, dumps(cfg) + "\n")
    distributed.barrier()
    result = {}
    for name in stages:
        stage = BY_NAME[name]
        log = StageLog(name)
        fp = fingerprint(cfg, ws, stage)
        if fp.missing:
            up = fp.missing[0]
            raise PipelineError(f"{name} needs the outputs of {up}, which has not completed: "
                                f"run `python -m pipeline run --stages {up},{name}` first")
        for up in stage.reads(cfg):
            if up not in stages and (why := staleness(cfg, ws, BY_NAME[up])):
                log(f"note: {up} is stale ({why}); using its existing outputs — add it to --stages to refresh")
        why = "forced" if force else staleness(cfg, ws, stage, fp)
        if why and stage.checkpoints:  # as `status` says it: resumed from a checkpoint, or started over
            why = _resume_point(ws, stage, fp, why)
        if not why:
            log("up to date, skipped")
            result[name] = "skipped"
            continue
        log(f"running ({why})" + (f" on {distributed.world_size()} processes" if distributed.active()
                                  and stage.every_rank else ""))
        if distributed.active():
            _run_distributed(cfg, ws, stage, fp, force)
        else:
            run_stage(cfg, ws, stage, fp, force)
        result[name] = "ran"
    return result


def status(cfg: Config) -> list[tuple[str, str]]:
    """(stage, 'up to date' or the reason it would run) for every stage; stale upstream makes downstream stale. It
    reads without the run folder's lock: a stage a run in progress is writing says so, and so does a complete
    commit that a stopped run left waiting."""
    ws = Workspace.from_config(cfg)
    busy = runlock.holder(ws.root)
    if busy and busy.get("pid") == os.getpid():  # `report` asks while it holds the lock itself
        busy = None
    out, stale = [], set()
    for s in STAGES:
        try:
            fp = fingerprint(cfg, ws, s)
            why = staleness(cfg, ws, s, fp)
            if why and s.checkpoints:
                why = _resume_point(ws, s, fp, why)
        except PipelineError as e:  # e.g. a test-set folder that is empty: this stage cannot be checked, the rest can
            why = f"cannot be checked: {e}"
        if busy is not None and any(p.name.endswith(f"-{busy.get('pid')}") for p in ws.stagings(s.name)):
            why = f"being run now (pid {busy.get('pid')})"
        elif busy is None and (complete := waiting(ws, s.name)):
            why = (f"complete outputs are waiting in {complete.name} (a run stopped while committing them): "
                   "`python -m pipeline run` or `recover` finishes the commit")
        if not why and (up := [r for r in s.reads(cfg) if r in stale]):
            why = f"upstream {up[0]} is stale"
        if why:
            stale.add(s.name)
        out.append((s.name, why or "up to date"))
    return out


def _resume_point(ws: Workspace, stage: StageSpec, fp: Fingerprint, why: str) -> str:
    """`why` with what a stopped run's checkpoint of `stage` means for the next `run`: resumed (same fingerprint)
    or started over."""
    try:
        state = json.loads((ws.checkpoints(stage.name) / artifacts.CHECKPOINT).read_text())
        done, total = int(state["epochs_done"]), int(state["epochs_total"])
    except (OSError, ValueError, KeyError, TypeError):
        return why
    if state.get("key") != fp.digest:
        return f"{why}; its checkpoint after epoch {done} of {total} is for other settings: `run` starts over"
    where = f"interrupted after epoch {done} of {total}; `run` resumes from there"
    return where if why.startswith(("incomplete", "never run")) else f"{why}; {where}"

