"""Benchmark 4: peak resident memory of every stage on an 87,000-image dataset (target: train <= 4 GB).

Each stage runs in its own fresh process (`python -m pipeline run --stages <stage>`), so each figure is that
stage's own peak (ru_maxrss of the process, and separately of its DataLoader worker processes). The data are
87,000 generated 32 px JPEGs in 29 class folders (the grassknoted layout and count), the recipe a small CNN
(aslnet, 32 px, one epoch) so that the run takes minutes on a CPU; images are streamed from disk (files, or the
preprocessing cache read a batch at a time), never all held in memory, whatever the model.

    python -m bench.memory_87k [--files]   # --files: without datablock.cache
"""
from __future__ import annotations

import argparse
import sys
import warnings

from bench._common import BIG_N, big_project, header, pipeline_run, result

STAGES = ("download", "datablock", "lr_find", "train", "evaluate")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", action="store_true", help="train from image files (datablock.cache = false)")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    header(f"peak RSS per stage, {BIG_N:,} images ({'image files' if a.files else 'datablock.cache'})")
    work, args = big_project(cache=not a.files)
    peaks = {}
    for stage in STAGES:
        r = pipeline_run(["run", *args, "--stages", stage, "--force"], cwd=work)
        peaks[stage] = r["self_mb"]
        line = next((ln for ln in r["stdout"].splitlines() if "done in" in ln), "")
        result(f"{stage} peak RSS", r["self_mb"] / 1024, "GB")
        print(f"    workers' peak {r['children_mb'] / 1024:.2f} GB, {r['seconds']:.1f}s in-process; {line.strip()}")
    ok = peaks["train"] <= 4096
    result("train stage peak RSS", peaks["train"] / 1024, "GB", "<= 4 GB", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
