"""The hand-keypoint kind (`datablock.input = "landmarks"`, `train.arch = "landmark_mlp"`): MediaPipe's 21 keypoints
of each photo (pipeline/data/hands/, through the detection store) as 64 features (`data.py`), fastai's tabular MLP
on them (`model.py`). Its engine input is `features`; its ONNX graph (`graph.py`) reads float keypoint rows."""
from __future__ import annotations

from pathlib import Path

from ...core import artifacts
from ...core.errors import PipelineError
from ...data import hands
from ..base import Kind
from . import data


class Landmarks(Kind):
    """fastai's tabular MLP on MediaPipe's hand keypoints."""
    name, input, archs, title = "hand landmarks", "landmarks", ("landmark_mlp",), "hand keypoints"
    finds_hands, writes = True, (artifacts.LANDMARKS,)

    def prepare(self, df, root: Path, cfg, ws, log) -> list[Path]:
        return data.prepare(df, root, ws, log)

    def warm(self, paths: list, cfg, folder: Path, log) -> int:
        return data.warm(paths, folder, log)

    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        from ..shared.model import dataloaders

        bs = batch_size or cfg.train.batch_size
        df, _, feats, vocab = data.keypoint_table(ws, bs)
        return dataloaders(df, feats, vocab, bs)

    def learner(self, dls, t, n_in: int, common: dict, ws):
        from ..shared.model import jitter_callback
        from .model import make_learner

        extra = ([jitter_callback(t.landmark_rotate, mirror=t.landmark_mirror)]
                 if t.landmark_rotate or t.landmark_mirror else [])
        return make_learner(dls, t.landmark_features == "coords+shape", t.head_dropout, cbs=extra, **common)

    def recognises(self, learn) -> bool:
        return list(getattr(learn.dls, "cont_names", []) or []) == hands.FEATURES

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, folder: Path | None):
        if tta:
            raise PipelineError("test-time augmentation augments pixels: a hand-keypoint model takes none")
        x, found = hands.photo_features(paths, log, hands.store(folder, log) if folder is not None else None)
        return engine.run({"rows": x, "features": x}, batch_size, log), found

    def read(self, engine, photo, detector):
        import numpy as np

        points, handedness, _ = detector(photo)
        feats = hands.canonical(points, handedness) if points is not None else None
        if feats is None:
            return None, None
        x = feats[None].astype(np.float32)
        return engine.run({"rows": x, "features": x}, 1, lambda message: None)[0], points

    def onnx_plan(self, learn, t):
        from .graph import landmark_plan

        return landmark_plan(learn)
