"""MediaPipe's hand-landmark network as a PyTorch module (`pipeline.kinds.hand_net.network`) beside LiteRT: the ops
read from the flatbuffer, the embedding's parity on real photos, and ms per photo of each on one thread.

The photos are asl_alphabet_test's (../shared/data, or `--photos DIR`), resized to 224x224 RGB / 255. LiteRT runs
the .tflite as the hand_net embedding does (`experimental_preserve_all_tensors`, its pooled Mean read back), one
photo an invoke; torch runs the module photo by photo and in one batch, in the default memory format and in
channels_last (the faster one on CPU). Times are the best of `--repeat` passes.
Target: max |Δ| <= 1e-3 on the 1152 values. With `--onnx`, the module is also exported (dynamo, dynamic batch) and
onnxruntime's embedding compared.

    OMP_NUM_THREADS=1 taskset -c 1 python -m bench.hand_net_torch [--photos DIR] [--repeat 3] [--onnx]
"""
from __future__ import annotations

import argparse
import collections
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench._common import SHARED_DATA, header, result


def best_ms(fn, repeat: int, count: int) -> float:
    """fn's best wall time over `repeat` runs, in ms per photo of `count`."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / count


def op_counts(path: Path) -> collections.Counter:
    from ai_edge_litert import schema_py_generated as S

    m = S.Model.GetRootAsModel(path.read_bytes(), 0)
    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    codes = [max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(m.OperatorCodesLength())]
    g = m.Subgraphs(0)
    return collections.Counter(names[codes[g.Operators(i).OpcodeIndex()]] for i in range(g.OperatorsLength()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, default=SHARED_DATA / "asl_alphabet_test")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--onnx", action="store_true", help="also export to ONNX and compare onnxruntime")
    a = p.parse_args(argv)

    import torch
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    from pipeline.kinds.hand_net import network as hand_net_torch

    torch.set_num_threads(1)
    header("hand_landmark_full.tflite as a PyTorch module vs LiteRT, one thread")
    path = hand_net_torch.default_path()
    print(f"model: {path}")
    print("tflite ops: " + ", ".join(f"{k} {v}" for k, v in op_counts(path).most_common()))
    files = sorted(a.photos.glob("*.jpg"))
    if not files:
        print(f"no photos in {a.photos}")
        return 1
    photos = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224)), np.float32) / 255 for f in files])
    t0 = time.perf_counter()
    net = hand_net_torch.load(path)
    result("torch module load", (time.perf_counter() - t0) * 1000, "ms", f"{len(net.ops)} ops kept, "
           f"{sum(q.numel() for q in net.parameters())} parameters")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    mean = next(d["index"] for d in interp.get_tensor_details() if d["name"] == hand_net_torch.EMBEDDING)

    def litert_all():
        out = []
        for photo in photos:
            interp.set_tensor(inp, photo[None])
            interp.invoke()
            out.append(interp.get_tensor(mean)[0].copy())
        return np.stack(out)

    nchw = torch.from_numpy(np.ascontiguousarray(photos.transpose(0, 3, 1, 2)))

    def torch_each():
        with torch.no_grad():
            return np.concatenate([net(nchw[i:i + 1]).numpy() for i in range(len(nchw))])

    def torch_batch():
        with torch.no_grad():
            return net(nchw).numpy()

    theirs, ours, batched = litert_all(), torch_each(), torch_batch()
    diff = np.abs(ours - theirs)
    result("photos", len(files))
    result("max |Δ| embedding, photo by photo", float(diff.max()), "", "<= 1e-3", ok=bool(diff.max() <= 1e-3))
    result("max |Δ| embedding, one batch", float(np.abs(batched - theirs).max()), "", "<= 1e-3",
           ok=bool(np.abs(batched - theirs).max() <= 1e-3))
    result("mean |Δ| embedding", float(diff.mean()), "", f"embedding values up to {np.abs(theirs).max():.3g}")
    result("LiteRT (XNNPACK), photo by photo", best_ms(litert_all, a.repeat, len(files)), "ms/photo")
    result("torch, photo by photo", best_ms(torch_each, a.repeat, len(files)), "ms/photo")
    result(f"torch, one batch of {len(files)}", best_ms(torch_batch, a.repeat, len(files)), "ms/photo")
    net.to(memory_format=torch.channels_last)  # NHWC in memory: the CPU convolutions' faster layout
    nchw = nchw.contiguous(memory_format=torch.channels_last)
    gap = float(np.abs(torch_batch() - theirs).max())
    result("max |Δ| embedding, channels_last", gap, "", "<= 1e-3", ok=gap <= 1e-3)
    result("torch channels_last, photo by photo", best_ms(torch_each, a.repeat, len(files)), "ms/photo")
    result(f"torch channels_last, one batch of {len(files)}", best_ms(torch_batch, a.repeat, len(files)), "ms/photo")
    net.to(memory_format=torch.contiguous_format)
    nchw = nchw.contiguous()
    if a.onnx:
        onnx_check(net, nchw, theirs)
    return 0


def onnx_check(net, nchw, theirs) -> None:
    """Export the module (dynamic batch) and compare onnxruntime's embedding with LiteRT's."""
    import onnxruntime as ort
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hand_net.onnx"
        batch = torch.export.Dim("batch")
        torch.onnx.export(net, (nchw[:2],), str(out), input_names=["image"], output_names=["embedding"],
                          dynamo=True, external_data=False, dynamic_shapes={"x": {0: batch}}, verbose=False)
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"image": nchw.numpy()})[0]
    gap = float(np.abs(got - theirs).max())
    result("max |Δ| embedding, onnxruntime of the export vs LiteRT", gap, "", "<= 1e-3", ok=gap <= 1e-3)


if __name__ == "__main__":
    raise SystemExit(main())
