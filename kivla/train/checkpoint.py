"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a directory `<run>/checkpoints/step_<N>/`:
  model.safetensors       weights (full state dict, also under DDP/FSDP)
  ema.safetensors         EMA weights, when EMA is on
  optimizer.safetensors   optimizer tensors; optimizer.json holds the rest (param groups, keys)
  trainer.json            step, scheduler state, counters
Random state needs no file: the trainer reseeds every step from (seed, step, rank).
plus whatever the caller writes with `write_extra` (policy config, normalizer, tokenizers).
The newest complete checkpoint is the highest `step_*` directory: incomplete ones are hidden
`.tmp-*` directories, so `latest_checkpoint` can never pick a half-written one.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from kivla.io import atomic_directory, write_json

STEP_DIR = re.compile(r"^step_(\d+)$")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _tensors_for_file(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied embeddings): store independent copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for name, slots in state["state"].items():
        entry = meta["state"][name] = {}
        for slot, value in slots.items():
            if torch.is_tensor(value):
                key = f"{name}::{slot}"
                tensors[key] = value
                entry[slot] = {"tensor": key}
            else:
                entry[slot] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state = {
        name: {
            slot: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
            for slot, v in slots.items()
        }
        for name, slots in meta["state"].items()
    }
    return {"state": state, "param_groups": meta["param_groups"]}


def checkpoint_dir(checkpoint_root: str | Path, step: int) -> Path:
    """Where checkpoint `step` lives under `checkpoint_root` (`step_00001200`)."""
    return Path(checkpoint_root) / f"step_{step:08d}"


def save_checkpoint(
    checkpoint_root: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ema: torch.nn.Module | None = None,
    trainer_state: dict[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
    keep_last: int = 3,
    write: bool = True,
) -> Path:
    """Write checkpoint `step` under `checkpoint_root` atomically; keep only the newest `keep_last`.

    Every rank must call this (gathering a sharded state dict is collective); only the ranks with
    `write=True` (the main process) touch the disk.
    """
    target = checkpoint_dir(checkpoint_root, step)
    if optimizer is not None:
        model_state, optim_state = get_state_dict(model, optimizer, options=_FULL)
    else:
        model_state, optim_state = get_state_dict(model, [], options=_FULL)[0], None
    if not write:
        return target
    with atomic_directory(target) as tmp:
        save_file(_tensors_for_file(model_state), tmp / "model.safetensors")
        if ema is not None:
            save_file(_tensors_for_file(ema.state_dict()), tmp / "ema.safetensors")
        if optim_state is not None:
            tensors, meta = _flatten_optimizer(optim_state)
            save_file(_tensors_for_file(tensors), tmp / "optimizer.safetensors")
            write_json(tmp / "optimizer.json", meta)
        scheduler_state = None
        if scheduler is not None:
            scheduler_state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        write_json(
            tmp / "trainer.json",
            {"step": step, "scheduler": scheduler_state, **(trainer_state or {})},
        )
        if write_extra is not None:
            write_extra(tmp)
    prune_checkpoints(checkpoint_root, keep_last)
    return target


def list_checkpoints(checkpoint_root: str | Path) -> list[Path]:
    """Complete checkpoints under `checkpoint_root`, oldest first."""
    root = Path(checkpoint_root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoint_root: str | Path) -> Path | None:
    found = list_checkpoints(checkpoint_root)
    return found[-1] if found else None


def prune_checkpoints(checkpoint_root: str | Path, keep_last: int) -> None:
    if keep_last < 1:
        raise ValueError(f"keep_last: expected >= 1, got {keep_last}")
    for old in list_checkpoints(checkpoint_root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load `model.safetensors` (or any safetensors state dict) into `model`."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint weights not found: {path}")
    model.load_state_dict(load_file(path), strict=strict)


def load_checkpoint(
    checkpoint_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ema: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote; returns trainer.json (its `step` is the next step)."""
    d = Path(checkpoint_dir)
    for name in ("model.safetensors", "trainer.json"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"checkpoint {d} is missing {name}")
    trainer = json.loads((d / "trainer.json").read_text())
    model_state = load_file(d / "model.safetensors")
    if optimizer is not None:
        if not (d / "optimizer.safetensors").is_file():
            raise FileNotFoundError(f"checkpoint {d} has no optimizer state to resume from")
        optim_state = _unflatten_optimizer(
            load_file(d / "optimizer.safetensors"), json.loads((d / "optimizer.json").read_text())
        )
        set_state_dict(
            model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=_FULL
        )
    else:
        set_state_dict(model, [], model_state_dict=model_state, optim_state_dict={}, options=_FULL)
    if ema is not None:
        if not (d / "ema.safetensors").is_file():
            raise FileNotFoundError(f"checkpoint {d} has no EMA weights (ema.safetensors)")
        ema.load_state_dict(load_file(d / "ema.safetensors"))
    if scheduler is not None and trainer.get("scheduler") is not None:
        scheduler.load_state_dict({**trainer["scheduler"], "lr_lambdas": [None] * len(scheduler.lr_lambdas)})
    return trainer


def resolve_policy_dir(path: Path) -> Path:
    """A bundle / checkpoint directory as is; a training run directory -> its latest checkpoint."""
    if not (path / "policy.json").is_file() and (path / "checkpoints").is_dir():
        return latest_checkpoint(path / "checkpoints") or path
    return path
