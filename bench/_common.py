"""Shared by the benchmark scripts: paths, generated datasets, subprocess runs with peak-RSS, printing."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
OUT = Path(os.environ.get("BENCH_OUT", REPO / "bench" / "out"))  # generated data and runs (git-ignored)


def machine() -> str:
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {cpus} CPU core(s) usable, {gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s), Python {platform.python_version()}")


def header(title: str) -> None:
    print(f"# {title}")
    print(f"machine: {machine()}")


def result(name: str, value, unit: str = "", note: str = "", ok: bool | None = None) -> None:
    """One figure per line: `name: value unit  (note)`, where with `ok` the note is a target: met / NOT MET."""
    shown = f"{value:.3g}" if isinstance(value, float) else str(value)
    if ok is None:
        tail = f"  ({note})" if note else ""
    else:
        tail = f"  (target {note})" + ("  met" if ok else "  NOT MET")
    print(f"{name}: {shown}{(' ' + unit) if unit else ''}{tail}", flush=True)


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("PYTHONWARNINGS", "ignore")
    return e


RSS_WRAPPER = r"""
import resource, runpy, sys, json, time
t0 = time.perf_counter()
code = 0
try:
    sys.argv = ["pipeline"] + sys.argv[1:]
    runpy.run_module("pipeline", run_name="__main__")
except SystemExit as e:
    code = e.code or 0
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("BENCH_RSS " + json.dumps({"self_mb": self_kb / 1024, "children_mb": child_kb / 1024,
                                 "seconds": time.perf_counter() - t0, "rc": code}), flush=True)
sys.exit(code)
"""


def pipeline_run(args: list[str], cwd: Path, quiet: bool = True) -> dict:
    """`python -m pipeline ARGS` in a fresh process; its peak RSS (self and DataLoader workers) and duration."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", RSS_WRAPPER, *args], cwd=cwd, env=env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("BENCH_RSS ")), None)
    if p.returncode != 0 or line is None:
        sys.stderr.write(p.stdout[-4000:] + p.stderr[-4000:])
        raise SystemExit(f"pipeline {' '.join(args)} failed (rc {p.returncode})")
    if not quiet:
        print(p.stdout, end="")
    return {**json.loads(line[len("BENCH_RSS "):]), "wall": wall, "stdout": p.stdout}


def make_flat_dataset(root: Path, n: int, classes: int = 29, size: int = 32, seed: int = 0, draw: int = 0) -> Path:
    """`n` small distinct JPEGs in `classes` folders (generated once; a `.complete` marker says it is whole): one
    random pattern per class (from `seed`) plus per-image noise (from `seed` and `draw`: another draw of the
    same classes, e.g. a test set)."""
    import numpy as np
    from PIL import Image

    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{n} {classes} {size} {seed} {draw}":
        return root
    rng = np.random.default_rng(seed)
    names = [f"C{k:02d}" for k in range(classes)]
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, (classes, size, size, 3), dtype=np.uint8)  # one pattern per class
    rng = np.random.default_rng([seed, draw])
    t0 = time.perf_counter()
    for i in range(n):
        k = i % classes
        noise = rng.integers(-40, 40, (size, size, 3))
        img = np.clip(base[k].astype(int) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / names[k] / f"{names[k]}_{i:06d}.jpg", quality=90)
        if i and i % 20000 == 0:
            print(f"  generated {i}/{n} images ({time.perf_counter() - t0:.0f}s)", flush=True)
    marker.write_text(f"{n} {classes} {size} {seed} {draw}")
    return root


def write_config(path: Path, name: str, source: Path, sections: str) -> Path:
    """A benchmark project's config at `path`: run `name` on the image folder `source`, then the TOML `sections`
    (its [datablock], [train] and other sections); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[run]\nname = "{name}"\n[download]\nsource = "path:{source}"\n{sections}')
    return path


BIG_N = 87_000


def big_project(cache: bool = True) -> tuple[Path, list[str]]:
    """The 87,000-image benchmark project: generated 32 px JPEGs (29 classes x 3,000, as grassknoted), a
    1,000-image flat test folder, and the `--config/--set` arguments of a cheap but complete recipe (aslnet at
    32 px, one epoch) so every stage runs in about a minute on a laptop CPU."""
    work = OUT / "big"
    train = make_flat_dataset(OUT / "data87k", BIG_N, size=32)
    test = OUT / "data87k_test"
    if not (test / ".complete").exists() or (test / ".complete").read_text() != "1000 draw 1":
        import shutil

        src = make_flat_dataset(OUT / "data87k_test_src", 1000, size=32, draw=1)
        test.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.glob("*/*.jpg")):
            shutil.copy(f, test / f.name)
        (test / ".complete").write_text("1000 draw 1")
    work.mkdir(parents=True, exist_ok=True)
    name = f"big_{'cache' if cache else 'files'}"
    config = write_config(work / f"{name}.toml", name, train, f"""\
[datablock]
valid_pct = 0.2
cache = {str(cache).lower()}
[lr_find]
num_it = 20
[train]
arch = "aslnet"
pretrained = false
method = "fit_one_cycle"
base_lr = 1e-3
epochs = 1
batch_size = 64
image_size = 32
[evaluate]
batch_size = 256
[[evaluate.test_sets]]
name = "generated"
source = "path:{test}"
label_regex = '^(C\\d\\d)_\\d+\\.jpg$'
""")
    return work, ["--config", str(config)]


def demo_learner_bench(description: str, title: str, name: str) -> tuple:
    """The engine benchmarks' shared start: their options (--files, --limit, --batch-size), a header, and a
    1-epoch demo learner trained into bench/out/<name>/. Returns (args, work folder, exported .pkl, test files)."""
    import argparse
    import warnings

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--files", type=Path, help="folder of test images (default: the demo's held-out digits)")
    ap.add_argument("--limit", type=int, default=0, help="use at most N files")
    ap.add_argument("--batch-size", type=int, default=128, help="evaluate.batch_size (the demo's)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    header(title)
    work = OUT / name
    work.mkdir(parents=True, exist_ok=True)
    sets = ["--set", f"run.name={name}", "--set", "train.epochs=1", "--set", "train.freeze_epochs=0"]
    r = pipeline_run(["run", "--config", str(REPO / "configs" / "demo.toml"), "--stages",
                      "download,datablock,train", *sets], cwd=work)
    print(f"learner: demo recipe, 1 epoch, .pkl (and .onnx) from one train ({r['seconds']:.0f}s to prepare)")
    from pipeline.data.loaders import list_images

    folder = args.files or next((work / "data").glob("sklearn_digits*/test"))
    files = sorted(list_images(folder))[:args.limit or None]
    print(f"test files: {len(files)} from {folder}")
    return args, work, work / "exports" / f"{name}.pkl", files


def predict_each(learn, files: list[Path]) -> tuple[list[str], "torch.Tensor"]:
    """The published per-image recipe: `learn.predict(path)` once per file (fastai's bar silenced); the labels and
    the stacked probabilities."""
    import torch

    from pipeline.models import training

    labels, probs = [], []
    with training.quiet(learn):
        for f in files:
            label, _, p = learn.predict(f)
            labels.append(str(label))
            probs.append(p)
    return labels, torch.stack(probs)
