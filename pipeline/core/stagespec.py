"""What a stage declares about itself, as a DVC stage does in dvc.yaml: the stages whose outputs it reads, the config
entries (params) that change its result, what it writes. Each `stages/<name>.py` holds its own `STAGE = StageSpec(...)`
near the top; `runner.py` keeps only the order of the names.

Nothing here imports the rest of the package: every stage's code fingerprint includes this file.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Callable


def _none(cfg) -> tuple[str, ...]:
    return ()


# Config entries no stage's result depends on: where a run's files go, not what they hold. Every other entry is in
# some stage's params, and a stage that reads part of a section ignores the rest: the entries whose role it does
# not take ("train:model,data"), and those it names in `ignores` (tests/test_runner.py).
NOT_PARAMS = ("run.name", "run.workdir", "run.exports", "run.data_dir", "run.track")


# A train entry's role (`config.entry(default, role)`), which says which stages' results it changes: "train:model,data"
# in a stage's params takes the entries with those roles, the others of the section are ignored by that stage; a
# function of one role takes its entries as keywords (`TrainCfg.entries`: `runtime.decide(**t.entries(RUNTIME))`).
DATA = "data"            # what the decoded pixels are: datablock's pixel cache, lr_find and train
MODEL = "model"          # the model, its loss and the batches it learns from: lr_find's sweep and train
SCHEDULE = "schedule"    # what follows the sweep (how long, at what rate, what is done after): train only
RUNTIME = "runtime"      # how fast the same arithmetic runs on this machine: train only
ROLES = (DATA, MODEL, SCHEDULE, RUNTIME)


def _with_roles(cfg, section: str, roles) -> list[str]:
    """"section.key" for each entry of `section` whose role (its field's metadata in config.py) is in `roles`."""
    return [f"{section}.{f.name}" for f in dataclasses.fields(getattr(cfg, section)) if f.metadata.get("role") in roles]


@dataclass(frozen=True)
class StageSpec:
    name: str                                        # the module stages/<name>.py and the folder runs/<run>/<name>
    summary: str                                     # one line for `python -m pipeline stages`
    writes: tuple[str, ...] = ()                     # the files it leaves in its folder (artifacts.py names;
                                                     # "{set}/NAME": one per test set); the runner checks them
    reads: Callable[..., tuple[str, ...]] = _none    # cfg -> upstream stages whose outputs this one reads
    params: tuple[str, ...] = ()                     # "section", "section.key" or "section:role,role" (the entries
                                                     # config.py tags with those roles) that change its result
    params_if: Callable[..., tuple[str, ...]] = _none  # cfg -> entries that change it only in some configs
    writes_if: Callable[..., tuple[str, ...]] = _none  # cfg -> files it leaves only in some configs
    sets: Callable[..., tuple[str, ...]] = _none     # cfg -> the test sets "{set}" stands for
    ignores: tuple[str, ...] = ()  # the entries of an untagged section it reads in part that do not change its result
    external: bool = False       # its module has external_fingerprint(cfg, ws): source data outside the run folder
    exports: bool = False        # it writes exports/<run>.pkl and its card (staged like its folder)
    every_rank: bool = False     # a distributed launch runs it on every process (any other stage on rank 0 alone)
    shared_work: bool = False    # a distributed launch first runs its module's warm(cfg, ws, log) on every process:
                                 # each does 1/N of the per-image work into the content stores, then rank 0 runs it
    builds_model: bool = False   # it builds train.arch: a run checks that the name is a model before any stage starts
    model_code: bool = True      # its code fingerprint counts model code (`fingerprints.is_model_code`); False for a
                                 # stage that only prepares data, so a model edit leaves it up to date
    checkpoints: bool = False    # it keeps resumable checkpoints in `Workspace.checkpoints(name)` (`checkpoint.json`
                                 # says where it stands): the runner removes them once it commits, status reports them

    def keys(self, cfg) -> tuple[str, ...]:
        """The config entries whose values go into this stage's fingerprint under `cfg` ("section:roles" resolved
        to the section's entries with those roles)."""
        out = []
        for param in self.params + self.params_if(cfg):
            section, _, roles = param.partition(":")
            out += _with_roles(cfg, section, roles.split(",")) if roles else [param]
        return tuple(out)

    def ignored(self, cfg) -> tuple[str, ...]:
        """The entries of a section it takes in part that it does not take: those of another role than it takes, and
        its `ignores` (a section's name there: every entry of the section it does not take)."""
        taken = set(self.keys(cfg))
        out = [i for i in self.ignores if "." in i]
        for section in (i for i in self.ignores if "." not in i):
            out += [f"{section}.{f.name}" for f in dataclasses.fields(getattr(cfg, section))
                    if f"{section}.{f.name}" not in taken]
        for param in self.params + self.params_if(cfg):
            section, _, roles = param.partition(":")
            if roles:
                every = {f.metadata.get("role") for f in dataclasses.fields(getattr(cfg, section))} - {None}
                out += _with_roles(cfg, section, every - set(roles.split(",")))  # an untagged entry: neither
        return tuple(out)

    def outputs(self, cfg) -> tuple[str, ...]:
        """The files (relative to its folder) a run of this stage under `cfg` must leave: checked by the runner."""
        names = self.writes + self.writes_if(cfg)
        return tuple(n.format(set=s) for n in names for s in (self.sets(cfg) if "{set}" in n else (None,)))

    def load(self):
        """The stage's module (its `run`, and `external_fingerprint` where `external`)."""
        return importlib.import_module(f"stages.{self.name}")
