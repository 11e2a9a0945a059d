"""The training loop: plain, top to bottom, for any model whose forward returns named losses.

The model's `forward(batch)` returns an object with `.total` (the scalar to minimize) and `.parts`
(named scalar losses for logging). Batches come from `batch_fn(step, micro, rank, world_size,
micro_batch_size)`, a pure function of its arguments, so a resumed run sees the very batches it
would have seen; the random state is reseeded each step from (seed, step, rank) for the same reason.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from kivla.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from kivla.train.config import TrainConfig
from kivla.train.distributed import DistContext, backward_loss, unwrap
from kivla.train.metrics import MetricsLogger
from kivla.train.schedule import warmup_cosine

BatchFn = Callable[[int, int, int, int, int], Any]


class NonFiniteLossError(RuntimeError):
    """Raised after `max_bad_steps` consecutive steps with a non-finite loss or gradient."""


@dataclass
class TrainResult:
    step: int  # optimizer steps completed
    skipped_steps: int  # steps skipped for a non-finite loss or gradient
    checkpoint: Path | None  # the last checkpoint written
    history: list[dict[str, float]] = field(default_factory=list)  # logged records


def native_bf16(device_type: str) -> bool:
    """Whether bf16 autocast speeds this device up: CUDA, or a CPU with native bf16 matmuls
    (AVX512-BF16 / AMX; measured 1.7x faster training steps on 2 such cores, docs/learning.md)."""
    if device_type == "cuda":
        return True
    return device_type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one rank at one step: independent streams, no state to save."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def ema_update(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """EMA with warmup: the decay after n updates is min(decay, (1 + n) / (10 + n)).

    A fixed 0.999 would leave a 500-step run's average half made of its initial weights; the
    warmup lets the average follow the weights early and settle to `decay` later.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        for a, c in zip(averaged, current, strict=True):
            if a.is_floating_point():
                a.lerp_(c, 1.0 - d)
            else:  # integer buffers (vocabulary ids) are copied, not averaged
                a.copy_(c)

    return update


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases or gains); the backbone's
    parameters (names under `backbone.`) at `lr * backbone_lr_scale`."""
    named = [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model: no trainable parameters (is everything frozen?)")
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}  # (lr, decay) -> params in order
    for name, p in named:
        lr = config.lr * (config.backbone_lr_scale if name.startswith("backbone.") else 1.0)
        groups.setdefault((lr, p.ndim >= 2), []).append(p)
    # the run's lr first, matrices before the rest: at scale 1 the groups of a single-rate optimizer
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0] != config.lr, not kv[0][1]))
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr, "weight_decay": config.weight_decay if decay else 0.0}
         for (lr, decay), ps in ordered],
        lr=config.lr, betas=(0.9, 0.95),
    )  # fmt: skip


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        batch_fn: BatchFn,
        run_dir: str | Path,
        ctx: DistContext | None = None,
        write_extra: Callable[[Path], None] | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.ctx = ctx or DistContext()
        self.run_dir = Path(run_dir)
        self.batch_fn = batch_fn
        self.write_extra = write_extra
        self.progress = progress
        self.model = model.to(self.ctx.device)
        self.micro_batch = config.micro_batch_size(self.ctx.world_size)
        if config.ema_decay is not None and config.strategy == "fsdp" and self.ctx.is_distributed:
            raise ValueError(
                "TrainConfig.ema_decay: EMA is not supported with FSDP; set it to None (--ema-decay 0)"
            )
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=ema_update(config.ema_decay), use_buffers=True)
            if config.ema_decay is not None
            else None
        )
        self.wrapped = self.ctx.wrap(self.model, config.strategy)
        self.optimizer = make_optimizer(self.wrapped, config)
        self.scheduler = warmup_cosine(self.optimizer, config.warmup_steps, config.steps, config.min_lr_ratio)
        self.forward = torch.compile(self.wrapped) if config.compile else self.wrapped
        dev = self.ctx.device.type
        bf16 = config.precision == "bf16" or (config.precision == "auto" and native_bf16(dev))
        self.autocast = lambda: torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=bf16)
        self.step = 0
        self.skipped = 0
        self.bad_in_row = 0

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def resume(self) -> None:
        """Continue from the newest checkpoint of this run directory."""
        ckpt = latest_checkpoint(self.checkpoint_root)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {self.checkpoint_root}")
        state = load_checkpoint(ckpt, unwrap(self.wrapped), self.optimizer, self.scheduler, self.ema)
        self.step = int(state["step"])
        self.skipped = int(state.get("skipped_steps", 0))
        self.bad_in_row = int(state.get("bad_in_row", 0))

    def save(self) -> Path:
        return save_checkpoint(
            self.checkpoint_root,
            self.step,
            self.wrapped,
            self.optimizer,
            self.scheduler,
            self.ema,
            trainer_state={
                "skipped_steps": self.skipped,
                "bad_in_row": self.bad_in_row,
                "train_config": self.config.to_dict(),
            },
            write_extra=self.write_extra,
            keep_last=self.config.keep_last,
            write=self.ctx.is_main,
        )

    def _batch(self, micro: int) -> Any:
        batch = self.batch_fn(self.step, micro, self.ctx.rank, self.ctx.world_size, self.micro_batch)
        return batch.to(self.ctx.device) if hasattr(batch, "to") else batch

    def train_step(self) -> dict[str, float]:
        """One optimizer step (with accumulation); returns this rank's scalars."""
        cfg = self.config
        torch.manual_seed(step_seed(cfg.seed, self.step, self.ctx.rank))
        self.wrapped.train()
        self.optimizer.zero_grad(set_to_none=True)
        parts: dict[str, float] = {}
        total = 0.0
        for micro in range(cfg.grad_accum):
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext()
            if self.ctx.is_distributed and not last and hasattr(self.wrapped, "no_sync"):
                sync = self.wrapped.no_sync()  # all-reduce gradients once, on the last micro-step
            # FSDP has no no_sync: it reduce-scatters each micro-step into the sharded gradients,
            # which keeps no unsharded gradient alive between micro-steps.
            with sync:
                with self.autocast():
                    out = self.forward(self._batch(micro))
                backward_loss(self.wrapped, out.total / cfg.grad_accum).backward()
            total += out.total.item() / cfg.grad_accum
            for name, value in out.parts.items():
                parts[name] = parts.get(name, 0.0) + float(value.detach()) / cfg.grad_accum
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), cfg.grad_clip))
        finite = self.ctx.all_true(math.isfinite(total) and math.isfinite(grad_norm))
        if finite:
            self.optimizer.step()
            self.scheduler.step()  # the schedule advances with applied updates only
            if self.ema is not None:
                self.ema.update_parameters(unwrap(self.wrapped))
            self.bad_in_row = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.bad_in_row += 1
        self.step += 1
        record = {"loss": total, "grad_norm": grad_norm, **{f"loss/{k}": v for k, v in parts.items()}}
        record["lr"] = self.scheduler.get_last_lr()[0]
        record["skipped_steps"] = float(self.skipped)
        record["nonfinite"] = 0.0 if finite else 1.0
        return record

    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        if resume:
            self.resume()
        end = cfg.stop_at if cfg.stop_at is not None else cfg.steps
        logger = MetricsLogger(
            self.run_dir, cfg.steps, self.step, enabled=self.ctx.is_main, progress=self.progress
        )
        history: list[dict[str, float]] = []
        checkpoint = None
        tick, tick_step = time.perf_counter(), self.step
        interval: dict[str, list[float]] = {}  # losses and gradient norms since the last log
        try:
            while self.step < end:
                record = self.train_step()
                if not record["nonfinite"]:
                    for key, value in record.items():
                        if key in ("loss", "grad_norm") or key.startswith("loss/"):
                            interval.setdefault(key, []).append(value)
                logger.advance()
                if record["nonfinite"]:
                    logger.log(self.step, {"nonfinite_step": 1.0, "skipped_steps": float(self.skipped)})
                    if self.bad_in_row >= cfg.max_bad_steps:
                        raise NonFiniteLossError(
                            f"{self.bad_in_row} consecutive steps had a non-finite loss or gradient "
                            f"(last at step {self.step}); lower the learning rate or check the data"
                        )
                if self.step % cfg.log_every == 0 or self.step == end:
                    now = time.perf_counter()
                    # Losses as their mean over the interval's steps that computed them (a step
                    # may leave some out: RunConfig.backbone_every).
                    record = {**record, **{k: sum(v) / len(v) for k, v in interval.items()}}
                    interval = {}
                    record = self.ctx.mean(record)
                    record["steps_per_s"] = (self.step - tick_step) / max(now - tick, 1e-9)
                    tick, tick_step = now, self.step
                    logger.log(self.step, record)
                    history.append({"step": float(self.step), **record})
                if self.step % cfg.save_every == 0 or self.step == end:
                    checkpoint = self.save()
        finally:
            logger.close()
        return TrainResult(step=self.step, skipped_steps=self.skipped, checkpoint=checkpoint, history=history)
