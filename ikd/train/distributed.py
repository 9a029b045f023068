"""torchrun / DistributedDataParallel helpers: one process per device, rank 0 writes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1): nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (no-op on one process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def all_gather_object(value: object, info: DistInfo) -> list:
    """Every rank's value, in rank order, on every rank ([value] on one process)."""
    if not info.enabled:
        return [value]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, value)
    return out


def shard(batches: list, info: DistInfo) -> list:
    """Every rank takes every world_size-th batch; the list is cut to a multiple of world_size so that all
    ranks run the same number of steps (DDP would hang otherwise)."""
    if not info.enabled:
        return batches
    usable = len(batches) - len(batches) % info.world_size
    return batches[info.rank : usable : info.world_size]
