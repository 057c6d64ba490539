"""Stage fingerprints, DVC style: what a stage would run on now (its config keys, its code derived from the import
graph, its inputs' manifest digests, its source data), and `staleness`, the comparison with its manifest.

A stage is anything with `name`, `reads(cfg)`, `keys(cfg)`, `external` and `load()` (`stagespec.StageSpec`, declared
in `stages/<name>.py`).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from .artifacts import MANIFEST
from .workspace import Workspace, sha256_file, sha256_text

PKG = Path(__file__).resolve().parent.parent  # the `pipeline` package whose files `code_files` hashes


def _later(cfg, section: str) -> dict[str, str]:
    """field -> "field" or "key" for the entries of `section` added after fingerprints were first recorded (their
    `later` tag in config.py, read off the dataclass: this module imports no config)."""
    return {f.name: f.metadata["later"] for f in dataclasses.fields(getattr(cfg, section)) if f.metadata.get("later")}


def _config_part(cfg, keys: tuple[str, ...]) -> dict:
    """The values of `keys` ("section" or "section.key") in `cfg`, less the entries added later while at their
    default, so a config that does not use them keeps its fingerprint (an up-to-date run stays up to date)."""
    out = {}
    for key in keys:
        section, _, attr = key.partition(".")
        values, later = cfg.section(section), _later(cfg, section)
        defaults = dataclasses.asdict(type(getattr(cfg, section))())
        if attr:
            if not (attr in later and values[attr] == defaults[attr]):
                out[key] = values[attr]
            continue
        out[key] = {k: v for k, v in values.items() if not (later.get(k) == "field" and v == defaults[k])}
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
    (e.g. `pipeline.data.hands.FEATURES`, a name imported from a module)."""
    parts = name.split(".")[1:]
    for candidate in (PKG.joinpath(*parts[:-1], f"{parts[-1]}.py") if parts else None,
                      PKG.joinpath(*parts, "__init__.py")):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


# The modules that build, train, export or run a model: the model machinery (`pipeline.models`) and each kind's
# model, graph, network and embedding modules (`pipeline.kinds.<kind>.<role>`). A stage that only prepares data
# (`StageSpec.model_code` False: download, datablock) does not count them: a kind's class reaches them only inside
# the methods that build or run its model, and its data preparation (`kinds/<kind>/data.py`) imports none of them
# (`tests/test_house.py`), so a model edit leaves those stages up to date.
MODEL_ROLES = ("model", "graph", "network", "embeddings")


def is_model_code(name: str) -> bool:
    """Whether the `pipeline` module `name` is model code (`MODEL_ROLES`, `pipeline.models`)."""
    parts = name.split(".")
    return (parts[:2] == ["pipeline", "models"]
            or (parts[:2] == ["pipeline", "kinds"] and len(parts) >= 4 and parts[3] in MODEL_ROLES))


def _reached(start: Path, package: str, model_code: bool = True) -> set[Path]:
    """`start` (a module of `package`) and every `pipeline` module it reaches through imports, transitively (without
    passing through model code unless `model_code`)."""
    files, todo = {start}, [(start, package)]
    while todo:
        path, package = todo.pop()
        for name in _imported_modules(path, package):
            if not model_code and is_model_code(name):
                continue
            f = _module_file(name)
            if f is not None and f not in files:
                files.add(f)
                todo.append((f, name if f.name == "__init__.py" else name.rpartition(".")[0]))
    return files


def code_files(stage_name: str, model_code: bool = True) -> tuple[Path, ...]:
    """`stages/<stage_name>.py` and every `pipeline` module it reaches through imports, followed transitively:
    the code whose edit can change the stage's result (derived, so no list is kept by hand). `pipeline/config.py`
    and what it reaches count for every stage: each reads its config through those dataclasses and their methods.
    Without `model_code` (a stage that prepares data only: `StageSpec.model_code`), no model code (`is_model_code`)."""
    stage = Path(importlib.util.find_spec(f"stages.{stage_name}").origin)
    return tuple(sorted(_reached(stage, "stages", model_code) | _reached(PKG / "config.py", "pipeline", model_code)))


def module_code_hash(module: str) -> str:
    """The digest of `pipeline.<module>` and every `pipeline` module it reaches through imports: for a cache
    entry that one module's code computes (download's per-source listing), derived as `code_files` is."""
    name = f"pipeline.{module}"
    files = _reached(_module_file(name), name.rpartition(".")[0])
    return sha256_text("".join(sha256_file(f) for f in sorted(files)) + __version__)


def _code_hash(stage) -> str:
    return sha256_text("".join(sha256_file(f) for f in code_files(stage.name, getattr(stage, "model_code", True))) + __version__)


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


def fingerprint(cfg, ws: Workspace, stage) -> Fingerprint:
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


def staleness(cfg, ws: Workspace, stage, fp: Fingerprint | None = None) -> str:
    """'' when `stage` is up to date, else why not (never run / config changed / input changed / …)."""
    m = read_manifest(ws, stage.name)
    if m is None:
        started = bool(ws.stagings(stage.name)) or ws.stage_dir(stage.name).exists()
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
