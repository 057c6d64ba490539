"""The fused hand-crop kind (`datablock.input = "hand_crop"`, `train.arch = "hand_fused"`): a head on a frozen
backbone's embedding of the hand crop, alone or with the keypoints (`train.crop_fusion`). Its data is the hand-crop
kind's; `model.py` holds the classes its export pickles (and `embeddings.py` the embedding store), `graph.py` its
ONNX graph."""
from __future__ import annotations

from ..hand_crop.kind import HandCrop


class HandFused(HandCrop):
    """A head on a frozen backbone's embedding of the hand crop (+ the keypoints: `train.crop_fusion`)."""
    name, archs, channels_last = "hand-crop embedding head", ("hand_fused",), False

    def check_arch(self, arch: str, also: str = "") -> None:
        pass

    def recipe(self, cfg) -> str:
        t = cfg.train
        return (super().recipe(cfg) + f", frozen {t.crop_backbone}"
                + (" + keypoints" if t.crop_fusion == "keypoints" else ""))

    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        """DataLoaders of (crop embedding, keypoint features, label) over the persisted split, embeddings through the
        store; they carry what the learner needs: the frozen `body`, its `embedding_key` and the `photo` settings."""
        from .model import embedding_dataloaders

        t = cfg.train
        return embedding_dataloaders(ws, batch_size or t.batch_size, t.image_size, t.crop_backbone, t.pretrained,
                                     t.crop_fusion == "keypoints")

    def learner(self, dls, t, n_in: int, common: dict, ws):
        """A `FusedLearner` whose optimiser trains only the head of a `FusedNet` on `dls`' frozen body."""
        from .model import FusedLearner, FusedNet, head_params

        n_emb = int(dls.train.dataset[0][0].shape[0])
        model = FusedNet(dls.body, n_emb, t.crop_fusion == "keypoints", len(dls.vocab), t.head_dropout)
        learn = FusedLearner(dls, model, splitter=head_params, **common)
        learn.photo, learn.embedding_key = dls.photo, dls.embedding_key
        return learn

    def recognises(self, learn) -> bool:
        from .model import FusedLearner

        return isinstance(learn, FusedLearner)

    def onnx_plan(self, learn, t):
        from .graph import graph_plan

        return graph_plan(learn)
