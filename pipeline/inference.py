"""Load an exported learner safely and run batched predictions: shared by evaluate and `predict`."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import PipelineError
from .workspace import sha256_file


def card_path(pkl: Path) -> Path:
    return Path(pkl).with_suffix(".json")


def load_verified(pkl: Path, trust: bool = False):
    """`load_learner(pkl)` after checking its sha256 against the model card beside it (skipped if `trust`).

    Unpickling runs code, so a learner whose bytes differ from what this project exported is refused."""
    pkl = Path(pkl)
    if not pkl.exists():
        raise PipelineError(f"learner {pkl} does not exist: run `python -m pipeline run --stages train` first")
    if not trust:
        card = card_path(pkl)
        try:
            expected = json.loads(card.read_text())["sha256"]
        except (OSError, ValueError, KeyError):
            raise PipelineError(f"no model card with a sha256 at {card}: refusing to unpickle {pkl} "
                                f"(pass --trust-learner only for a file you trust)") from None
        actual = sha256_file(pkl)
        if actual != expected:
            raise PipelineError(f"{pkl} sha256 {actual[:12]}… does not match its model card ({expected[:12]}…): "
                                f"refusing to unpickle it (pass --trust-learner only for a file you trust)")
    import torch
    from fastai.learner import load_learner

    return load_learner(pkl, cpu=not torch.cuda.is_available())


def predict(learn, paths: list[Path], batch_size: int = 64):
    """Batched inference (`test_dl` + `get_preds`): (predicted labels, confidences, probabilities)."""
    from . import training

    dl = learn.dls.test_dl(list(paths), bs=batch_size)
    with training.quiet(learn):
        probs, _ = learn.get_preds(dl=dl)
    conf, idx = probs.max(dim=1)
    vocab = list(learn.dls.vocab)
    return [vocab[i] for i in idx.tolist()], conf.tolist(), probs
