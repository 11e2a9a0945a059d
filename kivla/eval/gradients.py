"""Gradient study: how each loss's gradient on the backbone behaves across flow times t.

The seed's claim: the flow-matching gradient is non-stationary in t (its size and noise change
with the noise level), while the cross-entropy on discrete action tokens is well behaved. For a
policy (the naive recipe by default: no insulation, so the flow loss reaches the backbone) and M
fixed batches, the flow loss is evaluated with t fixed inside each of `bins` intervals of [0, 1]
(t uniform inside the bin per example, the same noise for every bin), and the backbone gradient
g ∈ R^P is recorded. Per bin we report, over the M batches:
  mean_norm          E‖g‖
  variance           tr Cov(g) = E‖g − ḡ‖² (unbiased over batches)
  relative_variance  tr Cov(g) / E‖g‖²  (scale-free: 0 = the same direction every batch, ~1 = noise)
The discrete-token CE (FAST by default) does not depend on t; its statistics over the same M
batches are the reference line. Policies trained without a discrete target still reserve its ids
in their vocabulary, so a FAST tokenizer fitted on the data can be attached for the measurement.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from kivla.model.batch import BatchBuilder
from kivla.model.kibatch import KIBatch


@dataclass
class GradientStudyConfig:
    bins: int = 5
    batches: int = 8  # M batches the statistics run over
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"GradientStudyConfig.bins: expected >= 1, got {self.bins}")
        if self.batches < 2:
            raise ValueError(f"GradientStudyConfig.batches: expected >= 2 (a variance), got {self.batches}")
        if self.batch_size < 1:
            raise ValueError(f"GradientStudyConfig.batch_size: expected >= 1, got {self.batch_size}")


class _Moments:
    """Running sum of g and of ‖g‖² (P floats, not M × P)."""

    def __init__(self) -> None:
        self.n, self.sum, self.sq, self.norms = 0, None, 0.0, []

    def add(self, g: torch.Tensor) -> None:
        g = g.double()
        self.sum = g.clone() if self.sum is None else self.sum + g
        self.sq += float(g.pow(2).sum())
        self.norms.append(float(g.norm()))
        self.n += 1

    def stats(self) -> dict[str, float]:
        n = self.n
        mean_sq = self.sq / n
        centered = max(self.sq - float(self.sum.pow(2).sum()) / n, 0.0)  # Σ‖g − ḡ‖²
        variance = centered / (n - 1)
        return {
            "mean_norm": float(np.mean(self.norms)),
            "variance": variance,
            "relative_variance": variance / mean_sq if mean_sq > 0 else 0.0,
        }


def backbone_parameters(policy) -> list[torch.nn.Parameter]:
    params = [p for p in policy.backbone.parameters() if p.requires_grad]
    if not params:
        raise ValueError("policy: the backbone has no trainable parameters (frozen recipe?)")
    return params


def _flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    if not loss.requires_grad:
        return torch.zeros(sum(p.numel() for p in params))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    flat = [
        (g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat(flat)


def fast_loss(policy, batch: KIBatch) -> torch.Tensor:
    """Teacher-forced CE over the batch's discrete action tokens, whatever the recipe's weights."""
    out = policy.backbone(batch.images, batch.image_mask, batch.prefix_ids, batch.prefix_mask,
                          batch.suffix_ids, batch.suffix_mask)  # fmt: skip
    return policy._token_loss(batch, out, "fast")  # the policy's own definition of the loss


def gradient_study(
    policy, batches: list[KIBatch], config: GradientStudyConfig | None = None
) -> dict[str, Any]:
    """Per-bin flow gradient statistics and the discrete CE's, on the backbone (see module docstring).

    `batches`: robot batches (flow loss on); the CE is measured when they carry action tokens.
    """
    config = config or GradientStudyConfig(batches=len(batches))
    if len(batches) < 2:
        raise ValueError(f"batches: expected at least 2 batches, got {len(batches)}")
    params = backbone_parameters(policy)
    edges = np.linspace(0.0, 1.0, config.bins + 1)
    flow = [_Moments() for _ in range(config.bins)]
    fast = _Moments()
    has_tokens = all(bool((b.suffix_loss["fast"] & b.loss_mask["fast"][:, None]).any()) for b in batches)
    was_training = policy.training
    policy.train()
    h, d = policy.config.expert.horizon, policy.config.expert.action_dim
    k = policy.config.flow_samples_per_example
    for j, batch in enumerate(batches):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, j]).generate_state(1)[0]))
        noise = torch.randn(batch.batch_size, k, h, d, generator=g)  # same noise in every bin
        u = torch.rand(batch.batch_size, k, generator=g)
        saved = batch.flow_noise, batch.flow_time
        batch.flow_noise = noise
        for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
            batch.flow_time = (lo + (hi - lo) * u).float()
            flow[i].add(_flat_grad(policy(batch).parts["flow"], params))
        if has_tokens:
            fast.add(_flat_grad(fast_loss(policy, batch), params))
        batch.flow_noise, batch.flow_time = saved
    policy.train(was_training)
    bins = [
        {"t_low": float(lo), "t_high": float(hi), **m.stats()}
        for lo, hi, m in zip(edges[:-1], edges[1:], flow, strict=True)
    ]
    norms = [b["mean_norm"] for b in bins]
    return {
        "config": asdict(config),
        "parameters": sum(p.numel() for p in params),
        "flow": bins,
        "fast": fast.stats() if has_tokens else None,
        # max / min over bins of the mean norm: 1 for a loss whose gradient does not depend on t.
        "flow_norm_spread": max(norms) / min(norms) if min(norms) > 0 else float("inf"),
    }


def robot_batches(bundle, data, config: GradientStudyConfig, action_tokenizer=None) -> list[KIBatch]:
    """M robot batches from a LeRobot dataset directory, collated by the bundle's batch builder.

    With `action_tokenizer` (or the bundle's own), the batches carry its tokens as FAST targets;
    its ids must fit the action range the vocabulary reserves.
    """
    from kivla.data.mixture import MixtureSampler
    from kivla.eval.validation import open_dataset

    dataset = open_dataset(bundle, data)
    builder = bundle.builder
    if action_tokenizer is not None:
        if action_tokenizer.vocab_size > builder.layout.action_vocab_size:
            raise ValueError(
                f"action_tokenizer: vocab_size {action_tokenizer.vocab_size} exceeds the "
                f"{builder.layout.action_vocab_size} action ids of the policy's vocabulary"
            )
        builder = BatchBuilder(builder.text, action_tokenizer, image_size=builder.image_size,
                               horizon=builder.horizon, action_dim=builder.action_dim,
                               state_dim=builder.state_dim, state_input=builder.state_input,
                               max_prompt_len=builder.max_prompt_len, max_suffix_len=builder.max_suffix_len,
                               layout=builder.layout)  # fmt: skip
    sampler = MixtureSampler(
        robot=dataset, ratios={"robot": 1.0}, seed=config.seed, normalizer=bundle.normalizer
    )
    return [builder.collate(sampler.sample(config.batch_size)) for _ in range(config.batches)]


def markdown(study: dict[str, Any], title: str = "Gradient variance across flow time") -> str:
    lines = [f"## {title}", "", f"Backbone parameters: {study['parameters']:,}; "
             f"{study['config']['batches']} batches of {study['config']['batch_size']}.", "",
             "| loss | t bin | mean ‖g‖ | tr Cov(g) | relative variance |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    for b in study["flow"]:
        lines.append(f"| flow | [{b['t_low']:.1f}, {b['t_high']:.1f}) | {b['mean_norm']:.4g} | "
                     f"{b['variance']:.4g} | {b['relative_variance']:.3f} |")  # fmt: skip
    if study["fast"] is not None:
        f = study["fast"]
        lines.append(f"| discrete CE | any | {f['mean_norm']:.4g} | {f['variance']:.4g} | "
                     f"{f['relative_variance']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
