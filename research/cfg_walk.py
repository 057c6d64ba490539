"""Which modules read the config during the train stage: every attribute read of the `Config` or one of its
sections is traced to the module that made it, while `stages/train.py:run` trains a recipe (issue 34: "a cfg walk
from stages/train.py:run enters fewer rooms than 10"). For each recipe: each module, how many reads it made and
which entries, and three figures: the rooms (modules of pipeline/ and stages/ reading it), those outside the
machinery (runner, core/), and the modules the whole `Config` enters. The recipe's download, datablock and lr_find
run first (not traced), on at most `--per-class` photos a class and for one epoch, so that every shipped recipe
runs in minutes; a recipe whose data is not here (../shared/data) is said and skipped.

    python -m research.cfg_walk                   # every shipped recipe: demo, asl_multi, asl_robust, asl_hand_net_late
    python -m research.cfg_walk --config CONFIG [--set SECTION.KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict

from bench._common import REPO, header, result

RECIPES = (None, "configs/asl_multi.toml", "configs/asl_robust.toml", "configs/asl_hand_net_late.toml")


def walk(path: str | None, overrides: list[str]) -> dict[str, dict[str, int]]:
    """module -> entry -> reads, of the config while train runs the recipe at `path` (None: the embedded demo)."""
    from pipeline import config, runner

    with tempfile.TemporaryDirectory(prefix="cfg-walk-") as tmp:
        overrides = [f"run.workdir={tmp}/runs", f"run.exports={tmp}/exports", "train.epochs=1", *overrides]
        cfg = config.load(path, overrides)
        runner.run(cfg, ["download", "datablock", "lr_find"])
        reads: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        classes = [c for c in vars(config).values() if isinstance(c, type) and c.__module__ == config.__name__
                   and c.__name__.endswith("Cfg") or c is config.Config]
        section = {c: ("" if c is config.Config else c.__name__.removesuffix("Cfg").lower() + ".") for c in classes}

        def traced(cls):
            plain = cls.__getattribute__

            def read(self, name):
                if not name.startswith("__"):
                    caller = sys._getframe(1).f_globals.get("__name__", "?")
                    reads[caller][section[cls] + name] += 1
                return plain(self, name)
            return read

        for cls in classes:
            cls.__getattribute__ = traced(cls)
        try:
            runner.run(cfg, ["train"])
        finally:
            for cls in classes:
                del cls.__getattribute__
    return reads


def report(name: str, reads: dict) -> None:
    print(f"## {name}")
    ours = sorted(m for m in reads if m.split(".")[0] in ("pipeline", "stages") and m != "pipeline.config")
    for m in sorted(reads):
        print(f"  {m:40s} {sum(reads[m].values()):5d} reads: {', '.join(sorted(reads[m]))[:150]}")
    result(f"{name}: rooms", len(ours), note="modules of pipeline/ and stages/ but config.py that read it")
    rooms = [m for m in ours if not m.startswith("pipeline.core.") and m != "pipeline.runner"]
    result(f"{name}: rooms outside the machinery", len(rooms), note="without runner and core/: " + ", ".join(rooms))
    whole = [m for m in ours if any("." not in k for k in reads[m]) and m not in ("pipeline.runner",)]
    result(f"{name}: modules the whole Config enters", len(whole), note="they read a section off it: " + ", ".join(whole))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="one config file (default: every shipped recipe)")
    parser.add_argument("--per-class", type=int, default=3, help="photos a class for the asl recipes (datablock.max_per_class)")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()

    from pipeline.core.errors import PipelineError

    header("cfg walk: modules reading the config during train")
    for recipe in ([args.config] if args.config else RECIPES):
        recipe = None if recipe in ("demo", "configs/demo.toml") else recipe
        path = None if recipe is None else str(REPO / recipe) if not recipe.startswith("/") else recipe
        shrink = [] if recipe is None else [f"datablock.max_per_class={args.per_class}", "train.batch_size=8"]
        try:
            reads = walk(path, shrink + args.overrides)
        except PipelineError as e:
            print(f"## {recipe}: skipped ({e})")
            continue
        report(recipe or "demo", reads)
