"""Ordered stage registry, `--stages` resolution, fingerprints, manifests and skip-if-unchanged."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import errno
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import __version__, artifacts, backbones, data, distributed
from .config import Config, dumps
from .errors import PipelineError
from .artifacts import MANIFEST
from .workspace import STAGED_EXPORTS, Workspace, sha256_file, sha256_text, write_json, write_text

PKG = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Stage:
    name: str
    reads: Callable[[Config], tuple[str, ...]]  # upstream stages whose outputs this one reads
    config_keys: tuple[str, ...]                # "section" or "section.key" entries that change its result
    summary: str = ""
    writes: str = ""
    external: bool = False                      # its module has external_fingerprint(cfg, ws) (source data)
    keys_if: Callable[[Config], tuple[str, ...]] = lambda cfg: ()  # config keys that matter only in some configs
    exports: bool = False                       # it writes exports/<run>.pkl and its card (staged like its folder)

    def keys(self, cfg: Config) -> tuple[str, ...]:
        return self.config_keys + self.keys_if(cfg)

    @property
    def module(self) -> str:
        return f"stages.{self.name}"

    def load(self):
        return importlib.import_module(self.module)


_MODEL_KEYS = ("train.arch", "train.pretrained", "train.head_dropout", "train.image_size", "train.batch_size", "train.grayscale",
               "train.opt", "train.momentum", "train.wd", "train.augment", "train.landmark_rotate",
               "train.landmark_mirror", "train.landmark_features", "run.seed")

STAGES: tuple[Stage, ...] = (
    Stage("download", lambda cfg: (), ("download",),
          "fetch each source (kaggle/path/url/sklearn) into the cache, find its images, labels and groups",
          artifacts.DATASET, external=True),
    Stage("datablock", lambda cfg: ("download",), ("datablock", "run.seed"),
          "merge the sources, verify images, hold out groups, split (random or by group), persist the split",
          "splits.csv, vocab.json, corrupt.csv, batch.png, class_counts.png; cache.npy, cache.json (datablock.cache); "
          "landmarks.csv (datablock.input = landmarks); holdout.csv (datablock.holdout)",
          keys_if=lambda cfg: ("train.image_size", "train.grayscale") if cfg.datablock.cache else ()),
    Stage("lr_find", lambda cfg: ("datablock",), ("lr_find",) + _MODEL_KEYS,
          "fastai lr_find on the persisted split; all suggestions + the chosen one",
          "lr_find.json, lr_find.png"),
    Stage("train", lambda cfg: ("datablock", "lr_find") if cfg.train.base_lr == "lr_find" else ("datablock",),
          ("train", "run.seed", "lr_find.suggestion"),
          "train (fine_tune by default), export the learner (.pkl and .onnx, parity-checked) and its model card",
          "history.csv, curves.png, metrics.json; exports/<run>.pkl, exports/<run>.onnx, exports/<run>.json",
          exports=True),
    Stage("evaluate", lambda cfg: ("datablock", "train") if cfg.datablock.holdout else ("train",), ("evaluate",),
          "batched inference on each test set (and the held-out groups); accuracy, tallies, plots",
          "<set>/predictions.csv, tallies.csv, tallies.png, confusion.png, reliability.png, metrics.json; metrics.json",
          external=True),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
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


# Config fields added after fingerprints were first recorded: left out of a stage's config part while at their
# default, so a config that does not use them keeps its fingerprint (an up-to-date run stays up to date).
LATER_FIELDS = {"download": ("sources",), "datablock": ("split", "holdout"), "train": ("landmark_mirror",)}


def _config_part(cfg: Config, keys: tuple[str, ...]) -> dict:
    out = {}
    for key in keys:
        section, _, attr = key.partition(".")
        values, defaults = cfg.section(section), Config().section(section)
        if attr:
            if not (attr in LATER_FIELDS.get(section, ()) and values[attr] == defaults[attr]):
                out[key] = values[attr]
            continue
        out[key] = {k: v for k, v in values.items() if not (k in LATER_FIELDS.get(section, ()) and v == defaults[k])}
    return out


def _imported_modules(path: Path, package: str) -> set[str]:
    """The `pipeline` modules that the source file `path` (a module of `package`) imports anywhere in its body,
    function-level imports included, read with `ast` (nothing is imported)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{a.name}" for a in node.names]  # `from pipeline import data` names a module
        else:
            continue
        found.update(n for n in names if n == "pipeline" or n.startswith("pipeline."))
    return found


