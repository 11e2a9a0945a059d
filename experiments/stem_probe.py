"""Can a conv stem alone see the world's objects? (docs/learning.md)

Trains an image stem + a linear head on the dense object-token labels (`object_token_labels`: the
token holding an object's centroid names its class, every other token "nothing"), with no
transformer and no language, and reports held-out accuracy per object (class, colour, shape).

    python experiments/stem_probe.py base 1500
    python experiments/stem_probe.py wide 1500
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kivla.data.world_scene import NUM_LABELS, TABLE_RGB, Renderer, labelled_images
from kivla.model.vision import object_token_labels

IMAGE_SIZE, PATCH, WIDTH = 64, 8, 256


def stems() -> dict[str, nn.Module]:
    conv = lambda i, o, s: nn.Conv2d(i, o, 3, s, 1)  # noqa: E731
    return {
        # the tiny VLM's "conv" stem: three stride-2 convs
        "base": nn.Sequential(conv(3, 32, 2), nn.GELU(), conv(32, 64, 2), nn.GELU(), conv(64, WIDTH, 2)),
        # a stride-1 conv before each downsampling
        "deep": nn.Sequential(
            conv(3, 32, 1),
            nn.GELU(),
            conv(32, 32, 2),
            nn.GELU(),
            conv(32, 64, 1),
            nn.GELU(),
            conv(64, 64, 2),
            nn.GELU(),
            conv(64, 128, 1),
            nn.GELU(),
            conv(128, 128, 2),
            nn.GELU(),
            nn.Conv2d(128, WIDTH, 1),
        ),
        # twice the channels and one stride-1 conv at 16x16
        "wide": nn.Sequential(
            conv(3, 64, 2),
            nn.GELU(),
            conv(64, 128, 2),
            nn.GELU(),
            conv(128, 128, 1),
            nn.GELU(),
            conv(128, WIDTH, 2),
        ),
    }


def scenes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random scenes (2-4 objects, the gripper anywhere) -> images [n, 3, S, S], labels [n, N]."""
    images, labels = labelled_images(np.random.default_rng(seed), n, Renderer(IMAGE_SIZE))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return x, object_token_labels(torch.from_numpy(labels), NUM_LABELS, PATCH)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("stem", choices=tuple(stems()))
    p.add_argument("steps", type=int)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    args = p.parse_args()
    torch.manual_seed(0)
    stem, head = stems()[args.stem], nn.Linear(WIDTH, NUM_LABELS)
    mean = torch.tensor(TABLE_RGB, dtype=torch.float32).view(1, 3, 1, 1) / 255
    tokens = lambda x: rearrange(stem((x - mean) / 0.25), "b w h v -> b (h v) w")  # noqa: E731
    optimizer = torch.optim.AdamW([*stem.parameters(), *head.parameters()], lr=args.lr)
    test_x, test_y = scenes(400, seed=1)
    start = time.perf_counter()
    for step in range(args.steps):
        x, y = scenes(args.batch, seed=1000 + step)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = head(F.rms_norm(tokens(x).float(), (WIDTH,)))  # [B, N, C]
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = head(F.rms_norm(tokens(test_x), (WIDTH,))).argmax(-1)
    obj = (test_y > 0) & (test_y < NUM_LABELS - 1)  # tokens that own an object (not the gripper)
    p_, y_ = pred[obj] - 1, test_y[obj] - 1
    params = sum(q.numel() for q in stem.parameters())
    print(f"{args.stem} steps={args.steps} {time.perf_counter() - start:.0f}s "
          f"class={(p_ == y_).float().mean():.3f} colour={(p_ // 3 == y_ // 3).float().mean():.3f} "
          f"shape={(p_ % 3 == y_ % 3).float().mean():.3f} params={params}")  # fmt: skip


if __name__ == "__main__":
    main()
