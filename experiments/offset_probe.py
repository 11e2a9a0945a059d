"""Which backbone layer still knows where in its patch an object lies (docs/learning.md, eighteenth
round): a linear probe (ridge regression) from each layer's image-token keys and values at the
token that holds an object's centre to that centre's offset from the token's centre, fitted on
80% of the robot frames of a ki run's training batches and scored on the rest. The keypoints'
offsets (`ExpertConfig.keypoint_offsets`) can only be as fine as the layer they read.

    python experiments/offset_probe.py runs/demo/ki/checkpoints/step_00002000 --batches 60

Prints one line per layer and K/V: the held-out median error in the world's units (the table is
1 wide; a patch of the 8x8 grid is 0.125), beside the error of no offset at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from einops import rearrange

from kivla.model.bundle import PolicyBundle
from kivla.model.vision import object_tokens
from kivla.train.run import build_policy, load_run_config


def ridge(x: torch.Tensor, y: torch.Tensor, train: int, alpha: float = 1e-2) -> torch.Tensor:
    """Fit y ~ [x, 1] on the first `train` rows; predictions for the rest."""
    x = torch.cat([x, torch.ones(len(x), 1)], 1)
    a, b = x[:train], y[:train]
    w = torch.linalg.solve(a.T @ a + alpha * torch.eye(x.shape[1]), a.T @ b)
    return x[train:] @ w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--batches", type=int, default=60, help="training batches of the run to read")
    args = p.parse_args()
    bundle = PolicyBundle.load(args.checkpoint)
    policy = bundle.policy.eval()
    _, batches = build_policy(load_run_config(args.checkpoint.parent.parent / "run.json"))
    c = policy.config
    features: dict[str, list[torch.Tensor]] = {}
    offsets, grid = [], None
    with torch.no_grad():
        for step in range(args.batches):
            batch = batches(4 * step + 1, 0, 0, 1, 32)  # an expert step's batch: robot frames
            cache = policy._encode(batch, with_suffix=False).cache
            owners, centres = object_tokens(batch.image_labels, c.vision_labels, c.backbone.patch_size)
            grid = batch.image_labels.shape[-1] // c.backbone.patch_size
            own = owners > 0  # [B, n]: the token holding each labelled thing's centre
            cells = torch.arange(grid, dtype=torch.float32) + 0.5 - grid / 2
            cell = torch.stack(torch.meshgrid(cells, cells, indexing="xy"), -1).reshape(-1, 2)  # (col, row)
            offsets.append((centres - cell)[own])  # [m, 2] in patch units
            for kind, layers in (("values", cache.values), ("keys", cache.keys)):
                for layer, kv in enumerate(layers):
                    tokens = rearrange(kv[:, :, : grid * grid].float(), "b h n d -> b n (h d)")
                    features.setdefault(f"{kind} {layer}", []).append(tokens[own])
    y = torch.cat(offsets)
    train = int(0.8 * len(y))
    none = (y[train:].norm(dim=-1) / grid).median()
    print(f"{len(y)} object tokens; no offset: {none:.4f}")
    for name, parts in features.items():
        error = (ridge(torch.cat(parts), y, train) - y[train:]).norm(dim=-1) / grid
        print(f"{name}: held-out median {error.median():.4f}")


if __name__ == "__main__":
    main()
