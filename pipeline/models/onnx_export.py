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
  (`hand_crops.crop`, the card's `hand_crop`), and, when it fuses the keypoints, `features` as above, both from
  one MediaPipe pass (the card's `onnx.features`); the graph normalises the crop, runs the frozen backbone, the
  head and the softmax (fused_model.py builds it).
- The hand-network model (`datablock.input = "hand_net"`) takes `crop`, uint8 (N, 224, 224, 3) RGB, the hand
  network's upright crop (`hand_net.pixels`, the card's `hand_net`), and `features` as above; the graph runs
  MediaPipe's hand network rebuilt in torch (hand_net_torch.py) to its pooled feature, where the learner it is
  checked against read LiteRT's (hand_net_model.py builds it).

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
from ..data.hands import N_FEATURES
from . import card, onnx_engine

OPSET = 18
TOLERANCE = 1e-4        # max |p_onnx - p_fastai| the export must meet on the validation split, unless within
NOISE_FACTOR = 10       # this many times fastai's own float32 rounding on the worst batch (a deep convnet's
                        # float32 sums in another order differ by more than 1e-4: fine-tuned lite0, 1.7e-4 at 3e-5 noise)
PARITY_BATCH = 64


def _torch_modules():
    import torch
    from torch import nn

    class ImageGraph(nn.Module):
        """uint8 (N, H, W, 3) RGB → probabilities: fastai's IntToFloatTensor and Normalize, in the same float
        operations, around the model."""

        def __init__(self, model, mean, std, grayscale: bool):
            super().__init__()
            self.model, self.grayscale, self.normalise = model, grayscale, mean is not None
            self.register_buffer("mean", torch.as_tensor(mean if mean is not None else 0.0, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std if std is not None else 1.0, dtype=torch.float32))

        def forward(self, image):
            x = image.permute(0, 3, 1, 2).float()
            if self.grayscale:  # PIL's convert("L"): (R*19595 + G*38470 + B*7471 + 2**15) >> 16, exact in float32
                x = torch.floor((x[:, 0:1] * 19595 + x[:, 1:2] * 38470 + x[:, 2:3] * 7471 + 32768) / 65536)
            x = x / 255.0
            if self.normalise:
                x = (x - self.mean) / self.std
            return torch.softmax(self.model(x), dim=1)

    class LandmarkGraph(nn.Module):
        """float32 (N, 64) keypoint features → probabilities (the tabular model has no categorical inputs)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, features):
            return torch.softmax(self.model(features[:, :0].long(), features), dim=1)

    return ImageGraph, LandmarkGraph


def _image_batches(learn, grayscale: bool):
    """Over the validation split, decoded once: (uint8 NHWC RGB batch for the graph, the same batch through
    fastai's own batch transforms, as the model's inputs)."""
    import numpy as np
    import torch

    valid = learn.dls.valid
    tfms = valid.after_batch
    tfms.split_idx = 1  # as a validation DataLoader sets it when iterated: training-only augmentation off
    raw = learn.dls.test_dl(valid.items, with_labels=False, after_batch=[], bs=PARITY_BATCH, num_workers=0)
    for (xb,) in raw:
        pixels = xb.as_subclass(torch.Tensor).cpu().numpy().transpose(0, 2, 3, 1)
        if grayscale:  # R = G = B = L: the graph's luma gives L back exactly
            pixels = np.repeat(pixels, 3, axis=3)
        fastai_in = tfms((xb,))[0].as_subclass(torch.Tensor).cpu()
        yield np.ascontiguousarray(pixels, dtype=np.uint8), (fastai_in,)


def _landmark_batches(learn):
    """Over the validation split: (float32 feature rows for the graph, the model's (cats, conts) inputs)."""
    import torch

    for cats, conts, *_ in learn.dls.valid:
        conts = conts.as_subclass(torch.Tensor).cpu().float()
        yield conts.numpy(), (cats.as_subclass(torch.Tensor).cpu(), conts)


def features_entry() -> dict:
    """The card's entry for a `features` input: float32 (N, 64) keypoint rows, and how they are made."""
    return {"name": "features", "dtype": "float32", "shape": ["batch", N_FEATURES], "features": _features_doc()}


def _features_doc() -> dict:
    from ..data import hands

    return {"columns": hands.FEATURES, "made_by": "pipeline.data.hands.extract (MediaPipe Hands 0.10.9-0.10.21, one "
            "hand, static images)",
            "how": "the photo, EXIF-upright, centred on a black square with a border of "
                   f"{hands.PAD:g} x its longer side; MediaPipe Hands (min_detection_confidence "
                   f"{hands.MIN_CONFIDENCE:g}) finds 21 keypoints, looking again brightened (gamma "
                   f"{hands.RETRY_GAMMA:g}) and turned by {', '.join(str(90 * k) for k in hands.RETRY_TURNS)} "
                   f"degrees when it finds none, then with borders of {', '.join(f'{p:g}' for p in hands.RETRY_PADS)}, "
                   f"then all again at min_detection_confidence {hands.RETRY_CONFIDENCE:g} (pipeline.data.hands."
                   "Detector; keypoints found on another border are mapped to the first square's); the keypoints relative to the wrist, x mirrored when MediaPipe "
                   "says 'Right', scaled so the wrist-to-middle-knuckle distance is 1, then 1.0 (hand found). "
                   "No hand: 64 zeros (the model answers for it as it learned)."}


class Plan(NamedTuple):
    """How one learner exports (`Kind.export_onnx` asks the learner's kind for it)."""
    model: object       # the model's CPU float32 copy
    graph: object       # the nn.Module exported: the model inside what a client cannot be trusted to do
    input_names: tuple  # the graph's inputs, in its forward's order (the batch axis of each is dynamic)
    example: tuple      # an example input each, for torch's exporter
    batches: object     # (graph inputs, model inputs) over the validation split, for the parity check
    entry: dict         # the card's onnx.input (the first input)
    more: dict = {}     # further entries of the card's onnx (e.g. "features": the second input's)


def _cpu_copy(learn):
    return copy.deepcopy(learn.model).float().cpu().eval()


def landmark_plan(learn) -> Plan:
    """A hand-landmark learner's graph: float32 FEATURES rows in, probabilities out."""
    import torch

    _, LandmarkGraph = _torch_modules()
    model = _cpu_copy(learn)
    return Plan(model, LandmarkGraph(model), ("features",), (torch.zeros(2, N_FEATURES),),
                (((x,), m) for x, m in _landmark_batches(learn)), features_entry())


def image_plan(learn, size: int, gray: bool) -> Plan:
    """An image learner's graph: uint8 (N, size, size, 3) RGB in, probabilities out."""
    import torch

    ImageGraph, _ = _torch_modules()
    model = _cpu_copy(learn)
    from .training import normalisation

    mean, std = normalisation(learn.dls.valid)
    entry = {"name": "image", "dtype": "uint8", "shape": ["batch", size, size, 3], "layout": "NHWC, RGB",
             "client_does": f"decode, turn upright by the EXIF orientation, centre-crop to a square, resize to "
                            f"{size}x{size} bilinear (fastai's Resize at validation; pipeline.models.onnx_engine.load_image)"
                            + (", as gray copied into R, G and B (a colour photo works too: the graph takes its "
                               "luma)" if gray else ""),
             "graph_does": "to float, " + ("RGB to gray (PIL's integer luma), " if gray else "") + "/ 255, "
                           + ("normalise (the card's normalisation), " if mean is not None else "")
                           + "the model, softmax",
             "why": "uint8 HxWx3 is what every decoder returns, so scale, channel order, layout, gray and "
                    "mean/std stay inside the graph where a client cannot get them wrong; 4x smaller than float"}
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    return Plan(model, ImageGraph(model, mean, std, gray), ("image",), (example,),
                (((x,), m) for x, m in _image_batches(learn, gray)), entry)


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