def _module_file(name: str) -> Path | None:
    """The source file of `pipeline` module `name` (a package's __init__.py), or None when `name` is not one
    (e.g. `pipeline.hands.FEATURES`, a name imported from a module)."""
    parts = name.split(".")[1:]
    for candidate in (PKG.joinpath(*parts[:-1], f"{parts[-1]}.py") if parts else None,
                      PKG.joinpath(*parts, "__init__.py")):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def code_files(stage_name: str) -> tuple[Path, ...]:
    """`stages/<stage_name>.py` and every `pipeline` module it reaches through imports, followed transitively:
    the code whose edit can change the stage's result (derived, so no list is kept by hand)."""
    start = Path(importlib.util.find_spec(f"stages.{stage_name}").origin)
    files, todo = {start}, [(start, "stages")]
    while todo:
        path, package = todo.pop()
        for name in _imported_modules(path, package):
            f = _module_file(name)
            if f is not None and f not in files:
                files.add(f)
                todo.append((f, name if f.name == "__init__.py" else name.rpartition(".")[0]))
    return tuple(sorted(files))


def _code_hash(stage: Stage) -> str:
    return sha256_text("".join(sha256_file(f) for f in code_files(stage.name)) + __version__)


@dataclass
class Fingerprint:
    config: str
    code: str
    inputs: dict[str, str]
    external: str = ""
    missing: list[str] = field(default_factory=list)   # upstream stages with no complete manifest

    @property
    def digest(self) -> str:
        return sha256_text(json.dumps([self.config, self.code, self.inputs, self.external], sort_keys=True))


def manifest_path(ws: Workspace, stage: str) -> Path:
    return ws.artifact(stage, MANIFEST)


def read_manifest(ws: Workspace, stage: str) -> dict | None:
    return ws.manifest(stage)


def fingerprint(cfg: Config, ws: Workspace, stage: Stage) -> Fingerprint:
    """What `stage` would run on now: its config keys, its code, its inputs' digests, its external data."""
    inputs, missing = {}, []
    for up in stage.reads(cfg):
        m = read_manifest(ws, up)
        if m is None:
            missing.append(up)
        else:
            inputs[up] = m["outputs_digest"]
    external = stage.load().external_fingerprint(cfg, ws) if stage.external else ""  # others: no heavy import
    return Fingerprint(sha256_text(json.dumps(_config_part(cfg, stage.keys(cfg)), sort_keys=True, default=str)),
                       _code_hash(stage), inputs, external, missing)


def _final_path(path: Path, ws: Workspace, staged: Workspace) -> Path:
    """Where output `path` of the staged run `staged` lies once it is committed."""
    for tmp, final in ((staged.exports, ws.exports), (staged.stage_dir(staged.staged), ws.root / staged.staged)):
        if path.is_relative_to(tmp):
            return final / path.relative_to(tmp)
    return path


def _describe_outputs(paths: list[Path], ws: Workspace, staged: Workspace) -> dict:
    """{path relative to the run folder, where it will lie: size, mtime, sha256 of the staged file}."""
    out = {}
    for p in paths:
        st = p.stat()
        rel = os.path.relpath(_final_path(p, ws, staged), ws.root)
        out[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(p)}
    return out


def outputs_intact(manifest: dict, ws: Workspace) -> str:
    """'' when every recorded output is present and unchanged, else the first problem found. Output paths are
    relative to the run folder, so the answer does not depend on the current folder."""
    for rel, rec in manifest["outputs"].items():
        p = ws.root / rel
        try:
            st = p.stat()
        except OSError:
            return f"output {rel} is missing"
        if st.st_size != rec["size"] or (st.st_mtime_ns != rec["mtime_ns"] and sha256_file(p) != rec["sha256"]):
            return f"output {rel} was modified"
    return ""


