"""The ONNX graphs several kinds share: a vision learner's (`image_plan`: uint8 images in, what fastai's validation
transforms do inside; the image kinds and the hand-crop kind) and the card's entry for a `features` input of
keypoint rows (`features_entry`: the landmark, fused and hand-network graphs). The export machinery itself (parity,
the card's `onnx` entry) is `models/onnx_export.py`."""
from __future__ import annotations

from ...data.hands import N_FEATURES
from ...models.onnx_export import PARITY_BATCH, Plan, cpu_copy


def _image_graph():
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

    return ImageGraph


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


def features_entry() -> dict:
    """The card's entry for a `features` input: float32 (N, 64) keypoint rows, and how they are made."""
    return {"name": "features", "dtype": "float32", "shape": ["batch", N_FEATURES], "features": _features_doc()}


def _features_doc() -> dict:
    from ...data import hands

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


def image_plan(learn, size: int, gray: bool) -> Plan:
    """An image learner's graph: uint8 (N, size, size, 3) RGB in, probabilities out."""
    import torch

    from ...models.training import normalisation

    ImageGraph = _image_graph()
    model = cpu_copy(learn)

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
