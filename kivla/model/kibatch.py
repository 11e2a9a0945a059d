"""`KIBatch`: the batch `KIPolicy` consumes, built by `kivla.model.batch.BatchBuilder`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor


@dataclass
class KIBatch:
    """One batch; targets are None in an observation batch (sampling)."""

    images: Tensor  # float32 [B, 3, S, S] in [0, 1]
    image_mask: Tensor  # bool [B]
    prefix_ids: Tensor  # long [B, Lp]
    prefix_mask: Tensor  # bool [B, Lp]
    suffix_ids: Tensor  # long [B, Ls] (Ls may be 0)
    suffix_mask: Tensor  # bool [B, Ls]
    state: Tensor  # float32 [B, S_dim] (zeros when absent)
    suffix_loss: dict[str, Tensor] = field(default_factory=dict)  # "fast", "lm": bool [B, Ls] targets
    actions: Tensor | None = None  # float32 [B, H, D], normalized
    action_is_pad: Tensor | None = None  # bool [B, H]
    loss_mask: dict[str, Tensor] = field(default_factory=dict)  # "flow", "fast", "lm", "vision": bool [B]
    image_labels: Tensor | None = None  # uint8 [B, S, S] dense labels (0 where loss_mask["vision"] is off)
    image_refs: Tensor | None = None  # bool [B, 2, 256]: label classes the prompt refers to (first, second)
    # Where the demonstration takes the target, (x, y) in [-1, 1] over the image (the coordinates of
    # SpatialKeypoints; 0 where loss_mask["goal"] is off).
    image_goal: Tensor | None = None  # float32 [B, 2]
    # Per-example flow noise and time (k draws each); drawn inside `KIPolicy.forward` when None.
    # A data pipeline that sets them makes the loss independent of how the batch is split.
    flow_noise: Tensor | None = None  # float32 [B, k, H, D]
    flow_time: Tensor | None = None  # float32 [B, k]
    # Examples carrying each loss per shard of the global batch (see KIPolicy._batch_mean).
    loss_denominator: dict[str, float] | None = None
    # An expert step (`RunConfig.backbone_every`): only the expert's losses (flow, keypoint) are
    # computed, and an insulated backbone runs without a graph.
    expert_only: bool = False

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> KIBatch:
        def move(value: Any) -> Any:
            if isinstance(value, Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in value.items()}
            return value

        return KIBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})