def staleness(cfg: Config, ws: Workspace, stage: Stage, fp: Fingerprint | None = None) -> str:
    """'' when `stage` is up to date, else why not (never run / config changed / input changed / …)."""
    m = read_manifest(ws, stage.name)
    if m is None:
        started = ws.staging_dir(stage.name).exists() or ws.stage_dir(stage.name).exists()
        return "incomplete (interrupted or failed)" if started else "never run"
    fp = fp or fingerprint(cfg, ws, stage)
    if fp.missing:
        return f"input {fp.missing[0]} has not been run"
    parts = m.get("parts", {})
    if parts.get("config") != fp.config:
        return "config changed"
    changed = [k for k in fp.inputs if parts.get("inputs", {}).get(k) != fp.inputs[k]]
    if changed or set(parts.get("inputs", {})) != set(fp.inputs):
        return f"input changed ({', '.join(changed) or 'inputs differ'})"
    if parts.get("code") != fp.code:
        return "code changed"
    if parts.get("external") != fp.external:
        return "source data changed" + _changed_sources(parts.get("external", ""), fp.external)
    return outputs_intact(m, ws)


def _changed_sources(before: str, now: str) -> str:
    """' (a, b)' naming the sources whose fingerprints differ, where both are a JSON object source → fingerprint
    (several sources), else ''."""
    try:
        old, new = json.loads(before), json.loads(now)
    except ValueError:
        return ""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return ""
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return f" ({', '.join(changed)})" if changed else ""


