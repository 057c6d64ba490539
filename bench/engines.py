"""Benchmark 6: the inference engines on the same export and the same files, in one run: the published per-image
`learn.predict` loop, fastai batched (`pipeline.kinds.load(...).predict`, what evaluate runs) and onnxruntime batched
(`pipeline.models.onnx_engine`, `evaluate.engine = "onnx"`), each beside its own forward-pass floor (the model alone on
batches decoded beforehand: fastai's normalised tensors channels-last, the graph's uint8 NHWC arrays).

Engines and floors are timed as the best of 3 runs (the per-image loop once: it takes longest). Targets: each
batched engine within 1.3x of its floor; the best engine >= 10x the per-image loop. It also checks
that the three give the same labels and the engines' probabilities agree to 1e-4.

The learner is the offline demo's (EfficientNet-Lite0, 64 px, scikit-learn digits) trained one short epoch, as in
bench/eval_batched.py, so no shared data is needed; the files are the demo's 306 held-out digits or `--files DIR`.

    python -m bench.engines [--files DIR] [--limit N] [--batch-size 128]
"""
from __future__ import annotations

import sys
import time

from bench._common import demo_learner_bench, predict_each, result


def timed(fn, repeat: int = 1):
    """(fn's result, its best wall time over `repeat` runs)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> int:
    args, work, pkl, files = demo_learner_bench(
        __doc__.split("\n\n")[0], "inference engines: per-image learn.predict, fastai batched, onnxruntime batched",
        "bench_engines")

    import numpy as np
    import torch

    from pipeline import kinds

    fa, onnx = kinds.load(pkl, "fastai"), kinds.load(pkl, "onnx")
    learn, ort = fa.engine.learn, onnx.engine
    n, bs = len(files), args.batch_size
    print(f"batch size {bs}; onnxruntime {ort.threads} intra-op thread(s)")

    fa.predict(files[:8], bs)  # warm-up: first-call allocations, lazy imports
    onnx.predict(files[:8], bs)
    predict_each(learn, files[:1])

    (loop_labels, loop_probs), t_loop = timed(lambda: predict_each(learn, files))
    (fa_labels, _, fa_probs, _), t_fastai = timed(lambda: fa.predict(files, bs), repeat=3)
    (ort_labels, _, ort_probs, _), t_ort = timed(lambda: onnx.predict(files, bs), repeat=3)

    # floors: each engine's model alone on batches decoded beforehand (best of 3, after a warm-up pass)
    batches = [b[0].as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last)
               for b in learn.dls.test_dl(files, bs=bs)]
    model = learn.model.eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        _, f_fastai = timed(lambda: [model(x) for x in batches], repeat=4)
    model.to(memory_format=torch.contiguous_format)
    arrays = np.stack([ort.load(f) for f in files])
    _, f_ort = timed(lambda: [ort.probs(arrays[i:i + bs]) for i in range(0, n, bs)], repeat=4)

    print()
    print("| engine | images/s | ms/image | forward-pass floor, ms/image | engine / floor | vs per-image loop |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [("per-image learn.predict", t_loop, None), ("fastai batched", t_fastai, f_fastai),
            ("onnxruntime batched", t_ort, f_ort)]
    for name, t, floor in rows:
        fl = f"{1000 * floor / n:.2f}" if floor else "–"
        ratio = f"{t / floor:.2f}x" if floor else "–"
        print(f"| {name} | {n / t:.0f} | {1000 * t / n:.2f} | {fl} | {ratio} | {t_loop / t:.1f}x |")
    print()
    ok = True
    for name, t, floor in rows[1:]:
        met = t / floor <= 1.3
        ok &= met
        result(f"{name} / its forward-pass floor", t / floor, "x", "<= 1.3x", met)
    best_name, best_t, _ = min(rows[1:], key=lambda row: row[1])
    best = t_loop / best_t
    result(f"best engine ({best_name}) vs per-image loop", best, "x", ">= 10x", best >= 10)
    result("ceiling for fastai batched (loop / its floor)", t_loop / f_fastai, "x")
    result("ceiling for onnxruntime batched (loop / its floor)", t_loop / f_ort, "x")
    same = loop_labels == list(fa_labels) == list(ort_labels)
    agree = sum(a == b == c for a, b, c in zip(loop_labels, fa_labels, ort_labels))
    result("identical predicted labels (loop, fastai, onnxruntime)", f"{agree}/{n}", note="all", ok=same)
    diff = float(np.abs(ort_probs - fa_probs).max())
    result("max |p_onnxruntime - p_fastai batched|", diff, note="<= 1e-4", ok=diff <= 1e-4)
    result("max |p_fastai batched - p_loop|", float(np.abs(fa_probs - loop_probs.numpy()).max()))
    return 0 if ok and best >= 10 and same and diff <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
