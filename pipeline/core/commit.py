"""The staged commit: a stage writes into its staging folder, its manifest is written there last, then the folder
(and its exports) replaces the stage's folder as a whole; `recover` finishes a commit a killed run cut short, and
`waiting` says where one is waiting for it. An export belongs to the run folder that made it (`export_owner`, from
its model card): `claim_exports` refuses to replace another run folder's unless forced."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .artifacts import MANIFEST
from .errors import PipelineError
from .workspace import STAGED_EXPORTS, Workspace, sha256_file, sha256_text, write_json


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


def write_manifest(ws: Workspace, staged: Workspace, name: str, fp, outputs: list[Path], started: str, finished: str,
                   duration: float) -> None:
    """Write stage `name`'s manifest into its staging folder (last: a manifest means the outputs are complete):
    fingerprint `fp` and its parts, each output's size, mtime and sha256 (under the path it will have once
    committed), their joint digest and the timing."""
    described = _describe_outputs([Path(p) for p in outputs], ws, staged)
    write_json(ws.staging_dir(name) / MANIFEST, {
        "stage": name, "fingerprint": fp.digest,
        "parts": {"config": fp.config, "code": fp.code, "inputs": fp.inputs, "external": fp.external},
        "outputs": described,
        "outputs_digest": sha256_text(json.dumps({k: v["sha256"] for k, v in described.items()}, sort_keys=True)),
        "started": started, "finished": finished, "duration_s": round(duration, 2),
    })


def cannot_write(e: OSError, path: Path) -> PipelineError:
    """The one-line error for a failed write of `path`."""
    return PipelineError(f"cannot write {e.filename or path}: {e.strerror or e}")


def export_owner(ws: Workspace) -> str | None:
    """The run folder whose train made `exports/<run>.pkl`, as its model card records it (relative to the exports
    folder, so a project moved as a whole keeps it), or None: no export, no card, or a card that does not say."""
    try:
        owner = json.loads(ws.model_card.read_text(encoding="utf-8")).get("run_folder")
    except (OSError, ValueError, AttributeError):
        return None
    return owner if isinstance(owner, str) else None


def run_folder_of(ws: Workspace) -> str:
    """How a model card names the run folder `ws.root`: relative to the exports folder."""
    return os.path.relpath(ws.root, ws.exports)


def describe_export(ws: Workspace) -> str | None:
    """What `status` says of `exports/<run>.pkl`: whose it is (None when there is none)."""
    if not ws.learner.exists():
        return None
    owner = export_owner(ws)
    if owner is None:
        return f"{ws.learner} (its model card does not say which run folder made it)"
    if os.path.normpath(owner) == run_folder_of(ws):
        return f"{ws.learner} (this run folder's)"
    return (f"{ws.learner} belongs to another run folder, {os.path.normpath(ws.exports / owner)}: `run` refuses "
            "to replace it without --force")


def claim_exports(ws: Workspace, force: bool, log) -> None:
    """Before a stage replaces `exports/<run>.*`: refused in one line when another run folder's train made them
    (two configs that share `run.name` and `run.exports` but not `run.workdir`), unless `force` (then said)."""
    owner = export_owner(ws)
    if owner is None or os.path.normpath(owner) == run_folder_of(ws):
        return
    where = os.path.normpath(ws.exports / owner)
    if not force:
        raise PipelineError(f"{ws.learner} belongs to another run folder ({where}: a config with the same run.name "
                            f"and run.exports); training here would replace it: give this config its own run.name or "
                            f"run.exports, or pass --force to replace it")
    log(f"note: replacing {ws.learner}, which belonged to the run folder {where} (--force)")


def commit(ws: Workspace, name: str, staging: Path | None = None) -> None:
    """Put the complete staging folder of stage `name` (this process's, or `staging`; it holds its manifest) in
    place of the stage's folder: its exports first, then the folder swapped for the old one as a whole. A commit
    cut short (two renames) is finished by the next `run` or by `recover`."""
    staging, final, old = staging or ws.staging_dir(name), ws.root / name, ws.root / f".{name}.old"
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
        raise cannot_write(e, final) from None
    shutil.rmtree(old, ignore_errors=True)


def waiting(ws: Workspace, name: str) -> Path | None:
    """The newest complete staging folder of stage `name` (its manifest written, its commit not done), if any."""
    complete = [p for p in ws.stagings(name) if (p / MANIFEST).is_file()]
    return max(complete, key=lambda p: (p / MANIFEST).stat().st_mtime_ns) if complete else None


def recover(ws: Workspace, names) -> list[tuple[str, str]]:
    """Finish the commits of stages `names` that a stopped run cut short, and remove what stopped runs left (staging
    folders, old stage folders); returns (stage, what was done) for each thing done. Only under the run folder's
    lock (`runlock.hold`) and before any stage runs: every staging folder is then one whose process has stopped."""
    done = []
    for name in names:
        if complete := waiting(ws, name):
            commit(ws, name, complete)
            done.append((name, f"finished the commit of its complete outputs that a stopped run left in {complete.name}"))
        for left in ws.stagings(name):
            shutil.rmtree(left, ignore_errors=True)
            done.append((name, f"removed {left.name}, the incomplete outputs of a stopped run"))
        if (old := ws.root / f".{name}.old").exists():
            shutil.rmtree(old, ignore_errors=True)
            done.append((name, f"removed {old.name}, the previous outputs a finished commit left"))
    return done
