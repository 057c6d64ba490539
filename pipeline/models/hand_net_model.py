"""The keypoint learner with MediaPipe's hand-network embedding beside the keypoints (`train.arch = "landmark_mlp"`
on `datablock.input = "hand_net"`, pipeline/data/hand_net.py): fastai's tabular MLP over the 64 keypoint FEATURES,
their shape features (hand_model.py) and the 1152-value embedding, trained with the keypoint recipe's jitter (on the
keypoint columns only) and `SettleBatchNorm`. Its export answers a photo (`predict("photo.jpg")`), finding the hand
and computing the embedding (LiteRT) in that process. Its ONNX graph (`onnx_plan`, `HandNetGraph`) takes the uint8
crop and the keypoint rows and runs the hand network itself, rebuilt in torch (hand_net_torch.py), then the head;
`probs` and `read` feed either engine what it reads.

Its own module, importing torch at the top, because `load_learner` unpickles `HandNetModel` and `HandNetLearner` by
their class names (the model card says the export needs this package).
"""
from __future__ import annotations

import warnings

import torch
from fastai.tabular.learner import TabularLearner
from fastai.tabular.model import TabularModel
from torch import nn

from ..core.errors import PipelineError
from ..data import hand_net
from ..data.hands import FEATURES
from .hand_model import N_SHAPE, SettleBatchNorm, feature_probs, shape_features


class HandNetModel(nn.Module):
    """fastai's TabularModel on the keypoint FEATURES, their `shape_features` and the hand network's embedding."""

    def __init__(self, n_out: int, layers: list[int], ps: float):
        super().__init__()
        self.tabular = TabularModel([], len(FEATURES) + N_SHAPE + hand_net.N_EMB, n_out, layers, ps=ps, embed_p=0.0,
                                    y_range=None)

    def forward(self, x_cat, x_cont):
        keypoints = x_cont[:, :len(FEATURES)]
        return self.tabular(x_cat, torch.cat([keypoints, shape_features(keypoints), x_cont[:, len(FEATURES):]], 1))


class HandNetLearner(TabularLearner):
    """A TabularLearner over `hand_net.COLUMNS` whose `predict` also takes a photo: `load_learner(pkl)
    .predict("photo.jpg")` finds the hand (MediaPipe) and its embedding in this process and returns (label, index,
    probabilities); a photo with no hand gets the model's answer for the all-0 row, and a warning."""

    def predict(self, row, *args, **kwargs):
        import pandas as pd

        if isinstance(row, pd.Series):
            return super().predict(row, *args, **kwargs)
        x, found = hand_net.photo_inputs([row], None, log=lambda message: None)
        if not found[0]:
            warnings.warn(f"no hand found in {row}: the label is the model's answer for an image without a hand",
                          stacklevel=2)
        probs = feature_probs(self, x)
        idx = int(probs[0].argmax())
        return self.dls.vocab[idx], torch.tensor(idx), probs[0]


def is_hand_net_learner(learn) -> bool:
    return list(getattr(learn.dls, "cont_names", []) or []) == hand_net.COLUMNS


def dataloaders(ws, cfg, batch_size: int | None = None):
    """Tabular DataLoaders over the persisted split: landmarks.csv's keypoint rows beside each photo's embedding
    (from the store datablock filled; computed for any it lacks)."""
    import pandas as pd

    from ..core import artifacts
    from ..data import hand_crops, loaders
    from . import hand_model

    quiet = lambda message: None  # noqa: E731
    df, root, vocab = loaders.checked_split(ws, cfg, batch_size)
    feats = pd.read_csv(ws.artifact("datablock", artifacts.LANDMARKS), dtype={"path": str}, keep_default_na=False)
    paths = [root / p for p in df["path"]]
    raws, _ = hand_crops.find(paths, ws.data, quiet)
    emb = pd.DataFrame(hand_net.embed(paths, raws, ws.data, quiet), columns=hand_net.COLUMNS[len(FEATURES):])
    emb.insert(0, "path", df["path"].to_numpy())
    table = feats[["path"] + FEATURES].merge(emb, on="path", how="inner", validate="one_to_one")
    table[emb.columns[1:]] *= table[[FEATURES[-1]]].to_numpy()  # no hand by the keypoints' flag: no embedding
    dls = hand_model.dataloaders(df, table, vocab, batch_size or cfg.train.batch_size, hand_net.COLUMNS)
    # each validation photo and its detection, by its path in the split: the ONNX export checks its parity on them
    dls.valid_photos = {p: (path, raw) for p, path, raw, v in zip(df["path"], paths, raws, df["is_valid"]) if v}
    return dls


def make_learner(dls, t, **common) -> HandNetLearner:
    """A `HandNetLearner` (two hidden layers, `t.head_dropout`), with the keypoint recipe's jitter (`landmark_rotate`,
    `landmark_mirror`: it moves the keypoint columns, not the embedding) and `SettleBatchNorm`."""
    from .hand_model import jitter_callback

    extra = ([jitter_callback(t.landmark_rotate, mirror=t.landmark_mirror)]
             if t.landmark_rotate or t.landmark_mirror else [])
    common = {**common, "cbs": [*common.get("cbs", []), *extra, SettleBatchNorm()]}
    return HandNetLearner(dls, HandNetModel(len(dls.vocab), [512, 256], t.head_dropout), **common)


