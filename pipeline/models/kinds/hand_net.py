"""The hand-network kind (`datablock.input = "hand_net"`, `train.arch = "landmark_mlp"`): the keypoint recipe's
MLP with the 1152-value pooled feature of MediaPipe's own hand network (pipeline/data/hand_net.py, read with
LiteRT on the upright hand) beside the 64 keypoint features; the classes its export pickles are in
hand_net_model.py."""
from __future__ import annotations

from pathlib import Path

from ...core.errors import PipelineError
from ...data import hand_crops, hand_net, hands
from .landmarks import Landmarks


class HandNet(Landmarks):
    """The keypoints and MediaPipe's hand-network embedding (frozen), one tabular MLP."""
    name, input, title = "hand keypoints + hand-network embedding", "hand_net", "hand keypoints + hand-network model"

    def require(self) -> None:
        hands.require()
        hand_net.require()
        hand_net.network_path()

    def seen(self, image_size: int | None, grayscale: bool = False) -> str:
        return "hand keypoints + MediaPipe's hand-network embedding (frozen), no pixels"

    def recipe(self, cfg) -> str:
        return super().recipe(cfg).replace("hand landmarks", "hand landmarks + hand-net embedding", 1)

    def card_fields(self, t) -> dict:
        """No pixels; `hand_net`: how a client makes the embedding this model reads."""
        return {**super().card_fields(t), "hand_net": hand_net.client_settings()}

    def prepare(self, df, root: Path, cfg, ws, log) -> list[Path]:
        return hand_net.prepare(df, root, ws, log)

    def warm(self, paths: list, cfg, folder: Path, log) -> int:
        return hand_net.warm(paths, folder, log)

    store = staticmethod(hand_net.store)

    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        """Tabular DataLoaders over the persisted split: landmarks.csv's keypoint rows beside each photo's embedding
        (from the store datablock filled; computed for any it lacks)."""
        import pandas as pd

        from .. import hand_model

        quiet = lambda message: None  # noqa: E731
        df, root, feats, vocab = self.keypoint_table(ws, cfg, batch_size)
        paths = [root / p for p in df["path"]]
        raws, _ = hand_crops.find(paths, ws.data, quiet)
        emb = pd.DataFrame(hand_net.embed(paths, raws, ws.data, quiet), columns=hand_net.COLUMNS[len(hands.FEATURES):])
        emb.insert(0, "path", df["path"].to_numpy())
        table = feats[["path"] + hands.FEATURES].merge(emb, on="path", how="inner", validate="one_to_one")
        return hand_model.dataloaders(df, table, vocab, batch_size or cfg.train.batch_size, hand_net.COLUMNS)

    def learner(self, dls, t, n_in: int, common: dict, ws):
        """A `HandNetLearner` (two hidden layers, `t.head_dropout`), with the keypoint recipe's jitter (it moves the
        keypoint columns, not the embedding) and `SettleBatchNorm`."""
        from ..hand_model import SettleBatchNorm, jitter_callback
        from ..hand_net_model import HandNetLearner, HandNetModel

        extra = ([jitter_callback(t.landmark_rotate, mirror=t.landmark_mirror)]
                 if t.landmark_rotate or t.landmark_mirror else [])
        common = {**common, "cbs": [*common.get("cbs", []), *extra, SettleBatchNorm()]}
        return HandNetLearner(dls, HandNetModel(len(dls.vocab), [512, 256], t.head_dropout), **common)

    def recognises(self, learn) -> bool:
        return list(getattr(learn.dls, "cont_names", []) or []) == hand_net.COLUMNS

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, store):
        """Keypoints and embeddings through the stores beside `store` (a content store in the data folder) when
        given."""
        if tta:
            raise PipelineError("test-time augmentation augments pixels: a hand-keypoint model takes none")
        x, found = hand_net.photo_inputs(paths, Path(store.path).parent if store is not None else None, log)
        return engine.features(x, batch_size), found

    def read(self, engine, photo, detector):
        raw, img, points = hands.frame_detection(photo, detector)
        if raw is None:
            return None, None
        x = hand_net.frame_inputs(img, points, raw[1], raw[2])
        if not x[0, len(hands.FEATURES) - 1]:  # keypoints too close together for the features (the no-hand row)
            return None, None
        return engine.features(x, 1)[0], points

    def onnx_plan(self, learn, t):
        raise PipelineError("the hand-network model reads MediaPipe's hand network, a TFLite graph and not a torch "
                            "module: no ONNX export of it here; use the fastai engine")
