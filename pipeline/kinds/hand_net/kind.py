"""The hand-network kind (`datablock.input = "hand_net"`, `train.arch = "landmark_mlp"`): the keypoint recipe's
MLP with the 1152-value pooled feature of MediaPipe's own hand network (`data.py`, read with LiteRT on the upright
hand) beside the 64 keypoint features; and its late-fusion model (`train.arch = "late_fusion"`): that MLP and the
keypoint recipe's, trained side by side in one export, their probabilities averaged. The classes their exports
pickle are in `model.py`, their ONNX graph in `graph.py`."""
from __future__ import annotations

from pathlib import Path

from ...core.errors import PipelineError
from ...data import hands
from ..landmarks.kind import Landmarks
from ..landmarks.data import keypoint_table
from . import data as hand_net


class HandNet(Landmarks):
    """The keypoints and MediaPipe's hand-network embedding (frozen), one tabular MLP."""
    name, input, title = "hand keypoints + hand-network embedding", "hand_net", "hand keypoints + hand-network model"
    graph_input = ("tensor(uint8)", 4, "uint8 hand-network crops (batch, 224, 224, 3)")

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

    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        """Tabular DataLoaders over the persisted split: landmarks.csv's keypoint rows beside each photo's embedding
        (from the store datablock filled; computed for any it lacks)."""
        import pandas as pd

        from ..shared.model import dataloaders

        quiet = lambda message: None  # noqa: E731
        bs = batch_size or cfg.train.batch_size
        df, root, feats, vocab = keypoint_table(ws, bs)
        paths = [root / p for p in df["path"]]
        dets, _ = hands.detections(paths, hands.store(ws.data, quiet), quiet)
        emb = pd.DataFrame(hand_net.embed(paths, dets, ws.data, quiet), columns=hand_net.COLUMNS[len(hands.FEATURES):])
        emb.insert(0, "path", df["path"].to_numpy())
        table = feats[["path"] + hands.FEATURES].merge(emb, on="path", how="inner", validate="one_to_one")
        table[emb.columns[1:]] *= table[[hands.FEATURES[-1]]].to_numpy()  # no hand by the keypoints' flag: no embedding
        dls = dataloaders(df, table, vocab, bs, hand_net.COLUMNS)
        # each validation photo and its detection, by its path in the split: the ONNX export checks its parity on them
        dls.valid_photos = {p: (path, det) for p, path, det, v in zip(df["path"], paths, dets, df["is_valid"]) if v}
        return dls

    def model(self, n_out: int, t):
        """The network its learner trains: `HandNetModel` (two hidden layers, `t.head_dropout`)."""
        from ..shared.model import LAYERS
        from .model import HandNetModel

        return HandNetModel(n_out, LAYERS, t.head_dropout)

    def learner(self, dls, t, n_in: int, common: dict, ws):
        """A `HandNetLearner` over `model`, with the keypoint recipe's jitter (it moves the keypoint columns, not the
        embedding) and `SettleBatchNorm`."""
        from ..shared.model import SettleBatchNorm, jitter_callback
        from .model import HandNetLearner

        extra = ([jitter_callback(t.landmark_rotate, mirror=t.landmark_mirror)]
                 if t.landmark_rotate or t.landmark_mirror else [])
        model = self.model(len(dls.vocab), t)
        common = {**common, "cbs": [*common.get("cbs", []), *extra, SettleBatchNorm()],
                  "loss_func": model.training_loss(common["loss_func"])}
        return HandNetLearner(dls, model, **common)

    def recognises(self, learn) -> bool:
        from .model import HandNetModel

        return (list(getattr(learn.dls, "cont_names", []) or []) == hand_net.COLUMNS
                and type(getattr(learn, "model", None)) is HandNetModel)

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, folder: Path | None):
        """Keypoints through the stores in `folder` when given, offered two ways: beside LiteRT's embeddings (the
        learner's rows; through the embedding store too) and as the uint8 crops beside the keypoint rows (the ONNX
        graph's); the engine makes only what its model reads."""
        if tta:
            raise PipelineError("test-time augmentation augments pixels: a hand-keypoint model takes none")
        paths = [str(p) for p in paths]
        dets, _ = hands.detections(paths, hands.store(folder, log) if folder is not None else None, log)
        inputs = {"rows": lambda: hand_net.inputs(dets, hand_net.embed(paths, dets, folder, log)),
                  "crop": hand_net.Crops(paths, dets), "features": lambda: hands.features_of(dets)}
        return engine.run(inputs, batch_size, log), [bool(d[0]) for d in dets]

    def read(self, engine, photo, detector):
        det, img, points = hands.frame_detection(photo, detector)
        if det is None:
            return None, None
        rows = hands.features_of([det])
        if not rows[0, -1]:  # keypoints too close together for the features (the no-hand row)
            return None, None
        inputs = {"rows": lambda: hand_net.inputs([det], hand_net.network()(hand_net.crop_image(img, det))[None]),
                  "crop": lambda: hand_net.pixels(img, det)[None], "features": rows}
        return engine.run(inputs, 1, lambda message: None)[0], points

    def onnx_plan(self, learn, t):
        """One graph: the uint8 crop and the keypoint rows in, the hand network rebuilt in torch, the head
        (`graph.graph_plan`)."""
        from .graph import graph_plan

        return graph_plan(learn)


class HandNetLate(HandNet):
    """Late fusion in one export: the keypoint recipe's MLP and the keypoints + embedding MLP, each trained on its own
    loss, their probabilities averaged (`model.HandNetLateModel`). Its data, stores, engines and graph are
    the hand-network kind's."""
    name, archs = "hand keypoints, late fusion with the hand-network embedding", ("late_fusion",)
    title = "hand keypoints + hand-network late-fusion model"

    def problems(self, cfg) -> list[str]:
        found = super().problems(cfg)
        if cfg.train.calibrate:
            found.append('train.calibrate folds a temperature into one last layer, and train.arch = "late_fusion" '
                         "mixes two: turn it off")
        return found

    def seen(self, image_size: int | None, grayscale: bool = False) -> str:
        return ("hand keypoints, and beside them MediaPipe's hand-network embedding (frozen), two MLPs mixed, "
                "no pixels")

    def recipe(self, cfg) -> str:
        from .model import LATE_WEIGHT

        return super().recipe(cfg) + f", late fusion ({LATE_WEIGHT:g} × the keypoint MLP)"

    def model(self, n_out: int, t):
        from ..shared.model import LAYERS
        from .model import HandNetLateModel

        return HandNetLateModel(n_out, LAYERS, t.head_dropout)

    def recognises(self, learn) -> bool:
        from .model import HandNetLateModel

        return (list(getattr(learn.dls, "cont_names", []) or []) == hand_net.COLUMNS
                and isinstance(getattr(learn, "model", None), HandNetLateModel))
