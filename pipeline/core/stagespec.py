"""What a stage declares about itself, as a DVC stage does in dvc.yaml: the stages whose outputs it reads, the config
entries (params) that change its result, what it writes. Each `stages/<name>.py` holds its own `STAGE = StageSpec(...)`
near the top; `runner.py` keeps only the order of the names.

Nothing here imports the rest of the package: every stage's code fingerprint includes this file.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


def _none(cfg) -> tuple[str, ...]:
    return ()


# Config entries no stage's result depends on: where a run's files go, not what they hold. Every other entry is in
# some stage's params, and a stage that reads part of a section names the rest in `ignores` (tests/test_runner.py).
NOT_PARAMS = ("run.name", "run.workdir", "run.exports", "run.data_dir", "run.track")


@dataclass(frozen=True)
class StageSpec:
    name: str                                        # the module stages/<name>.py and the folder runs/<run>/<name>
    summary: str                                     # one line for `python -m pipeline stages`
    writes: tuple[str, ...] = ()                     # the files it leaves in its folder (artifacts.py names;
                                                     # "{set}/NAME": one per test set); the runner checks them
    reads: Callable[..., tuple[str, ...]] = _none    # cfg -> upstream stages whose outputs this one reads
    params: tuple[str, ...] = ()                     # "section" or "section.key" config entries that change its result
    params_if: Callable[..., tuple[str, ...]] = _none  # cfg -> entries that change it only in some configs
    writes_if: Callable[..., tuple[str, ...]] = _none  # cfg -> files it leaves only in some configs
    sets: Callable[..., tuple[str, ...]] = _none     # cfg -> the test sets "{set}" stands for
    ignores: tuple[str, ...] = ()  # the entries of a section it reads in part that do not change its result
    external: bool = False       # its module has external_fingerprint(cfg, ws): source data outside the run folder
    exports: bool = False        # it writes exports/<run>.pkl and its card (staged like its folder)
    every_rank: bool = False     # a distributed launch runs it on every process (any other stage on rank 0 alone)
    shared_work: bool = False    # a distributed launch first runs its module's warm(cfg, ws, log) on every process:
                                 # each does 1/N of the per-image work into the content stores, then rank 0 runs it
    builds_model: bool = False   # it builds train.arch: a run checks that the name is a model before any stage starts
    checkpoints: bool = False    # it keeps resumable checkpoints in `Workspace.checkpoints(name)` (`checkpoint.json`
                                 # says where it stands): the runner removes them once it commits, status reports them

    def keys(self, cfg) -> tuple[str, ...]:
        """The config entries whose values go into this stage's fingerprint under `cfg`."""
        return self.params + self.params_if(cfg)

    def outputs(self, cfg) -> tuple[str, ...]:
        """The files (relative to its folder) a run of this stage under `cfg` must leave: checked by the runner."""
        names = self.writes + self.writes_if(cfg)
        return tuple(n.format(set=s) for n in names for s in (self.sets(cfg) if "{set}" in n else (None,)))

    def load(self):
        """The stage's module (its `run`, and `external_fingerprint` where `external`)."""
        return importlib.import_module(f"stages.{self.name}")
