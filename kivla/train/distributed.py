"""torch.distributed glue: one `DistContext` read from torchrun's environment.

Single process when WORLD_SIZE is unset or 1. Under `torchrun --nproc_per_node=N` it initializes
the process group (nccl on GPU, gloo on CPU) and wraps the model in DDP, or FSDP on request.

FSDP is FSDP2 (`torch.distributed.fsdp.fully_shard`, works on CPU with gloo): each backbone layer
is its own unit (gathered for its forward and backward only), everything else, the action expert
included, is gathered with the root. The expert cannot have units of its own: it runs only on
ranks whose micro-batch holds robot examples, and a unit's all-gather must happen on every rank.
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
            return shard_model(model, self.device, self.world_size)
        raise ValueError(f"distributed strategy: expected 'ddp' or 'fsdp', got {strategy!r}")


def fsdp_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that become FSDP units of their own: the layers of `model.backbone.layers`
    (KIPolicy's layout), which run on every rank at every step; none for other models."""
    layers = getattr(getattr(model, "backbone", None), "layers", None)
    return list(layers) if isinstance(layers, torch.nn.ModuleList) else []


class _ZeroGrad(torch.autograd.Function):
    """0 in the forward pass, a zero gradient for `x` in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.like = (x.shape, x.dtype, x.device)  # not x itself: no activation kept for this
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        shape, dtype, device = ctx.like
        return torch.zeros(shape, dtype=dtype, device=device)


class BlockAnchors:
    """Keeps every FSDP unit in the backward graph of every rank.

    A unit reduce-scatters its gradients when autograd reaches it. If one rank's loss does not
    depend on a unit (insulation detaches the backbone from the flow loss, so a micro-batch of
    robot examples only may leave the backbone without a gradient), that rank would reduce in a
    different order than the others and the collectives would mismatch. `attach(loss)` adds a term
    that is exactly 0 with an exactly-zero gradient through each unit's output of this forward.
    """

    def __init__(self, root: torch.nn.Module, blocks: list[torch.nn.Module]) -> None:
        self.outputs: list[torch.Tensor] = []
        root.register_forward_pre_hook(lambda module, args: self.outputs.clear())
        for block in blocks:
            block.register_forward_hook(self._record)

    def _record(self, module: torch.nn.Module, args, output) -> None:
        first = output[0] if isinstance(output, (tuple, list)) else output
        if torch.is_grad_enabled() and torch.is_tensor(first) and first.requires_grad:
            self.outputs.append(first)

    def attach(self, loss: torch.Tensor) -> torch.Tensor:
        for out in self.outputs:
            loss = loss + _ZeroGrad.apply(out)
        self.outputs.clear()
        return loss


def shard_model(model: torch.nn.Module, device: torch.device, world_size: int) -> torch.nn.Module:
    """FSDP2 in place: one unit per block of `fsdp_blocks`, then the root (the rest)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    blocks = fsdp_blocks(model)
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # A parameter without a gradient on some rank (an unused loss, a skipped expert) reduces a zero
    # gradient, so every rank reduce-scatters the same tensors. Unlike DDP, a parameter unused on
    # every rank then gets a zero gradient rather than none: AdamW still decays it.
    model.set_reduce_scatter_unused_params(True)
    model._kivla_anchors = BlockAnchors(model, blocks)
    return model


def backward_loss(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """`loss` plus the zero terms that keep FSDP units in the graph (`loss` itself otherwise)."""
    anchors = getattr(model, "_kivla_anchors", None)
    return anchors.attach(loss) if anchors is not None else loss


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
    """Leave the process group together: a rank that tears gloo down while another is still in its
    last collective aborts the process ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the module itself: FSDP2 shards in place)."""
    return getattr(model, "module", model)
