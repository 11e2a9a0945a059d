"""The training mixture: its ratios (`MixtureConfig`) and the Trainer's batch function over it.

`MixtureBatches` draws each example of (step, micro, index) from its own generator, so a resumed
run, or a run split over ranks, sees exactly the examples a single run would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kivla.data.mixture import SOURCES, MixtureSampler
from kivla.model import flow
from kivla.model.batch import BatchBuilder
from kivla.model.kibatch import KIBatch


@dataclass(frozen=True)
class MixtureConfig:
    """Share of each source in a batch (normalized), and VQA question types kept out of training."""

    robot: float = 0.7
    caption: float = 0.1
    vqa: float = 0.15
    text: float = 0.05
    exclude_question_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        weights = self.weights()
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(
                f"MixtureConfig: expected non-negative ratios with a positive sum, got {weights}"
            )
        object.__setattr__(self, "exclude_question_types", tuple(self.exclude_question_types))

    def weights(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in SOURCES}


# Language pretraining of the backbone: no robot data.
PRETRAIN_MIXTURE = MixtureConfig(robot=0.0, caption=0.3, vqa=0.6, text=0.1)


class MixtureBatches:
    """`batch_fn` for the Trainer: example i of (step, micro) is a pure function of its indices.

    Each example is drawn by the data package's `MixtureSampler` from its own generator
    `default_rng([seed, step, micro, i])`, which also draws its flow noise and time.
    """

    def __init__(self, builder: BatchBuilder, sampler: MixtureSampler, seed: int, flow_samples: int = 1,
                 grad_accum: int = 1, backbone_every: int = 1) -> None:  # fmt: skip
        """`backbone_every` N > 1: only every N-th step (0, N, 2N, ...) draws the mixture; the steps
        between are expert steps: robot examples only, `KIBatch.expert_only`."""
        if backbone_every < 1:
            raise ValueError(f"backbone_every: expected >= 1, got {backbone_every}")
        if backbone_every > 1 and sampler.robot is None:
            raise ValueError("backbone_every: expert steps need robot data (the mixture has none)")
        self.builder, self.sampler, self.seed = builder, sampler, seed
        self.flow_samples, self.grad_accum = flow_samples, grad_accum
        self.backbone_every = backbone_every

    def expert_step(self, step: int) -> bool:
        return step % self.backbone_every != 0

    def _source(self, step: int, rng: np.random.Generator) -> str:
        return "robot" if self.expert_step(step) else self.sampler.draw_source(rng)

    def _draw(self, step: int, rng: np.random.Generator):
        if self.expert_step(step):
            return self.sampler.robot_example(int(rng.integers(len(self.sampler.robot))))
        return self.sampler.draw(rng)

    def _rng(self, step: int, micro: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, step, micro, index])

    def loss_denominator(self, step: int, world_size: int, n: int) -> dict[str, float]:
        """Examples carrying each loss in the whole global batch, per shard (rank x micro-step)."""
        sources = [
            self._source(step, self._rng(step, micro, i))
            for micro in range(self.grad_accum)
            for i in range(world_size * n)
        ]
        shards = world_size * self.grad_accum
        robot = sum(s == "robot" for s in sources)
        fast = robot if self.builder.action_tokenizer is not None else 0
        labelled = self.sampler.robot_has_labels  # robot frames with the world's label maps
        seen = sum(s in ("caption", "vqa") or (labelled and s == "robot") for s in sources)
        vqa = sum(s == "vqa" or (labelled and s == "robot") for s in sources)  # prompts naming objects
        return {"flow": robot / shards, "fast": fast / shards, "lm": (len(sources) - robot) / shards,
                "vision": seen / shards, "refer": vqa / shards, "where": seen / shards,
                "ground": sum(s == "vqa" for s in sources) / shards,  # answers about named objects
                "keypoint": (robot if labelled else 0) / shards}  # fmt: skip

    def __call__(self, step: int, micro: int, rank: int, world_size: int, n: int) -> KIBatch:
        examples, noise, times = [], [], []
        h, d = self.builder.horizon, self.builder.action_dim
        for j in range(n):
            rng = self._rng(step, micro, rank * n + j)
            examples.append(self._draw(step, rng))
            noise.append(rng.standard_normal((self.flow_samples, h, d), dtype=np.float32))
            times.append(rng.random(self.flow_samples))
        batch = self.builder.collate(examples)
        batch.flow_noise = torch.from_numpy(np.stack(noise))  # [B, k, H, D]
        batch.flow_time = flow.time_from_uniform(torch.from_numpy(np.stack(times))).float()  # [B, k]
        batch.loss_denominator = self.loss_denominator(step, world_size, n)
        batch.expert_only = self.expert_step(step)
        return batch