def _graph_probs(engine, paths: list, raws: list, batch_size: int):
    """An ONNX engine's probabilities for photos whose hands `raws` found: each batch's uint8 crops (decoded in
    threads; zeros where no hand was found) beside its keypoint rows, into the graph (`HandNetGraph`)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def pixels(i):
        return hand_net.photo_pixels(paths[i], raws[i]) if raws[i][0] else None

    out = []
    with ThreadPoolExecutor(max_workers=max(1, getattr(engine, "threads", 1))) as pool:
        for start in range(0, len(paths), batch_size):
            idx = range(start, min(start + batch_size, len(paths)))
            crops = np.zeros((len(idx), hand_net.SIZE, hand_net.SIZE, 3), np.uint8)
            for j, px in enumerate(pool.map(pixels, idx)):
                if px is not None:
                    crops[j] = px
            out.append(engine.probs(crops, hand_net.keypoints([raws[i] for i in idx])))
    return np.concatenate(out) if out else np.zeros((0, len(engine.vocab)), np.float32)


def probs(engine, paths: list, batch_size: int = 64, tta: int = 0, log=print, store=None):
    """(probabilities, hand found) for photos (`models.Input.probs`), keypoints through the stores beside `store` (a
    content store in the data folder) when given: the fastai engine reads the keypoint rows beside LiteRT's
    embeddings (through the embedding store too), the onnx engine the uint8 crops beside the keypoint rows."""
    from pathlib import Path

    if tta:
        raise PipelineError("test-time augmentation augments pixels: a hand-keypoint model takes none")
    folder = Path(store.path).parent if store is not None else None
    if engine.learn is not None:
        x, found = hand_net.photo_inputs(paths, folder, log)
        return engine.features(x, batch_size), found
    paths = [str(p) for p in paths]
    raws = hand_net.detections(paths, folder, log)
    return _graph_probs(engine, paths, raws, batch_size), [bool(r[0]) for r in raws]


def read(engine, photo, detector):
    """(probabilities or None with no hand, the keypoints or None) for one photo (a path, with a `Detector`) or one
    frame of a stream (an RGB array, with a `Tracker`), under either engine: `models.Input.read`."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from ..data import hand_crops

    points, handedness, score = detector(photo)
    if points is None:
        return None, None
    raw = hand_net.raw_of(points, handedness, score)
    rows = hand_net.keypoints([raw])
    if not rows[0, -1]:  # keypoints too close together for the features (the no-hand row)
        return None, None
    img = hand_crops._upright(photo) if isinstance(photo, (str, Path)) else Image.fromarray(np.asarray(photo))
    if engine.learn is not None:
        emb = hand_net.network()(hand_net.crop_image(img, raw))[None]
        return engine.features(hand_net.inputs([raw], emb), 1)[0], points
    return engine.probs(hand_net.pixels(img, raw)[None], rows)[0], points


class HandNetGraph(nn.Module):
    """uint8 (N, SIZE, SIZE, 3) RGB crops (`hand_net.pixels`) and float32 (N, 64) keypoint rows to probabilities:
    / 255, MediaPipe's hand network rebuilt in torch (`hand_net_torch`) up to its pooled feature, zeroed where the
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
            path, raw = photos[p]
            if raw[0]:
                crops[j] = hand_net.photo_pixels(path, raw)
        yield (crops, conts[:, :len(FEATURES)].numpy()), (torch.zeros(len(part), 0, dtype=torch.long), conts)


def onnx_plan(learn, t):
    """The graph (`HandNetGraph`; `onnx_export.export` checks its parity against the learner, whose embedding is
    LiteRT's): `crop` and `features` in, both from one MediaPipe pass a client makes (the card's `hand_net` and
    `onnx.features`)."""
    import copy

    from . import hand_net_torch, inputs, onnx_export

    if not hasattr(learn.dls, "valid_photos"):
        raise PipelineError("the hand-network model's ONNX export checks its parity on the validation photos, and "
                            "these DataLoaders do not have them: export it from the train stage")
    model = copy.deepcopy(learn.model).float().cpu().eval()
    net = hand_net_torch.load(hand_net.network_path()).float().eval()
    size = hand_net.SIZE
    example = (torch.zeros(2, size, size, 3, dtype=torch.uint8), torch.zeros(2, len(FEATURES)))
    entry = {"name": "crop", "dtype": "uint8", "shape": ["batch", size, size, 3], "layout": "NHWC, RGB",
             "client_does": f"find the hand with MediaPipe Hands; cut the hand network's crop of it: the photo "
                            f"(EXIF-upright) turned so wrist -> keypoint 9 points up, the square of {hand_net.SCALE:g} "
                            f"x the keypoints' box there, {size}x{size} bilinear, mirrored when MediaPipe says Right "
                            f"(pipeline.data.hand_net.pixels, the card's hand_net); from the same MediaPipe pass, the "
                            f"keypoint features (onnx.features). A photo with no hand: any crop (zeros) beside the 64 "
                            f"zeros",
             "graph_does": f"to float, / 255, MediaPipe's hand network ({hand_net.NETWORK} rebuilt in torch) up to "
                           f"its pooled {hand_net.N_EMB}-value feature, zeroed where the features' hand flag is 0, "
                           f"concatenated with the keypoint features and their shape features, the MLP, softmax"}
    return onnx_export.Plan(inputs.HAND_NET.name, model, HandNetGraph(net, model), ("crop", "features"), example,
                            _parity_batches(learn, onnx_export.PARITY_BATCH), entry,
                            {"features": onnx_export.features_entry()})
