"""Can the action expert read a position out of the backbone's image K/V? A controlled toy.

A frozen, randomly initialized `tiny` backbone sees a table-coloured 64 px image with one red disc at
a random place; the target chunk holds the disc's (x, y) in every step (dims 0-1) and two state
values (dims 2-3). Only the expert trains (the `frozen` recipe), on the flow loss, batch 32.
Reported every 50 steps on 64 held-out images: the mean absolute xy error of the sampled chunk (the
marginal, i.e. ignoring the image, gives ~0.53), how much the chunk moves when the images are rolled
across the batch, and the error on the state dims (learnable only with `--state token`).

    python experiments/expert_reading.py --state prompt --steps 300
    python experiments/expert_reading.py --state token --steps 150
    python experiments/expert_reading.py --image-pos-std 0.1 --steps 150
    python experiments/expert_reading.py --spread      # per-layer spread of the image tokens' K/V
    python experiments/expert_reading.py --token-rms 1.0 --image-pos-std 0.5 --pos sincos --steps 150
    python experiments/expert_reading.py --flow-time 0 --steps 150   # train at pure noise only
    python experiments/expert_reading.py --keypoints 16 --keypoint-layer 0 --steps 150
    python experiments/expert_reading.py --keypoints 16 --state token --steps 150

Appends one JSON line per report to runs/exp/expert_reading.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from torch import Tensor

from kivla.model.kibatch import KIBatch
from kivla.model.policy import KIPolicy
from kivla.model.presets import RECIPES, SIZES

SIZE, HORIZON, PROMPT = 64, 50, 8
TABLE = torch.tensor([205, 195, 175]) / 255.0


def toy_batch(b: int, generator: torch.Generator) -> tuple[KIBatch, torch.Tensor]:
    """b images with one disc (radius 5 px) and their target chunks [b, H, 4]; -> (batch, centres [b, 2])."""
    centres = torch.rand(b, 2, generator=generator) * 0.8 + 0.1
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    images = TABLE.view(1, 3, 1, 1).expand(b, 3, SIZE, SIZE).clone()
    dx, dy = xx[None] - centres[:, 0, None, None] * SIZE, yy[None] - centres[:, 1, None, None] * SIZE
    disc = dx**2 + dy**2 < 25
    for channel, value in enumerate((0.9, 0.1, 0.1)):
        images[:, channel][disc] = value
    state = torch.rand(b, 5, generator=generator)
    actions = torch.cat([(centres * 2 - 1)[:, None].expand(b, HORIZON, 2),
                         (state[:, 2:4] * 2 - 1)[:, None].expand(b, HORIZON, 2)], dim=-1)  # fmt: skip
    ids = torch.arange(PROMPT).repeat(b, 1) + 2
    batch = KIBatch(
        images=images, image_mask=torch.ones(b, dtype=torch.bool), prefix_ids=ids,
        prefix_mask=torch.ones(b, PROMPT, dtype=torch.bool), suffix_ids=ids[:, :0],
        suffix_mask=ids[:, :0].bool(), state=state, actions=actions.contiguous(),
        action_is_pad=torch.zeros(b, HORIZON, dtype=torch.bool),
        loss_mask={k: torch.full((b,), k == "flow") for k in ("flow", "fast", "lm")},
    )  # fmt: skip
    return batch, centres


def build(
    state: str,
    image_pos_std: float,
    seed: int,
    token_rms: float = 0.05,
    pos: str = "normal",
    keypoints: int = 0,
    keypoint_layer: int = -1,
) -> KIPolicy:
    torch.manual_seed(seed)
    config = SIZES["tiny"].policy_config(
        image_size=SIZE, vocab_size=64, horizon=HORIZON, action_dim=4, state_dim=5
    )
    expert = {"keypoints": keypoints, "keypoint_layer": keypoint_layer}
    policy = KIPolicy(RECIPES["frozen"].apply(config, state_input=state, expert=expert))
    policy.backbone.image_norm.weight.data.fill_(token_rms)
    if pos == "sincos":
        table = sincos_2d(8, policy.backbone.config.width)
        policy.backbone.image_pos.data = table * image_pos_std / table.pow(2).mean().sqrt()
    else:
        policy.backbone.image_pos.data *= image_pos_std / 0.02
    return policy


def sincos_2d(side: int, width: int, max_period: float = 10_000.0) -> Tensor:
    """Fixed 2-D sine/cosine position features of a side×side token grid (row-major) -> [side², width]:
    the first half of the channels encodes the row, the second the column (as in MAE)."""
    if width % 4:
        raise ValueError(f"width: must be a multiple of 4 for 2-D sincos features, got {width}")
    quarter = width // 4
    frequencies = max_period ** (-torch.arange(quarter, dtype=torch.float32) / quarter)
    grid = torch.arange(side, dtype=torch.float32)
    rows, cols = torch.meshgrid(grid, grid, indexing="ij")

    def encode(coord: Tensor) -> Tensor:
        angles = coord.reshape(-1, 1) * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1)


@torch.no_grad()
def spread(policy: KIPolicy) -> list[dict[str, float]]:
    """Per backbone layer: std of the image tokens' K and V across tokens over their RMS
    (0: every image token looks the same to the expert)."""
    batch, _ = toy_batch(16, torch.Generator().manual_seed(3))
    cache = policy.encode_prefix(batch)
    n = policy.config.backbone.num_image_tokens
    rel = lambda x: float(x.std(2).pow(2).mean().sqrt() / x.pow(2).mean().sqrt())  # noqa: E731
    return [{"layer": i, "k_spread": rel(k[:, :, :n]), "v_spread": rel(v[:, :, :n])}
            for i, (k, v) in enumerate(zip(cache.keys, cache.values, strict=True))]  # fmt: skip


@torch.no_grad()
def evaluate(policy: KIPolicy, val: KIBatch, centres: torch.Tensor) -> dict[str, float]:
    policy.eval()
    chunk = policy.sample_actions(val, generator=torch.Generator().manual_seed(5))
    rolled = policy.sample_actions(dataclasses.replace(val, images=val.images.roll(1, 0)),
                                   generator=torch.Generator().manual_seed(5))  # fmt: skip
    policy.train()
    return {
        "xy_abs_err": float((chunk[..., :2].mean(1) - (centres * 2 - 1)).abs().mean()),
        "image_sensitivity": float((chunk[..., :2] - rolled[..., :2]).abs().mean()),
        "state_abs_err": float((chunk[..., 2:].mean(1) - (val.state[:, 2:4] * 2 - 1)).abs().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", choices=("prompt", "token"), default="prompt")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--image-pos-std", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--flow-time", type=float, default=None, help="train at this flow time only (0: noise)"
    )
    parser.add_argument("--keypoints", type=int, default=0)
    parser.add_argument("--keypoint-layer", type=int, default=-1)
    parser.add_argument("--token-rms", type=float, default=0.05)
    parser.add_argument("--pos", choices=("normal", "sincos"), default="normal")
    parser.add_argument("--spread", action="store_true", help="print the K/V spread per layer and stop")
    args = parser.parse_args()
    policy = build(
        args.state,
        args.image_pos_std,
        args.seed,
        args.token_rms,
        args.pos,
        args.keypoints,
        args.keypoint_layer,
    )
    if args.spread:
        print(json.dumps(spread(policy)))
        return
    val, centres = toy_batch(64, torch.Generator().manual_seed(99))
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=args.lr)
    generator, start = torch.Generator().manual_seed(args.seed + 1), time.time()
    out = Path("runs/exp/expert_reading.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    for step in range(1, args.steps + 1):
        loss = policy(toy_batch(32, generator)[0], flow_time=args.flow_time).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps:
            metrics = evaluate(policy, val, centres)
            record = {"args": vars(args), "step": step, "loss": float(loss.detach()), **metrics,
                      "seconds": round(time.time() - start, 1)}  # fmt: skip
            print(json.dumps(record), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
