"""Which modules read the config during the train stage: every attribute read of the `Config` or one of its
sections is traced to the module that made it, while `stages/train.py:run` trains the embedded demo (issue 34:
"a cfg walk from stages/train.py:run enters fewer rooms than 10"). Prints each module, how many reads it made and
which entries; the demo's datablock and lr_find run first (not traced).

    python -m research.cfg_walk [--config CONFIG] [--set SECTION.KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict

from bench._common import header, result

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="a config file (default: the embedded demo)")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()

    from pipeline import config, runner

    with tempfile.TemporaryDirectory(prefix="cfg-walk-") as tmp:
        overrides = [f"run.workdir={tmp}/runs", f"run.exports={tmp}/exports", "train.epochs=1", *args.overrides]
        cfg = config.load(args.config, overrides)
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
        runner.run(cfg, ["train"])
        for cls in classes:
            del cls.__getattribute__

    header(f"cfg walk: modules reading the config during train ({args.config or 'the embedded demo'})")
    ours = sorted(m for m in reads if m.split(".")[0] in ("pipeline", "stages") and m != "pipeline.config")
    for m in sorted(reads):
        print(f"  {m:40s} {sum(reads[m].values()):5d} reads: {', '.join(sorted(reads[m]))[:150]}")
    result("rooms", len(ours), note="modules of pipeline/ and stages/ but config.py that read it")
    rooms = [m for m in ours if not m.startswith("pipeline.core.") and m != "pipeline.runner"]
    result("rooms outside the machinery", len(rooms), note="the same without runner and core/: " + ", ".join(rooms))
    whole = [m for m in ours if any("." not in k for k in reads[m]) and m not in ("pipeline.runner",)]
    result("modules the whole Config enters", len(whole), note="they read a section off it: " + ", ".join(whole))
