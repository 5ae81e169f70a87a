"""torch.distributed set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

Single process when ``WORLD_SIZE`` is unset or 1. Backend: NCCL on CUDA, gloo on CPU. Multi-node runs need
``output_dir`` on a filesystem every node sees (each rank writes its RNG state into the checkpoint folder).

Example (2 CPU processes)::

    torchrun --nproc_per_node 2 -m idm_imaging.training configs/tiny-prior.toml
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "barrier", "local_device"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def local_device(dev: torch.device, info: DistInfo) -> torch.device:
    """A CUDA device without an index becomes ``cuda:LOCAL_RANK``; a CUDA device is made the current one."""
    if dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank) if dev.index is None else dev
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (no-op for a single process or an existing group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)


def cleanup_distributed(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
