"""Benchmark 1: batched evaluation vs the published per-image loop, on the same learner and the same files.

The published recipe calls `learn.predict(path)` once per test image. The evaluate stage calls
`pipeline.kinds.load(...).predict` (one `test_dl`, `get_preds` in batches). Both run here, in this process, on the
same loaded export and the same files; the script prints images/second for each, the ratio (target >= 10x),
and checks that the predicted labels are identical and the probabilities agree to 1e-3 (evaluate runs convnets
channels-last, the loop does not: the same arithmetic in another order, so float rounding differs slightly).

The learner is the offline demo's (EfficientNet-Lite0, 64 px, scikit-learn digits) trained for one short
epoch, so the script needs no shared data; the test files are the demo's 306 held-out digit images, or
`--files DIR` (any folder of images, e.g. ../shared/data/massey_asl/a).

    python -m bench.eval_batched [--files DIR] [--limit N]
"""
from __future__ import annotations

import sys
import time

from bench._common import demo_learner_bench, predict_each, result


def main() -> int:
    args, work, pkl, files = demo_learner_bench(__doc__.split("\n\n")[0],
                                                "batched evaluation vs per-image learn.predict", "bench_eval")

    from pipeline import kinds

    model = kinds.load(pkl)
    learn = model.engine.learn
    model.predict(files[:8], args.batch_size)  # warm-up: first-call allocations, lazy imports
    predict_each(learn, files[:1])

    t0 = time.perf_counter()
    labels, _, probs, _ = model.predict(files, args.batch_size)
    batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    loop_labels, loop_probs = predict_each(learn, files)
    loop = time.perf_counter() - t0

    import torch

    # the floor under any batched path: the model's forward pass alone on already-decoded batches (as evaluate
    # runs it: channels-last)
    batches = [b[0] for b in learn.dls.test_dl(files, bs=args.batch_size)]
    model = learn.model.eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for x in batches:
            model(x.as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last))
        forward = time.perf_counter() - t0
    model.to(memory_format=torch.contiguous_format)

    same_labels = loop_labels == labels
    max_diff = float((loop_probs - torch.from_numpy(probs)).abs().max())
    n = len(files)
    result("per-image learn.predict", n / loop, "images/s", f"{1000 * loop / n:.1f} ms/image")
    result("evaluate stage (batched, bs %d)" % args.batch_size, n / batched, "images/s",
           f"{1000 * batched / n:.1f} ms/image, of which the model's forward pass alone {1000 * forward / n:.1f}")
    result("ceiling for any batched path on this machine (loop / forward alone)", loop / forward, "x")
    ratio = loop / batched
    result("ratio batched / per-image", ratio, "x", ">= 10x", ratio >= 10)
    result("identical predicted labels", f"{sum(a == b for a, b in zip(loop_labels, labels))}/{len(files)}",
           note="all", ok=same_labels)
    result("max |probability difference|", max_diff, note="< 1e-3", ok=max_diff < 1e-3)
    return 0 if ratio >= 10 and same_labels and max_diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
