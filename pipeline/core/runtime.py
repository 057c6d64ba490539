"""Per-machine execution choices for lr_find and train: DataLoader workers, pinned memory, mixed precision and
channels-last. `decide` resolves the config's "auto" values for this machine; the result is recorded in the run
(train's metrics.json and the model card) so a figure can always be traced to how it was produced."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .machine import usable_cpus


@dataclass(frozen=True)
class Runtime:
    device: str          # "cuda" or "cpu"
    workers: int         # DataLoader worker processes for the file-based loaders
    pin_memory: bool
    precision: str       # fp32 | fp16 | bf16 (mixed precision through fastai's MixedPrecision)
    channels_last: bool
    threads: int         # torch intra-op threads

    def as_dict(self) -> dict:
        return asdict(self)


def decide(num_workers: int, precision: str, channels_last: str, suits_channels_last: bool = False,
           cuda: bool | None = None, bf16: bool | None = None, cpus: int | None = None) -> Runtime:
    """The choices on this machine (or on the one described by `cuda`, `bf16`, `cpus`) for the [train] config's
    runtime entries (`TrainCfg.entries(RUNTIME)`: `num_workers`, `precision`, `channels_last`), for a model whose
    kind says whether channels-last suits it (`kinds.Kind.channels_last`).

    - workers (`num_workers = -1`, auto): on CUDA, up to 8 decoding processes keep the GPU fed. On a CPU the
      model and any decoding processes share the same cores, so decoding stays in the main process below 8 cores
      (2 workers from 8 up); `datablock.cache` removes the decoding cost instead.
    - precision (`"auto"`): bf16 where the GPU supports it, else fp16, on CUDA; fp32 on a CPU (CPU autocast is
      slower than fp32 for these models).
    - channels_last (`"auto"`): on CUDA for the pretrained convnets (tensor cores want NHWC); not for the
      baselines, which are too small to gain, nor on a CPU.
    """
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    cpus = usable_cpus() if cpus is None else cpus
    if num_workers >= 0:
        workers = num_workers
    elif cuda:
        workers = min(8, max(1, cpus - 1))
    else:
        workers = 2 if cpus >= 8 else 0
    if precision == "auto" and cuda:
        precision = "bf16" if (torch.cuda.is_bf16_supported() if bf16 is None else bf16) else "fp16"
    elif precision == "auto":
        precision = "fp32"
    nhwc = cuda and suits_channels_last if channels_last == "auto" else channels_last == "on"
    return Runtime("cuda" if cuda else "cpu", workers, cuda, precision, nhwc, torch.get_num_threads())


def apply(learn, rt: Runtime) -> None:
    """Add fastai's MixedPrecision / ChannelsLast callbacks to `learn` as `rt` says."""
    import fastai.callback.channelslast  # noqa: F401  (adds Learner.to_channelslast)
    from fastai.callback.fp16 import AMPMode  # its import adds Learner.to_fp16 / to_bf16

    if rt.channels_last:
        learn.to_channelslast(use_amp=rt.precision != "fp32",
                              amp_mode=AMPMode.BF16 if rt.precision == "bf16" else AMPMode.FP16)
    elif rt.precision == "fp16":
        learn.to_fp16()
    elif rt.precision == "bf16":
        learn.to_bf16()


def undo(learn) -> None:
    """Back to fp32, contiguous weights and no runtime callbacks: what `export` should pickle, loadable on any
    machine (a MixedPrecision callback in the pickle would ask a CPU-only user for CUDA autocast)."""
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.fp16 import MixedPrecision
    import torch

    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, (ChannelsLast, MixedPrecision))])
    learn.model.to(memory_format=torch.contiguous_format)
    learn.model.float()
