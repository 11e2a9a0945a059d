"""Flow validation error: sampled chunks vs ground-truth chunks on held-out dataset frames.

For each frame, `bundle.act`-style sampling (10 Euler steps from seeded noise, prefix KV cache)
gives a chunk [H, D]; the error is the MSE to the dataset's chunk in *normalized* units (the
bundle's quantile normalizer, q01 -> -1 and q99 -> +1), over the steps that are not padding
(`action_is_pad`). Lower is better; a policy that always outputs the per-dimension mean of a
uniform [-1, 1] target would score about 1/3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kivla.data.lerobot_format import ACTION_KEY


@dataclass
class ValidationConfig:
    num_frames: int = 256  # frames drawn without replacement (all when the dataset is smaller)
    batch_size: int = 64
    num_steps: int = 10  # Euler steps
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_frames", "batch_size", "num_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"ValidationConfig.{name}: expected >= 1, got {getattr(self, name)}")


def open_dataset(bundle, data) -> Any:
    """A raw (unnormalized) LeRobotDataset at the bundle's horizon, checked against its shapes."""
    from kivla.data.lerobot_read import LeRobotDataset

    dataset = data if not isinstance(data, (str, Path)) else LeRobotDataset(data, horizon=bundle.horizon)
    b = bundle.builder
    if dataset.horizon != bundle.horizon:
        raise ValueError(f"dataset horizon: expected {bundle.horizon} (the policy's), got {dataset.horizon}")
    if dataset.action_dim != b.action_dim or dataset.state_dim != b.state_dim:
        raise ValueError(
            f"dataset: action/state dims {dataset.action_dim}/{dataset.state_dim} do not match the "
            f"policy's {b.action_dim}/{b.state_dim}"
        )
    if getattr(dataset, "normalizer", None) is not None:
        raise ValueError("dataset: pass an unnormalized LeRobotDataset (the bundle normalizes)")
    return dataset


def _normalize(bundle, actions: np.ndarray) -> np.ndarray:
    norm = bundle.normalizer
    if norm is None or ACTION_KEY not in norm.bounds:
        return actions
    return norm.normalize(ACTION_KEY, actions)


def flow_validation(bundle, data, config: ValidationConfig | None = None) -> dict[str, Any]:
    """{"mse": masked MSE in normalized units, "mse_per_dim": [D], "frames": n, "valid_steps": n}.

    `data`: a LeRobot dataset directory or an unnormalized `LeRobotDataset` with horizon H.
    """
    config = config or ValidationConfig()
    dataset = open_dataset(bundle, data)
    rng = np.random.default_rng([config.seed, 13])
    rows = np.sort(rng.choice(len(dataset), min(config.num_frames, len(dataset)), replace=False))
    generator = torch.Generator().manual_seed(config.seed)
    squared = np.zeros(bundle.builder.action_dim)  # summed squared error per dim over valid steps
    valid_steps = 0
    for start in range(0, len(rows), config.batch_size):
        items = [dataset[int(r)] for r in rows[start : start + config.batch_size]]
        obs = {
            "image": np.stack([it["image"] for it in items]),
            "state": np.stack([it["state"] for it in items]),
            "instruction": [it["task"] for it in items],
        }
        predicted = _normalize(bundle, bundle.act(obs, num_steps=config.num_steps, generator=generator))
        truth = _normalize(bundle, np.stack([it["actions"] for it in items]))  # [B, H, D]
        valid = ~np.stack([it["action_is_pad"] for it in items])  # [B, H]
        squared += ((predicted - truth) ** 2 * valid[..., None]).sum(axis=(0, 1))
        valid_steps += int(valid.sum())
    per_dim = squared / max(valid_steps, 1)
    return {
        "mse": float(per_dim.mean()),
        "mse_per_dim": per_dim.tolist(),
        "frames": len(rows),
        "valid_steps": valid_steps,
    }
