"""Vision pretraining of the built-in VLM's image stem, before any language.

PaliGemma's image encoder learned to see before its language model read it. The built-in world
knows what it draws, so the tiny VLM's stem can learn the same way in about a minute: the image token
holding each object's centroid must name its class (colour x shape), the gripper's token the
gripper, every other token "nothing" (`object_token_labels`), through a linear head on the
RMS-normed stem output: the backbone's object head when it has naming attention (kept: it is what
the words of a prompt look with, kivla.model.naming), otherwise a head thrown away afterwards. On
2 CPU cores 1,500 steps at batch 32
take about a minute and name 90% of held-out objects (docs/learning.md, twelfth round), where the
same stem trained inside the VLM by language pretraining named about 80% after 600 steps (first
round).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from kivla.data.world_scene import NUM_LABELS, Renderer, is_object_label, labelled_images
from kivla.model.backbone import TinyVLM
from kivla.model.vision import object_token_labels
from kivla.train.loop import native_bf16


@dataclass(frozen=True)
class StemPretrainConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    heldout_scenes: int = 400

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "heldout_scenes"):
            if getattr(self, name) < 1:
                raise ValueError(f"StemPretrainConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"StemPretrainConfig.lr: expected > 0, got {self.lr}")


def _batch(rng: np.random.Generator, n: int, renderer: Renderer, patch_size: int) -> tuple[Tensor, Tensor]:
    """-> images float [n, 3, S, S] in [0, 1], object-token labels long [n, tokens]."""
    images, labels = labelled_images(rng, n, renderer)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return x, object_token_labels(torch.from_numpy(labels), NUM_LABELS, patch_size)


def object_accuracy(logits: Tensor, targets: Tensor) -> float:
    """Share of the object-owning tokens (not the gripper's, not the table's) named correctly."""
    owns = is_object_label(targets)
    return float((logits.argmax(-1)[owns] == targets[owns]).float().mean())


def pretrain_stem(backbone: TinyVLM, config: StemPretrainConfig, progress: bool = True) -> dict[str, float]:
    """Train `backbone.patch_embed` in place on the world's object-token labels; returns the last
    training loss and the held-out per-object accuracy ({"loss", "object_accuracy"})."""
    if not isinstance(backbone, TinyVLM):
        raise ValueError(f"stem pretraining: needs the built-in tiny VLM, got {type(backbone).__name__}")
    c = backbone.config
    renderer = Renderer(c.image_size)
    device = next(backbone.parameters()).device
    if c.naming_labels:  # the backbone's own object head (naming attention) learns the classes
        if c.naming_labels != NUM_LABELS:
            raise ValueError(
                f"BackboneConfig.naming_labels: the world has {NUM_LABELS} label classes, "
                f"got {c.naming_labels}"
            )
        head, read = backbone.naming.object_head, backbone.naming.object_logits
    else:
        with torch.random.fork_rng():  # a seeded head that leaves the global generator as it was
            torch.manual_seed(config.seed)
            head = nn.Linear(c.width, NUM_LABELS, device=device)
        read = lambda tokens: head(F.rms_norm(tokens.float(), (c.width,)))  # noqa: E731
    optimizer = torch.optim.AdamW([*backbone.patch_embed.parameters(), *head.parameters()], lr=config.lr,
                                  weight_decay=0.0)  # fmt: skip
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps,
                                                   pct_start=0.05)  # fmt: skip
    use_bf16 = native_bf16(device.type)

    def logits(images: Tensor) -> Tensor:  # [B, n, classes]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            tokens = backbone.stem_tokens(images.to(device))
        return read(tokens)

    rng = np.random.default_rng([config.seed, 11])
    loss = torch.zeros(())
    for _ in tqdm(range(config.steps), desc="pretrain the image stem", disable=not progress):
        images, targets = _batch(rng, config.batch_size, renderer, c.patch_size)
        loss = F.cross_entropy(logits(images).flatten(0, 1), targets.flatten().to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    images, targets = _batch(
        np.random.default_rng([config.seed, 12]), config.heldout_scenes, renderer, c.patch_size
    )
    with torch.no_grad():
        accuracy = object_accuracy(logits(images).cpu(), targets)
    return {"loss": float(loss.detach()), "object_accuracy": accuracy}
