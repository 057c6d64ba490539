"""Data-parallel runs through fastai's distributed engine (`fastai.distributed`: Accelerate + torch.distributed).

Launch the usual command under `torchrun` or `accelerate launch`:

    torchrun --standalone --nproc_per_node 2 -m pipeline run --stages all
    accelerate launch --multi_gpu --num_processes 2 -m pipeline run --stages all   # on a CPU-only machine too

(`accelerate launch --cpu --num_processes N` starts one process unless MPI is set up: Accelerate's multi-CPU
mode uses mpirun. On CPU, the two commands above give N gloo processes.)

- Every rank resolves the same config, reads the same persisted split, vocab and seed.
- download, datablock, lr_find and evaluate run on rank 0 while the other ranks wait at a barrier (lr_find is a
  short single-process sweep: its loss curve does not improve with more processes).
- Before datablock, its per-image work (MediaPipe's keypoints, the hand crops) is shared: every rank does 1/N of
  the images into the content stores (`StageSpec.shared_work`), then rank 0's datablock finds them all there.
- train runs on every rank inside fastai's `DistributedTrainer` (DDP; each rank a shard of every epoch); rank 0
  alone writes history, checkpoints, the export, the model card and every manifest.
- The effective batch size (per-process batch x world size) and the learning rate are recorded in the run.
- If a rank dies, the others fail at their next collective operation; no manifest is written, so `status`
  reports the stage as incomplete and a rerun redoes it.
"""
from __future__ import annotations

import contextlib
import os

from .errors import PipelineError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def active() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group the launcher described (env://): NCCL on CUDA, gloo on CPU. Accelerate's
    `PartialState` does the setup, as fastai's `DistributedTrainer` (an `Accelerator`) will expect."""
    if not active():
        return
    import torch

    try:
        from accelerate import PartialState
    except ImportError:
        raise PipelineError("distributed runs need Accelerate: pip install accelerate") from None
    PartialState(cpu=not torch.cuda.is_available())
    if not torch.distributed.is_initialized():
        raise PipelineError(f"WORLD_SIZE={world_size()} but no process group could be set up: launch with "
                            "torchrun or accelerate launch")


def finish() -> None:
    """Leave the process group once every rank is done (an exit with the group still up can abort in its threads'
    teardown: "terminate called without an active exception", seen after MediaPipe ran in a rank)."""
    if active():
        import torch

        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def barrier() -> None:
    if active():
        import torch

        torch.distributed.barrier()


def shard(items: list) -> list:
    """This process's share of `items` (every world_size-th, from its rank): N processes each do 1/N of a per-item
    job; all of them in a single process."""
    return list(items)[rank()::world_size()]


def gather(value) -> list:
    """`value` of every rank, in rank order (on every rank); [value] in a single process."""
    if not active():
        return [value]
    import torch

    out = [None] * world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def broadcast_failure(failed: bool) -> bool:
    """True on every rank if any rank says `failed` (so rank 0's stage error stops the waiting ranks too)."""
    if not active():
        return failed
    import torch

    t = torch.tensor([1 if failed else 0], dtype=torch.int64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def describe(batch_size: int, lr: float) -> dict:
    """What a run records about how it was distributed."""
    backend = ""
    if active():
        import torch

        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else ""
    n = world_size()
    return {"world_size": n, "backend": backend, "per_process_batch_size": batch_size,
            "effective_batch_size": batch_size * n, "lr": lr,
            "lr_scaling": "none: the configured lr is used as is with the effective batch size"}


@contextlib.contextmanager
def training(learn):
    """Within the block `learn` trains data-parallel over the launched processes (nothing changes in a single
    process). fastai's `distrib_ctx` on CUDA; on CPU the same `DistributedTrainer` with `cpu=True`, no
    SyncBatchNorm (CUDA only) and a `DistributedDL` whose index broadcast runs on CPU tensors (fastai's moves
    them to CUDA, which gloo does not need and a CPU machine does not have)."""
    if not active():
        yield learn
        return
    import torch

    if torch.cuda.is_available():
        with learn.distrib_ctx():
            yield learn
        return
    from fastai.distributed import DistributedDL, DistributedTrainer

    class CpuDistributedDL(DistributedDL):
        def _broadcast(self, t, rank):
            t = torch.tensor(t, dtype=torch.int64)
            torch.distributed.broadcast(t, rank)
            return t.tolist()

    class CpuDistributedTrainer(DistributedTrainer):
        def _wrap_dl(self, dl):
            return dl if isinstance(dl, DistributedDL) else CpuDistributedDL(dl, device=torch.device("cpu"))

    learn.add_cb(CpuDistributedTrainer(sync_bn=False, cpu=True))
    try:
        yield learn
    finally:
        learn.remove_cb(CpuDistributedTrainer)
