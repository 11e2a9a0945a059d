"""Spatial-softmax keypoints: where on the image the expert looks, as coordinates it can act on.

The expert reads the backbone through attention, a weighted sum of values; a position it must act
on (an absolute target xy) is then only as readable as the values' position features, and
attention that starts uniform over the image learns to single out one object slowly
(docs/learning.md, fifth round). A spatial softmax (Levine et al., 2016) turns that search into
coordinates: each of K keypoints scores every image token from its (detached) values at one backbone
layer, and returns the softmax-weighted mean of the token grid's (x, y). The gradient of a loss on
those coordinates pulls the score of the right token up at every step, whatever the rest of the
expert has learned yet. The module belongs to the expert: it reads the same K/V the expert reads
(detached under knowledge insulation) and no backbone parameter sees its gradient.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


class SpatialKeypoints(nn.Module):
    """Prefix values of the image tokens [B, kv, Np, hd] -> keypoints [B, K, 2] in [-1, 1] (x, y).

    With `conditioned`, each keypoint's score of a token also has a bilinear term between the
    token's value and the mean value of the prompt tokens (the instruction, at the same layer), so
    that a keypoint can follow the named object rather than one fixed appearance."""

    def __init__(self, num_keypoints: int, value_dim: int, grid: int, conditioned: bool = False,
                 key_dim: int = 32) -> None:  # fmt: skip
        super().__init__()
        self.grid = grid
        self.score = nn.Linear(value_dim, num_keypoints)
        nn.init.zeros_(self.score.weight)  # uniform attention at the start: every keypoint at the centre
        nn.init.zeros_(self.score.bias)
        self.token_key = self.prompt_query = None
        if conditioned:
            self.key_dim = key_dim
            self.token_key = nn.Linear(value_dim, key_dim, bias=False)
            self.prompt_query = nn.Linear(value_dim, num_keypoints * key_dim)
            nn.init.zeros_(self.prompt_query.weight)  # the term starts at zero but gets a gradient
            nn.init.zeros_(self.prompt_query.bias)
        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 - 1
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")  # row-major, as the image tokens
        self.register_buffer("coords", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)

    def forward(self, values: Tensor, valid: Tensor) -> Tensor:
        """values [B, kv, Np, hd] (image tokens first), valid bool [B, Np] -> [B, K, 2]; examples
        without an image get keypoints at the centre (0, 0)."""
        return self.points(self.weights(values, valid))

    def points(self, weights: Tensor) -> Tensor:
        """Spatial softmax weights [B, K, n] -> expected grid coordinates [B, K, 2]."""
        return weights @ self.coords.to(weights.dtype)

    def weights(self, values: Tensor, valid: Tensor) -> Tensor:
        """values [B, kv, Np, hd], valid bool [B, Np] -> each keypoint's softmax over the image
        tokens [B, K, n] (all zero for an example without an image)."""
        n = self.grid * self.grid
        features = rearrange(values[:, :, :n], "b h n d -> b n (h d)")
        scores = self.score(features).transpose(1, 2)  # [B, K, n]
        if self.token_key is not None:
            prompt = rearrange(values[:, :, n:], "b h l d -> b l (h d)")  # [B, Lp, value_dim]
            mask = valid[:, n:, None].to(prompt.dtype)
            summary = (prompt * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B, value_dim]
            queries = self.prompt_query(summary).view(summary.shape[0], -1, self.key_dim)  # [B, K, dk]
            keys = self.token_key(features)  # [B, n, dk]
            scores = scores + queries @ keys.transpose(1, 2) / self.key_dim**0.5
        image = valid[:, :n]  # [B, n]
        scores = scores.masked_fill(~image[:, None], float("-inf"))
        return torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows without an image: all zero
