"""The fused hand-crop model (the kind: `HandFused`, `train.arch = "hand_fused"`): the
crop's pooled embedding is computed once per crop and backbone (`embeddings.py`), and a fold trains only the head,
in seconds: on the embedding alone, or concatenated with the 64 keypoint features and their shape features
(`train.crop_fusion = "keypoints"`: early fusion). Its export is one `FusedNet` (backbone + head) in a
`FusedLearner`, which answers a photo: `load_learner(pkl).predict("photo.jpg")` finds the hand in that process.
Its ONNX graph (`graph_plan`) reads the uint8 crop, and the keypoint features when it fuses them, by name.

Its own module, importing torch at the top, because `load_learner` unpickles `FusedNet`, `PhotoDls` and
`FusedLearner` by their class names (the model card says the export needs this package).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from fastai.learner import Learner
from torch import nn

from ...data import hands
from ...models.card import BATCH
from ..hand_crop import data as hand_crops
from ..shared.model import N_SHAPE, shape_features
from . import embeddings


def embedding_dataloaders(ws, bs: int, size: int, backbone: str, pretrained: bool, fusion: bool):
    """DataLoaders of (embedding of the `size`-pixel crop by the frozen `backbone`, keypoint features when `fusion`,
    label) over the persisted split, `bs` a batch, embeddings through the store; they carry what the learner needs:
    the frozen `body`, its `embedding_key` and the `photo` settings (`HandFused`)."""
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.data.transforms import Pipeline

    df, crops, vocab = hand_crops.split_crops(ws, bs, size)
    model, norm = embeddings.body(backbone, pretrained, ws.data)
    key = embeddings.settings(backbone, size, model, norm)
    emb = embeddings.embed(model, list(crops), list(crops.values()), key, ws.data)
    feats = torch.from_numpy(embeddings.keypoint_features(ws, df))
    y = torch.tensor([vocab.index(label) for label in df["label"]])
    items = [(e, f, c) if fusion else (e, c) for e, f, c in zip(emb, feats, y)]
    valid = df["is_valid"].to_numpy()
    # no batch transforms, but an empty Pipeline where fastai and training.normalisation look for them
    dls = DataLoaders(DataLoader([it for it, v in zip(items, valid) if not v], bs=bs, shuffle=True, drop_last=True,
                                 after_batch=Pipeline([])),
                      DataLoader([it for it, v in zip(items, valid) if v], bs=bs, after_batch=Pipeline([])),
                      path=ws.scratch)
    dls.vocab, dls.n_inp, dls.after_batch = vocab, 2 if fusion else 1, ()
    dls.body, dls.embedding_key = model, key
    dls.photo = PhotoDls(vocab, size, norm["mean"], norm["std"], fusion)
    # the validation crops and keypoints as the photos gave them: the ONNX export checks its parity on them
    dls.valid_crops = [png for png, v in zip(crops.values(), valid) if v]
    dls.valid_feats = feats[torch.from_numpy(valid.astype(bool))]
    return dls


class FusedNet(nn.Module):
    """A frozen backbone's pooled embedding of the crop (`body`, a timm model without its classifier), optionally
    concatenated with the 64 keypoint features and their `shape_features`, into one MLP head. `forward(x, feats)`
    takes either the crop (float, normalised as the backbone wants) or its precomputed embedding."""

    def __init__(self, body: nn.Module, n_emb: int, fusion: bool, n_out: int, ps: float):
        super().__init__()
        self.body, self.fusion = body, fusion
        n_in = n_emb + (len(hands.FEATURES) + N_SHAPE if fusion else 0)
        self.head = nn.Sequential(nn.BatchNorm1d(n_in), nn.Dropout(ps), nn.Linear(n_in, 512), nn.ReLU(inplace=True),
                                  nn.BatchNorm1d(512), nn.Dropout(ps), nn.Linear(512, n_out))
        for p in self.body.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.body.eval()  # frozen: its batch-norm statistics stay ImageNet's
        return self

    def forward(self, x, feats=None):
        if x.dim() == 4:
            x = self.body(x)
        if self.fusion:
            x = torch.cat([x, feats, shape_features(feats)], dim=1)
        return self.head(x)


def head_params(model: FusedNet):
    """The parameter groups of a `FusedNet` the optimiser trains: the head's alone."""
    return [list(model.head.parameters())]


