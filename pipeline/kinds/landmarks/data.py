"""The landmark kind's data (no torch): datablock's landmarks.csv and batch.png from the detection store, and the
table its DataLoaders join (the split beside landmarks.csv's rows; the hand-network kind reads it too)."""
from __future__ import annotations

from pathlib import Path

from ...core import artifacts
from ...data import hands


def prepare(df, root: Path, ws, log) -> list[Path]:
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


def warm(paths: list, folder: Path, log) -> int:
    """The detections of `paths` into the detection store in `folder` (a distributed launch's share): images looked
    at."""
    return hands.warm(paths, hands.store(folder, log), log)[1]


def keypoint_table(ws, batch_size: int):
    """(the persisted split, its images' root, landmarks.csv's rows, vocab): what the keypoint DataLoaders join."""
    import pandas as pd

    from ...data import loaders

    df, root, vocab = loaders.checked_split(ws, batch_size)
    feats = pd.read_csv(ws.artifact("datablock", artifacts.LANDMARKS), dtype={"path": str}, keep_default_na=False)
    return df, root, feats, vocab
