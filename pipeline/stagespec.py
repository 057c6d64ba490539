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


@dataclass(frozen=True)
class StageSpec:
    name: str                                        # the module stages/<name>.py and the folder runs/<run>/<name>
    summary: str                                     # one line for `python -m pipeline stages`
    writes: str                                      # its outputs, in words, for `python -m pipeline stages`
    reads: Callable[..., tuple[str, ...]] = _none    # cfg -> upstream stages whose outputs this one reads
    params: tuple[str, ...] = ()                     # "section" or "section.key" config entries that change its result
    params_if: Callable[..., tuple[str, ...]] = _none  # cfg -> entries that change it only in some configs
    external: bool = False       # its module has external_fingerprint(cfg, ws): source data outside the run folder
    exports: bool = False        # it writes exports/<run>.pkl and its card (staged like its folder)
    every_rank: bool = False     # a distributed launch runs it on every process (any other stage on rank 0 alone)
    builds_model: bool = False   # it builds train.arch: a run checks that the name is a model before any stage starts

    def keys(self, cfg) -> tuple[str, ...]:
        """The config entries whose values go into this stage's fingerprint under `cfg`."""
        return self.params + self.params_if(cfg)

    def load(self):
        """The stage's module (its `run`, and `external_fingerprint` where `external`)."""
        return importlib.import_module(f"stages.{self.name}")
