"""The hand-keypoint kind (`datablock.input = "landmarks"`, `train.arch = "landmark_mlp"`): MediaPipe's 21 keypoints
of each photo (pipeline/data/hands/, through the detection store) as 64 features, fastai's tabular MLP on them
(hand_model.py). Its engine input is `features`; its ONNX graph reads float keypoint rows."""
from __future__ import annotations

from pathlib import Path

from ...core import artifacts
from ...core.errors import PipelineError
from ...data import hands
from .base import Kind


class Landmarks(Kind):
    """fastai's tabular MLP on MediaPipe's hand keypoints."""
    name, input, archs, title = "hand landmarks", "landmarks", ("landmark_mlp",), "hand keypoints"
    finds_hands, writes = True, (artifacts.LANDMARKS,)
    store = staticmethod(hands.store)

    def prepare(self, df, root: Path, cfg, ws, log) -> list[Path]:
        """landmarks.csv (path, hand found, handedness, score, the model's features) for every image of the split,
        the detection rate per class in the log, and batch.png: training images with their keypoints drawn."""
        from ...core.workspace import write_csv

        feats = hands.extract([root / p for p in df["path"]], log, store=hands.store(ws.data, log))
        feats.insert(0, "path", df["path"].to_numpy())
        rate = feats["hand_found"].groupby(df["label"].to_numpy()).mean().sort_values()
        log("hand found per class, lowest first: " + ", ".join(f"{k} {v:.0%}" for k, v in rate.head(6).items()))
        train = df[~df["is_valid"]].sample(n=min(16, int((~df["is_valid"]).sum())), random_state=0)
        return [write_csv(ws.artifact("datablock", artifacts.LANDMARKS), feats),
                hands.plot_landmarks([root / p for p in train["path"]], list(train["label"]),
                                     ws.artifact("datablock", artifacts.BATCH_PNG), "training images: hand landmarks")]

    def warm(self, paths: list, cfg, folder: Path, log) -> int:
        return hands.warm(paths, hands.store(folder, log), log)[1]

    def keypoint_table(self, ws, cfg, batch_size):
        """(the persisted split, its images' root, landmarks.csv's rows, vocab): what the keypoint DataLoaders join."""
        import pandas as pd

        from ...data import loaders

        df, root, vocab = loaders.checked_split(ws, batch_size or cfg.train.batch_size)
        feats = pd.read_csv(ws.artifact("datablock", artifacts.LANDMARKS), dtype={"path": str}, keep_default_na=False)
        return df, root, feats, vocab

    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        from .. import hand_model

        df, _, feats, vocab = self.keypoint_table(ws, cfg, batch_size)
        return hand_model.dataloaders(df, feats, vocab, batch_size or cfg.train.batch_size)

    def learner(self, dls, t, n_in: int, common: dict, ws):
        from .. import hand_model

        extra = ([hand_model.jitter_callback(t.landmark_rotate, mirror=t.landmark_mirror)]
                 if t.landmark_rotate or t.landmark_mirror else [])
        return hand_model.make_learner(dls, t, cbs=extra, **common)

    def recognises(self, learn) -> bool:
        return list(getattr(learn.dls, "cont_names", []) or []) == hands.FEATURES

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, store):
        if tta:
            raise PipelineError("test-time augmentation augments pixels: a hand-keypoint model takes none")
        x, found = hands.photo_features(paths, log, store)
        return engine.features(x, batch_size), found

    def read(self, engine, photo, detector):
        import numpy as np

        points, handedness, _ = detector(photo)
        feats = hands.canonical(points, handedness) if points is not None else None
        if feats is None:
            return None, None
        return engine.features(feats[None].astype(np.float32), 1)[0], points

    def onnx_plan(self, learn, t):
        from .. import onnx_export

        return onnx_export.landmark_plan(learn)
