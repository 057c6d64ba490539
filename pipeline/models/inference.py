"""The fastai engine's parts: load an exported learner safely (`load_verified`: its sha256 checked before
anything is unpickled), an image learner's batched inference (`predict_images`) and a tabular one's (`predict_rows`). `kinds.load` is where
evaluate, `predict` and `serve` get them from."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

from ..core.errors import PipelineError
from ..core.workspace import read_hashed
from . import card


def load_verified(pkl: Path, trust: bool = False, sha256: str | None = None):
    """`load_learner(pkl)` after checking its sha256: against `sha256` when given (what this project's train
    manifest recorded, or `predict --sha256`), else against the model card beside it (`card.read`); no check with
    `trust`.

    Unpickling runs code, so a learner whose bytes differ from the expected ones is refused. The file is read once:
    the bytes hashed are the bytes unpickled. A card beside the file catches a corrupted or replaced `.pkl`, not a
    replaced pair: give the hash from a source you trust."""
    pkl = Path(pkl)
    if not pkl.exists():
        raise PipelineError(f"learner {pkl} does not exist: run `python -m pipeline run --stages train` first")
    try:
        data, actual = read_hashed(pkl)
    except OSError as e:
        raise PipelineError(f"cannot read the learner {pkl}: {e.strerror or e}") from None
    if not trust:
        if sha256 is not None:
            expected, source = sha256.lower(), "the expected sha256"
            if not card.is_sha256(expected):
                raise PipelineError(f"--sha256 {sha256!r} is not a sha256 (64 hex digits)")
        else:
            expected, source = card.read(pkl, "fastai")["sha256"], "its model card"
        if actual != expected:
            raise PipelineError(f"{pkl} sha256 {actual[:12]}… does not match {source} ({expected[:12]}…): "
                                f"refusing to unpickle it (pass --trust-learner only for a file you trust)")
    import pickle

    import torch
    from fastai.learner import load_learner

    try:
        return load_learner(io.BytesIO(data), cpu=not torch.cuda.is_available())
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as e:
        reason = " ".join(str(e).split())[:200]
        raise PipelineError(f"cannot load {pkl} as an exported fastai learner ({type(e).__name__}: {reason})") from None


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


def predict_images(learn, paths: list[Path], batch_size: int = card.BATCH, tta: int = 0, log=print):
    """Probabilities (n, len(vocab), a torch tensor): an image learner's batched inference (`test_dl` + `get_preds` on plain, channels-last inputs), or with `tta`
    > 0 fastai's test-time augmentation (`Learner.tta`: the mean of `tta` passes with the training batch
    transforms, blended with the plain pass)."""
    from . import training

    dl = learn.dls.test_dl(list(paths), bs=batch_size)
    with training.quiet(learn), training.progress_lines(learn, log, lambda training: "predicted"):
        if tta:
            probs, _ = learn.tta(dl=dl, n=tta)
        else:
            with _fast_inputs(learn) as cbs:
                probs, _ = learn.get_preds(dl=dl, cbs=cbs)
    return probs


def predict_rows(learn, x, batch_size: int = card.BATCH):
    """Probabilities (n, len(vocab), a torch tensor) of a tabular learner for float32 rows `x` of its continuous
    columns (`learn.dls.cont_names`: the 64 keypoint features, or more beside them)."""
    import numpy as np
    import pandas as pd

    from . import training

    dl = learn.dls.test_dl(pd.DataFrame(np.asarray(x, np.float32), columns=list(learn.dls.cont_names)), bs=batch_size)
    with training.quiet(learn):
        probs, _ = learn.get_preds(dl=dl)
    return probs
