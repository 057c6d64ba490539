"""Frozen-backbone embeddings of hand crops, computed once per crop and backbone: what makes a crossval of a
pretrained backbone on the hand affordable on a CPU (`train.arch = "hand_fused"`, `model.py`).

The store (`crop_embeddings.sqlite` in `run.data_dir`, a `content_store.ContentStore`) keys each pooled embedding
by the photo's bytes, the crop settings (`hand_crops.crop_settings`), the backbone's name and the sha256 of its
weights: seven folds, a changed head or a changed lever reuse every embedding; other weights compute anew.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from ...core.errors import PipelineError
from ...data import content_store
from ...models.card import BATCH
from ..hand_crop import data as hand_crops

EMBEDDINGS = "crop_embeddings.sqlite"


def body(arch: str, pretrained: bool, cache_dir: Path) -> tuple[torch.nn.Module, dict]:
    """(a timm backbone without its classifier, giving the pooled embedding; its input normalisation {mean, std})."""
    import timm

    from ...models import backbones

    if arch in backbones.TORCHVISION:
        raise PipelineError(f"train.crop_backbone {arch!r}: the frozen crop embedding takes a timm model name "
                            f"(e.g. {backbones.OFFLINE_TIMM} or resnet18.a1_in1k)")
    name, extra = backbones.resolve(arch, pretrained, cache_dir)
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **extra)
    except (RuntimeError, OSError) as e:
        raise PipelineError(f"could not get pretrained weights for {arch} ({type(e).__name__}); use "
                            f"train.crop_backbone = '{backbones.OFFLINE_TIMM}'") from None
    cfg = model.pretrained_cfg
    return model.eval(), {"mean": list(cfg.get("mean", (0.485, 0.456, 0.406))),
                          "std": list(cfg.get("std", (0.229, 0.224, 0.225)))}


def weights_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def settings(arch: str, size: int, model: torch.nn.Module, norm: dict) -> dict:
    """The key of a backbone's embeddings of `size`-pixel crops: crop settings, backbone, weights, normalisation."""
    return {"crop": hand_crops.crop_settings(size), "backbone": arch, "weights": weights_sha256(model), **norm,
            "size": size}


def store(folder: Path, key: dict) -> content_store.ContentStore:
    return content_store.arrays(Path(folder) / EMBEDDINGS, key, "float32", (None,))


def to_tensor(pngs: list[bytes], mean, std) -> torch.Tensor:
    """A float batch (n, 3, size, size) of PNG crops, normalised as the backbone wants."""
    from PIL import Image

    x = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in pngs]).astype(np.float32) / 255
    x = torch.from_numpy(x).permute(0, 3, 1, 2)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def embed(model, paths: list, pngs: list[bytes], key: dict, folder: Path | None, log=print,
          batch_size: int = BATCH) -> torch.Tensor:
    """The pooled embeddings (n, features) of the crops `pngs` of `paths`, from the store in `folder` where it has
    them; the others computed in batches (and stored)."""
    paths = [str(p) for p in paths]
    db = store(folder, key) if folder is not None else None

    def compute(todo):
        log(f"embedding {len(todo)} crops with the frozen {key['backbone']} ({len(paths) - len(todo)} in the store)")
        model.eval()
        for start in range(0, len(todo), batch_size):
            with torch.no_grad():
                yield from model(to_tensor([pngs[i] for i in todo[start:start + batch_size]], key["mean"],
                                           key["std"])).numpy()

    rows, embed.computed = content_store.cached_map(paths, db, compute, log, "embedded", batch_size)
    if paths and not embed.computed:  # what the last call cost, for tests and logs
        log(f"all {len(paths)} crop embeddings of {key['backbone']} in the store")
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def keypoint_features(ws, df) -> np.ndarray:
    """The 64 keypoint FEATURES of each row of the split `df` (landmarks.csv, written by the datablock stage)."""
    import pandas as pd

    from ...core import artifacts
    from ...data import hands

    feats = pd.read_csv(ws.artifact("datablock", artifacts.LANDMARKS), dtype={"path": str}, keep_default_na=False)
    joined = df[["path"]].merge(feats[["path"] + hands.FEATURES], on="path", how="left", validate="one_to_one")
    if joined[hands.FEATURES].isna().any().any():
        raise PipelineError(f"{artifacts.LANDMARKS} lacks images of the split: rerun datablock")
    return joined[hands.FEATURES].to_numpy(np.float32)