class StageLog:
    """One prefixed, flushed line per message: readable in a terminal and in a CI log."""

    def __init__(self, stage: str):
        self.stage = stage

    def __call__(self, msg: str) -> None:
        if distributed.is_main():  # in a distributed launch the other ranks stay quiet (errors still show)
            print(f"[{self.stage}] {msg}", flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _cannot_write(e: OSError, path: Path) -> PipelineError:
    return PipelineError(f"cannot write {e.filename or path}: {e.strerror or e}")


def _commit(ws: Workspace, name: str) -> None:
    """Put the complete staging folder of stage `name` (it holds its manifest) in place of the stage's folder:
    its exports first, then the folder swapped for the old one as a whole. A commit cut short (two renames) is
    finished by the next `run` (`recover`)."""
    staging, final, old = ws.staging_dir(name), ws.root / name, ws.root / f".{name}.old"
    try:
        exports = staging / STAGED_EXPORTS
        if exports.is_dir():
            ws.exports.mkdir(parents=True, exist_ok=True)
            for f in exports.iterdir():
                os.replace(f, ws.exports / f.name)
            exports.rmdir()
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
    except OSError as e:
        raise _cannot_write(e, final) from None
    shutil.rmtree(old, ignore_errors=True)


def recover(ws: Workspace) -> None:
    """Finish the commits a killed run cut short, and remove old stage folders a commit left behind."""
    for s in STAGES:
        if (ws.staging_dir(s.name) / MANIFEST).is_file():
            _commit(ws, s.name)
        shutil.rmtree(ws.root / f".{s.name}.old", ignore_errors=True)


def run_stage(cfg: Config, ws: Workspace, stage: Stage, fp: Fingerprint) -> None:
    """Run `stage` into its staging folder, write its manifest there last (a manifest means the outputs are
    complete), then swap the folder in as a whole (`_commit`). Until then the stage's previous outputs and
    manifest stay as they were: a failed or interrupted run costs only itself. In a distributed launch only
    rank 0 touches the folders."""
    log = StageLog(stage.name)
    main = distributed.is_main()
    staged = ws.staging(stage.name, exports=stage.exports, fingerprint=fp.digest)
    staging, final = ws.staging_dir(stage.name), ws.root / stage.name
    if main:
        if final.exists() and not final.is_dir():
            raise PipelineError(f"cannot write {final}: {os.strerror(errno.ENOTDIR)}")
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run of this stage left
        try:
            staging.mkdir(parents=True)
        except OSError as e:
            raise _cannot_write(e, staging) from None
    started, t0 = _now(), time.perf_counter()
    try:
        with data.unverified_images(cfg):
            outputs = stage.load().run(cfg, staged, log)
        duration = time.perf_counter() - t0
        if not main:
            return
        described = _describe_outputs([Path(p) for p in outputs], ws, staged)
        write_json(staging / MANIFEST, {
            "stage": stage.name, "fingerprint": fp.digest,
            "parts": {"config": fp.config, "code": fp.code, "inputs": fp.inputs, "external": fp.external},
            "outputs": described,
            "outputs_digest": sha256_text(json.dumps({k: v["sha256"] for k, v in described.items()}, sort_keys=True)),
            "started": started, "finished": _now(), "duration_s": round(duration, 2),
        })
    except BaseException:
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    _commit(ws, stage.name)
    log(f"done in {duration:.1f}s")


DISTRIBUTED_STAGES = ("train",)  # run on every rank of a distributed launch; the others on rank 0 alone


def _run_distributed(cfg: Config, ws: Workspace, stage: Stage, fp: Fingerprint) -> None:
    """`run_stage` in a distributed launch: train on every rank, any other stage on rank 0 while the rest wait.
    A failure on any rank stops them all (a rank that died makes the others' next collective call fail)."""
    if stage.name in DISTRIBUTED_STAGES:
        try:
            run_stage(cfg, ws, stage, fp)
        except RuntimeError as e:  # torch.distributed's error when a peer process is gone
            raise PipelineError(f"{stage.name} failed on rank {distributed.rank()} of {distributed.world_size()}: "
                                f"{' '.join(str(e).split())[:300]} (did another process die? nothing was recorded "
                                "as complete: rerun the launch)") from None
        distributed.barrier()
        return
    failed = False
    try:
        if distributed.is_main():
            run_stage(cfg, ws, stage, fp)
    except BaseException:
        failed = True
        distributed.broadcast_failure(True)
        raise
    if distributed.broadcast_failure(failed):
        raise PipelineError(f"{stage.name} failed on rank 0 (see its error); this rank stops too")


MODEL_STAGES = ("lr_find", "train")  # the stages that build train.arch


def preflight(cfg: Config, stages: list[str]) -> None:
    """What can be checked before any stage starts and the config alone does not show (`config.validate` did the
    rest): that `train.arch` names a model, when a selected stage builds one."""
    if set(stages) & set(MODEL_STAGES):
        backbones.check_arch(cfg.train.arch)


def run(cfg: Config, stages: list[str], force: bool = False) -> dict[str, str]:
    """Run `stages` in order, skipping the up-to-date ones unless `force`; returns stage → ran/skipped. Under a
    distributed launcher (torchrun, accelerate launch) see `pipeline.distributed`."""
    preflight(cfg, stages)
    distributed.init()
    ws = Workspace.from_config(cfg)
    if distributed.is_main():
        try:
            ws.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PipelineError(f"cannot write {ws.root}: {e.strerror or e}") from None
        recover(ws)
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
        if not why:
            log("up to date, skipped")
            result[name] = "skipped"
            continue
        log(f"running ({why})" + (f" on {distributed.world_size()} processes" if distributed.active()
                                  and name in DISTRIBUTED_STAGES else ""))
        if distributed.active():
            _run_distributed(cfg, ws, stage, fp)
        else:
            run_stage(cfg, ws, stage, fp)
        result[name] = "ran"
    return result


def status(cfg: Config) -> list[tuple[str, str]]:
    """(stage, 'up to date' or the reason it would run) for every stage; stale upstream makes downstream stale."""
    ws = Workspace.from_config(cfg)
    out, stale = [], set()
    for s in STAGES:
        try:
            why = staleness(cfg, ws, s)
        except PipelineError as e:  # e.g. a test-set folder that is empty: this stage cannot be checked, the rest can
            why = f"cannot be checked: {e}"
        if not why and (up := [r for r in s.reads(cfg) if r in stale]):
            why = f"upstream {up[0]} is stale"
        if why:
            stale.add(s.name)
        out.append((s.name, why or "up to date"))
    return out
