"""`TrainConfig`: the optimization side of a run (the recipe lives in the policy config)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps of the whole run (the LR schedule spans them)
    batch_size: int = 32  # global batch: all ranks and all accumulation micro-steps together
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 3e-4
    # the backbone's parameters (names under `backbone.`) learn at lr x this; 1: one rate for all
    backbone_lr_scale: float = 1.0
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of lr
    grad_clip: float = 1.0
    ema_decay: float | None = 0.999  # None: no EMA weights
    precision: str = "auto"  # auto (bf16 where the device has native bf16 matmuls, else fp32) | fp32 | bf16
    compile: bool = False  # torch.compile the model
    strategy: str = "ddp"  # ddp | fsdp under torchrun
    log_every: int = 10
    save_every: int = 500
    keep_last: int = 3
    seed: int = 0
    max_bad_steps: int = 5  # this many non-finite steps in a row abort the run
    stop_at: int | None = None  # leave after this step with a checkpoint (resume continues)

    def __post_init__(self) -> None:
        positive = (
            "steps",
            "batch_size",
            "grad_accum",
            "log_every",
            "save_every",
            "keep_last",
            "max_bad_steps",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr: expected > 0, got {self.lr}")
        if not self.backbone_lr_scale > 0:  # also rejects NaN
            raise ValueError(f"TrainConfig.backbone_lr_scale: expected > 0, got {self.backbone_lr_scale}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps: expected >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio: expected in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip: expected > 0, got {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay: expected in (0, 1) or None, got {self.ema_decay}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"TrainConfig.precision: expected auto, fp32 or bf16, got {self.precision!r}")
        if self.strategy not in ("ddp", "fsdp"):
            raise ValueError(f"TrainConfig.strategy: expected ddp or fsdp, got {self.strategy!r}")
        if self.stop_at is not None and not 0 < self.stop_at <= self.steps:
            raise ValueError(f"TrainConfig.stop_at: expected in [1, steps={self.steps}], got {self.stop_at}")

    def micro_batch_size(self, world_size: int) -> int:
        """Examples one rank processes per micro-step."""
        per = self.batch_size // (world_size * self.grad_accum)
        if per * world_size * self.grad_accum != self.batch_size or per < 1:
            raise ValueError(
                f"TrainConfig.batch_size: {self.batch_size} must split evenly over {world_size} rank(s) "
                f"x {self.grad_accum} accumulation step(s)"
            )
        return per

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {sorted(unknown)}")
        return cls(**d)
