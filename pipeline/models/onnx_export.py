"""ONNX export of a trained learner, with a parity check against fastai on the validation split: the graph that
`predict --engine onnx`, `evaluate.engine = "onnx"`, `serve --engine onnx` (pipeline/models/onnx_engine.py) and any
ONNX runtime outside Python run. The train stage writes it beside the `.pkl` and records the parity in the model card and
metrics.json; an export that fails parity (|Δp| over TOLERANCE and over NOISE_FACTOR x fastai's own float32 rounding
on the worst batch, or any top-1 label changed) is an error, and no `.onnx` is written.

What a client cannot guess goes inside the graph; what it must do is written in the card's `onnx.input`:

- Image models take `image`: uint8 (N, H, W, 3) RGB at `image_size`, i.e. a decoded photo, turned upright by its
  EXIF tag, centre-cropped to a square and resized bilinearly (what fastai's `Resize` does at validation;
  `onnx_engine.load_image` is that step without fastai). The graph converts to float, to gray for a grayscale
  model (PIL's integer luma, bit for bit), divides by 255, normalises, runs the model and the softmax. Why uint8
  HxWx3 and not float 0-1 NCHW: it is what every decoder hands over (PIL, a browser canvas, OpenCV after BGR→RGB),
  so a client cannot get the scale, the channel order, the layout, the gray conversion or the mean/std wrong,
  and a batch is 4x smaller.
- Landmark models take `features`: float32 (N, 64), the rows `hands.extract` makes (the card's `onnx.input.features`
  says how); the graph is the tabular model (with its shape features for "coords+shape") and the softmax.
- The fused hand model (`hand_fused`) takes `crop`, uint8 (N, S, S, 3) RGB, the padded square around the hand
  (`kinds.hand_crop.data.crop`, the card's `hand_crop`), and, when it fuses the keypoints, `features` as above, both from
  one MediaPipe pass (the card's `onnx.features`); the graph normalises the crop, runs the frozen backbone, the
  head and the softmax (`kinds/hand_fused/graph.py` builds it).
- The hand-network model (`datablock.input = "hand_net"`) takes `crop`, uint8 (N, 224, 224, 3) RGB, the hand
  network's upright crop (`kinds.hand_net.data.pixels`, the card's `hand_net`), and `features` as above; the graph runs
  MediaPipe's hand network rebuilt in torch (`kinds/hand_net/network.py`) to its pooled feature, where the learner it is
  checked against read LiteRT's (`kinds/hand_net/graph.py` builds it).

The output is `probs`: float32 (N, len(vocab)), columns in the card's vocab order. The batch axis is dynamic. The
graph's metadata (`metadata_props`) keeps the sha256 of that vocab (`card.VOCAB_KEY`), which the onnx engine checks
the card's vocab against.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import NamedTuple

from ..core.errors import PipelineError
from ..core.workspace import atomic_path, sha256_file
from . import card, onnx_engine

OPSET = 18
TOLERANCE = 1e-4        # max |p_onnx - p_fastai| the export must meet on the validation split, unless within
NOISE_FACTOR = 10       # this many times fastai's own float32 rounding on the worst batch (a deep convnet's
                        # float32 sums in another order differ by more than 1e-4: fine-tuned lite0, 1.7e-4 at 3e-5 noise)
PARITY_BATCH = 64


class Plan(NamedTuple):
    """How one learner exports (`Kind.export_onnx` asks the learner's kind for it)."""
    model: object       # the model's CPU float32 copy
    graph: object       # the nn.Module exported: the model inside what a client cannot be trusted to do
    input_names: tuple  # the graph's inputs, in its forward's order (the batch axis of each is dynamic)
    example: tuple      # an example input each, for torch's exporter
    batches: object     # (graph inputs, model inputs) over the validation split, for the parity check
    entry: dict         # the card's onnx.input (the first input)
    more: dict = {}     # further entries of the card's onnx (e.g. "features": the second input's)


def cpu_copy(learn):
    return copy.deepcopy(learn.model).float().cpu().eval()


def parity(learn_model, sess, input_names: tuple, batches) -> dict:
    """max |p_onnx - p_fastai| and top-1 agreement of the graph in `sess` (inputs `input_names`) against fastai's
    model over `batches` (with the model inputs of the batch where the difference is largest, under "_worst")."""
    import numpy as np
    import torch

    worst, same, n, worst_in = 0.0, 0, 0, None
    for onnx_in, model_in in batches:
        with torch.inference_mode():
            p_fastai = torch.softmax(learn_model(*model_in).float(), dim=1).numpy()
        p_onnx = sess.run(None, dict(zip(input_names, onnx_in)))[0]
        diff = float(np.abs(p_onnx - p_fastai).max())
        if diff >= worst:
            worst, worst_in = diff, model_in
        same += int((p_onnx.argmax(1) == p_fastai.argmax(1)).sum())
        n += len(p_fastai)
    return {"split": "valid", "items": n, "max_abs_prob_diff": worst, "top1_agreement": same / n if n else 1.0,
            "tolerance": TOLERANCE, "_worst": worst_in}


def float32_noise(model, model_in) -> float:
    """max |p_float32 - p_float64| of fastai's own model on `model_in`: how far float32 rounding alone moves it."""
    import torch

    m64 = copy.deepcopy(model).double()
    with torch.inference_mode():
        p32 = torch.softmax(model(*model_in), dim=1)
        p64 = torch.softmax(m64(*(x.double() if x.is_floating_point() else x for x in model_in)), dim=1)
    return float((p32.double() - p64).abs().max())


def export(learn, path: Path, plan: Plan, family: str, log=print) -> dict:
    """Write `path` (opset OPSET, dynamic batch) as `plan` says after checking parity on `learn`'s validation split;
    return the model card's `onnx` entry (`family`: the input the graph reads, `Kind.input`). A graph that misses
    the tolerance or changes a top-1 label is an error (`PipelineError`) and nothing is written. The export and the
    check run on a CPU copy of the model."""
    import onnx
    import torch

    t0 = time.perf_counter()
    model, names = plan.model, plan.input_names
    batch = torch.export.Dim("batch")
    with atomic_path(path) as tmp:
        with _quiet_exporter():
            torch.onnx.export(plan.graph, tuple(plan.example), str(tmp), input_names=list(names),
                              output_names=["probs"], opset_version=OPSET, dynamo=True, external_data=False,
                              dynamic_shapes={n: {0: batch} for n in names}, verbose=False)
        graph = onnx.load(str(tmp), load_external_data=False)
        graph.metadata_props.add(key=card.VOCAB_KEY, value=card.vocab_sha256(learn.dls.vocab))
        onnx.save(graph, str(tmp))
        check = parity(model, onnx_engine.session(tmp), names, plan.batches)
        worst_in = check.pop("_worst")
        if check["max_abs_prob_diff"] > TOLERANCE or check["top1_agreement"] < 1.0:
            noise = float32_noise(model, worst_in) if worst_in is not None else float("nan")
            check["float32_noise"] = noise
            check["tolerance"] = max(TOLERANCE, NOISE_FACTOR * noise) if noise == noise else TOLERANCE
            if not (check["max_abs_prob_diff"] <= check["tolerance"] and check["top1_agreement"] == 1.0):
                raise PipelineError(
                    f"ONNX export fails parity on the validation split ({check['items']} items): max |p_onnx - "
                    f"p_fastai| {check['max_abs_prob_diff']:.2e} (limit {TOLERANCE:g}, or {NOISE_FACTOR} x fastai's "
                    f"own float32 rounding), top-1 agreement {check['top1_agreement']:.2%} (must be 100 %); on that "
                    f"batch fastai's own float32 result is {noise:.1e} from float64; no {path.name} written")
        opset = max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    check["seconds"] = round(time.perf_counter() - t0, 1)
    log(f"ONNX graph {path} ({family}, opset {opset}): parity on {check['items']} validation items, max |Δp| "
        f"{check['max_abs_prob_diff']:.1e}, top-1 agreement {check['top1_agreement']:.0%}")
    import onnxruntime

    return {"file": Path(path).name, "sha256": sha256_file(path), "family": family, "opset": opset,
            "input": plan.entry, **plan.more,
            "output": {"name": "probs", "dtype": "float32", "shape": ["batch", len(learn.dls.vocab)],
                       "columns": "vocab, in order", "is": "softmax probabilities"},
            "parity": check, "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                                          "onnxruntime": onnxruntime.__version__}}


class _quiet_exporter:
    """torch's exporter prints its progress and logs warnings about decompositions: neither says anything to a
    user of this tool (a failure still raises)."""

    def __enter__(self):
        import contextlib
        import io
        import logging
        import warnings

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
            logger = logging.getLogger(name)
            self._stack.callback(logger.setLevel, logger.level)
            logger.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False
