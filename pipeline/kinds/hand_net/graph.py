"""The hand-network kind's ONNX graph (both of its models): the uint8 crop and the keypoint rows in, MediaPipe's
hand network rebuilt in torch (`network.py`) up to its pooled feature, the trained head."""
from __future__ import annotations

import torch
from torch import nn

from ...core.errors import PipelineError
from ...data.hands import FEATURES
from . import data as hand_net
from .model import HandNetModel


class HandNetGraph(nn.Module):
    """uint8 (N, SIZE, SIZE, 3) RGB crops (`hand_net.pixels`) and float32 (N, 64) keypoint rows to probabilities:
    / 255, MediaPipe's hand network rebuilt in torch (`network.py`) up to its pooled feature, zeroed where the
    rows' no-hand flag (their last column) is 0, beside the rows into the trained `HandNetModel`, softmax."""

    def __init__(self, net: nn.Module, model: HandNetModel):
        super().__init__()
        self.net, self.model = net, model

    def forward(self, crop, features):
        emb = self.net(crop.permute(0, 3, 1, 2).float() / 255.0) * features[:, -1:]
        return torch.softmax(self.model(features[:, :0].long(), torch.cat([features, emb], dim=1)), dim=1)


def _parity_batches(learn, batch: int):
    """(graph inputs, model inputs) over the validation split: each photo's uint8 crop and keypoint row for the
    graph, the row beside its LiteRT embedding (as the learner trained on it) for the model."""
    import numpy as np

    items, photos = learn.dls.valid.items, learn.dls.valid_photos
    for start in range(0, len(items), batch):
        part = items.iloc[start:start + batch]
        conts = torch.from_numpy(part[hand_net.COLUMNS].to_numpy(np.float32))
        crops = np.zeros((len(part), hand_net.SIZE, hand_net.SIZE, 3), np.uint8)
        for j, p in enumerate(part["path"]):
            path, det = photos[p]
            if det[0]:
                crops[j] = hand_net.photo_pixels(path, det)
        yield (crops, conts[:, :len(FEATURES)].numpy()), (torch.zeros(len(part), 0, dtype=torch.long), conts)


def graph_plan(learn):
    """The graph (`HandNetGraph`; `onnx_export.export` checks its parity against the learner, whose embedding is
    LiteRT's): `crop` and `features` in, both from one MediaPipe pass a client makes (the card's `hand_net` and
    `onnx.features`)."""
    import copy

    from ...models import onnx_export
    from ..shared.graph import features_entry
    from . import network

    if not hasattr(learn.dls, "valid_photos"):
        raise PipelineError("the hand-network model's ONNX export checks its parity on the validation photos, and "
                            "these DataLoaders do not have them: export it from the train stage")
    model = copy.deepcopy(learn.model).float().cpu().eval()
    net = network.load(hand_net.network_path()).float().eval()
    size = hand_net.SIZE
    example = (torch.zeros(2, size, size, 3, dtype=torch.uint8), torch.zeros(2, len(FEATURES)))
    entry = {"name": "crop", "dtype": "uint8", "shape": ["batch", size, size, 3], "layout": "NHWC, RGB",
             "client_does": f"find the hand with MediaPipe Hands; cut the hand network's crop of it: the photo "
                            f"(EXIF-upright) turned so wrist -> keypoint 9 points up, the square of {hand_net.SCALE:g} "
                            f"x the keypoints' box there, {size}x{size} bilinear, mirrored when MediaPipe says Right "
                            f"(pipeline.kinds.hand_net.data.pixels, the card's hand_net); from the same MediaPipe pass, the "
                            f"keypoint features (onnx.features). A photo with no hand: any crop (zeros) beside the 64 "
                            f"zeros",
             "graph_does": f"to float, / 255, MediaPipe's hand network ({hand_net.NETWORK} rebuilt in torch) up to "
                           f"its pooled {hand_net.N_EMB}-value feature, zeroed where the features' hand flag is 0, "
                           f"{model.graph_does}, softmax"}
    return onnx_export.Plan(model, HandNetGraph(net, model), ("crop", "features"), example,
                            _parity_batches(learn, onnx_export.PARITY_BATCH), entry,
                            {"features": features_entry()})
