"""Load an exported learner safely and run batched predictions: shared by evaluate and `predict`."""
from __future__ import annotations

import contextlib
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


def _has_convs(model) -> bool:
    import torch

    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


@contextlib.contextmanager
def _fast_inputs(learn):
    """For the block, feed the model plain tensors (fastai's typed TensorImage routes every operation of the
    forward pass through Python-level `__torch_function__` dispatch) and run a convnet channels-last (NHWC:
    oneDNN's CPU convolutions are ~1.2-1.6x faster on it). The same arithmetic: probabilities agree with the
    default path to float rounding (~1e-5; bench/eval_batched.py checks it). The model's layout is restored."""
    import torch
    from fastai.callback.core import Callback

    convnet = _has_convs(learn.model)

    class PlainInputs(Callback):
        order = -1

        def before_batch(self):
            self.learn.xb = tuple(self._plain(x) for x in self.learn.xb)

        @staticmethod
        def _plain(x):
            if not isinstance(x, torch.Tensor):
                return x
            x = x.as_subclass(torch.Tensor)
            return x.contiguous(memory_format=torch.channels_last) if convnet and x.dim() == 4 else x

    if convnet:
        learn.model.to(memory_format=torch.channels_last)
    try:
        yield [PlainInputs()]
    finally:
        if convnet:
            learn.model.to(memory_format=torch.contiguous_format)


def predict_landmarks(learn, paths: list[Path], batch_size: int = 64, log=print, store=None):
    """A hand-landmark learner's batched inference: MediaPipe finds each image's keypoints, the tabular model
    classifies them (an image without a hand gets the all-0 row the model learned): (predicted labels,
    confidences, probabilities, hand found per image); `store`: a `content_store.landmarks` store to reuse."""
    from . import hands, training

    feats = hands.extract(paths, log, store=store)
    dl = learn.dls.test_dl(feats[hands.FEATURES], bs=batch_size)
    with training.quiet(learn):
        probs, _ = learn.get_preds(dl=dl)
    conf, idx = probs.max(dim=1)
    vocab = list(learn.dls.vocab)
    return [vocab[i] for i in idx.tolist()], conf.tolist(), probs, feats["hand_found"].tolist()


def predict(learn, paths: list[Path], batch_size: int = 64, tta: int = 0, log=print):
    """Batched inference (`test_dl` + `get_preds` on plain, channels-last inputs), or with `tta` > 0 fastai's
    test-time augmentation (`Learner.tta`: the mean of `tta` passes with the training batch transforms, blended
    with the plain pass): (predicted labels, confidences, probabilities). A hand-landmark learner goes through
    `predict_landmarks` (no TTA: it augments pixels)."""
    from . import hands, training

    if hands.is_landmark_learner(learn):
        return predict_landmarks(learn, paths, batch_size, log)[:3]
    dl = learn.dls.test_dl(list(paths), bs=batch_size)
    if tta:
        with training.quiet(learn):
            probs, _ = learn.tta(dl=dl, n=tta)
    else:
        with training.quiet(learn), _fast_inputs(learn) as cbs:
            probs, _ = learn.get_preds(dl=dl, cbs=cbs)
    conf, idx = probs.max(dim=1)
    vocab = list(learn.dls.vocab)
    return [vocab[i] for i in idx.tolist()], conf.tolist(), probs