class PhotoDls:
    """What a `FusedLearner` keeps of its DataLoaders in an export: the vocab, the crop size, the backbone's input
    normalisation and whether it reads keypoints."""

    def __init__(self, vocab: list, size: int, mean, std, fusion: bool):
        self.vocab, self.size, self.mean, self.std, self.fusion = list(vocab), size, list(mean), list(std), fusion
        self.device = torch.device("cpu")

    def cpu(self):
        return self

    def new_empty(self):
        return self

    def to(self, device):
        self.device = torch.device(device)
        return self


class FusedLearner(Learner):
    """A Learner over a `FusedNet`: it trains on embedding DataLoaders (`dataloaders`), and its export
    answers photos: `predict("photo.jpg")` (label, index, probabilities), finding the hand in this process."""

    photo: PhotoDls  # set by `make_learner`

    def export(self, fname="export.pkl", pickle_module=None, pickle_protocol=2):
        import pickle

        dls, self.dls = self.dls, self.photo
        try:
            super().export(fname, pickle_module=pickle_module or pickle, pickle_protocol=pickle_protocol)
        finally:
            self.dls = dls

    reads = ("crops", "photos", "folder", "features")  # what it answers itself (`FastaiEngine.run`)

    @property
    def image_size(self) -> int:
        return self.photo.size

    def answer(self, inputs: dict, batch_size: int = BATCH, log=print):
        """Probabilities for PNG `crops` of `photos` and their keypoint `features`: the crops' embeddings through the
        store in the data `folder` (computed once per crop and backbone) when given, else the whole model on them."""
        pngs, folder = inputs["crops"], inputs["folder"]
        x = (embeddings.embed(self.model.body, inputs["photos"], pngs, self.embedding_key, folder, log, batch_size)
             if folder is not None else embeddings.to_tensor(pngs, self.photo.mean, self.photo.std))
        feats = torch.as_tensor(np.asarray(inputs["features"], np.float32))
        self.model.eval()
        with torch.no_grad():
            logits = torch.cat([self.model(x[i:i + batch_size], feats[i:i + batch_size])
                                for i in range(0, len(x), batch_size)])
        return torch.softmax(logits, dim=1)

    def photo_probs(self, paths: list, batch_size: int = BATCH, log=print, folder: Path | None = None):
        """(probabilities, hand found) for photos: crops through the stores in `folder` (and their embeddings,
        when `folder` is given), else found in this process."""
        pngs, found, dets = hand_crops.photo_crops(paths, self.photo.size, folder, log)
        inputs = {"crops": pngs, "photos": paths, "folder": folder, "features": hands.features_of(dets)}
        return self.answer(inputs, batch_size, log), found

    def crop_probs(self, dets: list, images: list):
        """Probabilities for upright RGB PIL `images` whose hands `dets` found (a frame), `BATCH` crops a step."""
        pngs = [hand_crops.png(hand_crops.crop_image(im, r, self.photo.size)) for im, r in zip(images, dets)]
        return self.answer({"crops": pngs, "photos": [None] * len(pngs), "folder": None,
                            "features": hands.features_of(dets)}, BATCH)

    def predict(self, item, *args, **kwargs):
        probs, found = self.photo_probs([item], log=lambda m: None)
        if not found[0]:
            warnings.warn(f"no hand found in {item}: the label is the model's answer for the whole frame",
                          stacklevel=2)
        idx = int(probs[0].argmax())
        return self.photo.vocab[idx], torch.tensor(idx), probs[0]


