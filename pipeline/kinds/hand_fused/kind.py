"""The fused hand-crop kind (`datablock.input = "hand_crop"`, `train.arch = "hand_fused"`): a head on a frozen
backbone's embedding of the hand crop, alone or with the keypoints (`train.crop_fusion`). Its data is the hand-crop
kind's; `model.py` holds the classes its export pickles (and `embeddings.py` the embedding store), `graph.py` its
ONNX graph."""
from __future__ import annotations

from ...data import hands
from ..hand_crop.kind import HandCrop, _folder


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

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, store):
        """Under fastai the learner answers photos itself (its embeddings through the store), under the engine's
        lock; an ONNX graph reads the crops (and keypoints) as the fine-tuned crop model's does."""
        if engine.learn is None or tta:
            return super().probs(engine, paths, batch_size, tta, log, store)
        with engine.lock:
            p, found = engine.learn.photo_probs(paths, batch_size, log, _folder(store))
        return p.numpy(), found

    def read(self, engine, photo, detector):
        if engine.learn is None:
            return super().read(engine, photo, detector)
        det, img, points = hands.frame_detection(photo, detector)
        if det is None:
            return None, None
        with engine.lock:
            return engine.learn.crop_probs([det], [img])[0].numpy(), points

    def onnx_plan(self, learn, t):
        from .graph import graph_plan

        return graph_plan(learn)
