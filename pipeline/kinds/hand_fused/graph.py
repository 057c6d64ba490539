"""The fused hand-crop kind's ONNX graph: uint8 crops (and keypoint rows when it fuses them) in, the frozen backbone,
the head and the softmax."""
from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from ...data import hands
from . import embeddings
from .model import FusedLearner, FusedNet


class FusedGraph(nn.Module):
    """uint8 (N, S, S, 3) RGB crops, and float32 (N, 64) keypoint features when the model fuses them, to
    probabilities: `embeddings.to_tensor`'s float operations, the frozen backbone, the head and the softmax."""

    def __init__(self, model: FusedNet, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, crop, features=None):
        x = crop.permute(0, 3, 1, 2).float() / 255.0
        return torch.softmax(self.model((x - self.mean) / self.std, features), dim=1)


def _parity_batches(learn, batch: int):
    """(graph inputs, model inputs) over the validation crops and keypoints the DataLoaders kept."""
    from PIL import Image

    dls, photo = learn.dls, learn.photo
    for i in range(0, len(dls.valid_crops), batch):
        pngs = dls.valid_crops[i:i + batch]
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in pngs])
        x = embeddings.to_tensor(pngs, photo.mean, photo.std)
        if photo.fusion:
            f = dls.valid_feats[i:i + batch].float()
            yield (pixels, f.numpy()), (x, f)
        else:
            yield (pixels,), (x,)


def graph_plan(learn: FusedLearner):
    """The fused model's graph (`onnx_export.export` checks its parity): `crop` in, and `features` when it fuses the
    keypoints, both from one MediaPipe pass a client makes (the card's `hand_crop` and `onnx.features`)."""
    import copy

    from ...models import onnx_export
    from ..shared.graph import features_entry

    photo, size = learn.photo, learn.photo.size
    model = copy.deepcopy(learn.model).float().cpu().eval()
    names = ("crop", "features") if photo.fusion else ("crop",)
    example = (torch.zeros(2, size, size, 3, dtype=torch.uint8),) + ((torch.zeros(2, hands.N_FEATURES),) if photo.fusion else ())
    entry = {"name": "crop", "dtype": "uint8", "shape": ["batch", size, size, 3], "layout": "NHWC, RGB",
             "client_does": f"find the hand with MediaPipe Hands and cut the padded square around it "
                            f"(pipeline.kinds.hand_crop.data.crop, the card's hand_crop), {size}x{size} RGB; a photo with "
                            f"no hand: the whole frame, as the fastai export answers it"
                            + ("; from the same MediaPipe pass, the keypoint features (onnx.features; 64 zeros "
                               "with no hand)" if photo.fusion else ""),
             "graph_does": "to float, / 255, normalise (the backbone's mean/std), the frozen backbone, "
                           + ("concatenated with the keypoint features and their shape features, " if photo.fusion
                              else "") + "the head, softmax"}
    more = {"features": features_entry()} if photo.fusion else {}
    return onnx_export.Plan(model, FusedGraph(model, photo.mean, photo.std), names, example,
                            _parity_batches(learn, onnx_export.PARITY_BATCH), entry, more)
