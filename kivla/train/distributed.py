"""torch.distributed glue: one `DistContext` read from torchrun's environment.

Single process when WORLD_SIZE is unset or 1. Under `torchrun --nproc_per_node=N` it initializes
the process group (nccl on GPU, gloo on CPU) and wraps the model in DDP, or FSDP on request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average scalar metrics over ranks (a no-op in a single process)."""
        if not self.is_distributed or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: v / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def all_true(self, flag: bool) -> bool:
        """True only when `flag` is true on every rank: ranks must agree to skip a step."""
        if not self.is_distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def wrap(self, model: torch.nn.Module, strategy: str = "ddp") -> torch.nn.Module:
        """DDP (default) or FSDP around `model`; the model itself in a single process."""
        if not self.is_distributed:
            return model
        if strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.local_rank] if self.device.type == "cuda" else None
            # Insulation and per-example loss masks leave some parameters without a gradient.
            return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        if strategy == "fsdp":
            from torch.distributed.fsdp import FullyShardedDataParallel

            return FullyShardedDataParallel(model, use_orig_params=True, device_id=self.device)
        raise ValueError(f"distributed strategy: expected 'ddp' or 'fsdp', got {strategy!r}")


def init_distributed(device: str = "auto") -> DistContext:
    """Read torchrun's environment, pick the device and start the process group when needed."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP/FSDP wrapper (or the module itself)."""
    return getattr(model, "module", model)
