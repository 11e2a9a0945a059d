"""Gradient audit: for each loss, the gradient norm it puts on each module group.

The groups are the backbone body (vision, transformer layers), the token embeddings / LM head,
and the action expert. With insulation the flow loss must put exactly 0.0 on the first two.
"""

from __future__ import annotations

import torch

from kivla.model.kibatch import KIBatch
from kivla.model.policy import KIPolicy

GROUPS = ("backbone", "embeddings", "expert")


def module_groups(policy: KIPolicy) -> dict[str, list[torch.nn.Parameter]]:
    groups = policy.backbone.parameter_groups()
    return {
        "backbone": groups["backbone"],
        "embeddings": groups["embeddings"],
        "expert": list(policy.expert.parameters()),
    }


def gradient_audit(policy: KIPolicy, batch: KIBatch, seed: int = 0) -> dict[str, dict[str, float]]:
    """{loss: {group: L2 norm of d loss / d group}} for loss in flow, fast, lm (unweighted losses).

    Each loss gets its own forward pass with the same flow noise and times (`seed`), so the
    numbers do not depend on the order. Frozen parameters and parameters a loss does not reach
    report exactly 0.0.
    """
    groups = module_groups(policy)
    report: dict[str, dict[str, float]] = {}
    was_training = policy.training
    policy.train()
    for name in policy.loss_names:
        policy.zero_grad(set_to_none=True)
        part = policy(batch, generator=torch.Generator().manual_seed(seed)).parts[name]
        if part.requires_grad:
            part.backward()
        report[name] = {group: _norm(params) for group, params in groups.items()}
    policy.zero_grad(set_to_none=True)
    policy.train(was_training)
    return report


def _norm(params: list[torch.nn.Parameter]) -> float:
    squares = [p.grad.double().pow(2).sum() for p in params if p.grad is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0
