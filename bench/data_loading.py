"""Benchmark 5: the share of training time spent waiting for data (target <= 10 %), at 64 and 128 px.

On the 5,800-image grassknoted sample in ../shared/data (200x200 JPEG photos), with the default model
(EfficientNet-Lite0, pretrained, frozen body as fine_tune's first phase trains it) and batch size 64, for both
ways the train stage can read images: image files (decoded and resized every epoch) and the preprocessing
cache (`datablock.cache = true`). The learner and DataLoaders are the train stage's own (`Kind.make_learner`,
`Kind.training_data`). A callback measures, for each training batch, the time from the end of the previous
batch to the start of this one: fetching, decoding, collating and the batch transforms (IntToFloat, Normalize).
Share = that time / the time of the training batches.

The share is steady across an epoch, so each setting is timed over `--batches` training batches after two
warm-up batches, not a full epoch (a full 128 px epoch takes minutes per setting on a laptop CPU).

    python -m bench.data_loading [--batches 15] [--sizes 64 128]
"""
from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from contextlib import redirect_stdout

from bench._common import OUT, SHARED_DATA, header, result


def measure(size: int, cache: bool, batches: int) -> dict:
    from fastai.callback.core import Callback, CancelFitException

    from pipeline import config, runner
    from pipeline.core.workspace import Workspace
    from pipeline.models import training
    from pipeline import kinds

    work = OUT / "data_loading"
    work.mkdir(parents=True, exist_ok=True)
    cfg = config.load(None, cwd=work, overrides=[
        f"run.name=loading_{size}", f"download.source=path:{SHARED_DATA / 'asl_alphabet_train_200'}",
        "download.subdir=", "datablock.cache=true", "train.arch=tf_efficientnet_lite0", "train.pretrained=true",
        "train.batch_size=64", f"train.image_size={size}"])
    with redirect_stdout(io.StringIO()):
        runner.run(cfg, ["download", "datablock"])
    ws = Workspace.from_config(cfg)
    kind = kinds.of(cfg)
    learn = kind.make_learner(kind.dataloaders(ws, cfg), cfg, ws)
    warm = 2

    class Wait(Callback):
        order = 99

        def before_train(self):
            self.mark, self.wait, self.total, self.n = time.perf_counter(), 0.0, 0.0, 0

        def before_batch(self):
            self.started = time.perf_counter()
            if self.iter >= warm:
                self.wait += self.started - self.mark

        def after_batch(self):
            now = time.perf_counter()
            if self.iter >= warm:
                self.total += now - self.mark
                self.n += 1
            self.mark = now
            if self.n >= batches:
                raise CancelFitException()

    wait = Wait()
    if not cache:
        cfg = config.load(None, cwd=work, overrides=[f"run.name=loading_{size}", "datablock.cache=false",
                                                     "train.arch=tf_efficientnet_lite0", f"train.image_size={size}"])
    with kind.training_data(learn, ws, cfg, None), training.quiet(learn), learn.no_logging():
        learn.fit(1, 1e-3, cbs=[wait])
    return {"share": wait.wait / wait.total, "wait_ms": 1000 * wait.wait / wait.n,
            "batch_ms": 1000 * wait.total / wait.n, "ips": 64 * wait.n / wait.total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    header("time waiting for data during training")
    if not (SHARED_DATA / "asl_alphabet_train_200").is_dir():
        print(f"skipped: {SHARED_DATA / 'asl_alphabet_train_200'} not found (set SHARED_DATA)")
        return 0
    print(f"data: {SHARED_DATA / 'asl_alphabet_train_200'}; tf_efficientnet_lite0, bs 64, "
          f"{a.batches} training batches after 2 warm-up")
    ok = True
    for size in a.sizes:
        for cache in (False, True):
            r = measure(size, cache, a.batches)
            name = f"{size}px, {'datablock.cache' if cache else 'image files'}"
            print(f"{name}: {r['wait_ms']:.0f} ms waiting per batch of {r['batch_ms']:.0f} ms ({r['ips']:.0f} images/s)")
            met = r["share"] <= 0.10
            ok &= met
            result(f"  data share {name}", 100 * r["share"], "%", "<= 10 %", met)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
