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
    that a keypoint can follow the named object rather than one fixed appearance; with
    `prompt_pool="attention"` each keypoint pools the prompt with its own learned attention instead
    of the mean, so that keypoint 0 can read the phrase naming the target and keypoint 1 the
    destination's (a mean of "put the red circle on the blue square" cannot tell which is which).
    With `offsets`, each token also says where inside its patch its object's centre lies (at most
    half a patch from the token's centre), and a keypoint averages those points instead of the
    token centres. With `naming`, each keypoint's score of a token also has the backbone's own
    reading of that token: the log-probability it gives each prompt word there (the "words"
    readout of pretraining, `PrefixCache.image_naming`), pooled over the prompt with the
    keypoint's prompt weights and scaled by a learned gain, so that keypoint 0 can score tokens by
    how strongly the backbone names them with the target's words instead of learning to see again.
    With `peak` >= 0, the first `peaked` keypoints (the supervised ones: the objects the instruction
    names first and second) are read as a local soft-argmax: their softmax renormalized over the
    tokens within `peak` grid cells (in x and in y) of its largest weight, so that weight left on the
    other named object does not pull the point towards it (docs/learning.md, ninth round)."""

    def __init__(self, num_keypoints: int, value_dim: int, grid: int, conditioned: bool = False,
                 key_dim: int = 32, offsets: bool = False, prompt_pool: str = "mean",
                 naming: bool = False, peak: int = -1, peaked: int = 2) -> None:  # fmt: skip
        super().__init__()
        if prompt_pool not in ("mean", "attention"):
            raise ValueError(f"prompt_pool: expected 'mean' or 'attention', got {prompt_pool!r}")
        self.grid, self.num_keypoints = grid, num_keypoints
        self.peaked = min(peaked, num_keypoints)
        self.set_peak(peak)
        self.offset = None
        if offsets:
            self.offset = nn.Linear(value_dim, 2)
            nn.init.zeros_(self.offset.weight)  # every token's point starts at its patch centre
            nn.init.zeros_(self.offset.bias)
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
        self.prompt_pool = None
        if (conditioned or naming) and prompt_pool == "attention":
            self.prompt_pool = nn.Linear(value_dim, num_keypoints)
            nn.init.zeros_(self.prompt_pool.weight)  # starts as the mean
            nn.init.zeros_(self.prompt_pool.bias)
        # Gain of the naming term per keypoint (log-probabilities are in nats: a gain of 1 already
        # makes the token the backbone names with the pooled words dominate).
        self.naming_gain = nn.Parameter(torch.ones(num_keypoints)) if naming else None
        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 - 1
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")  # row-major, as the image tokens
        self.register_buffer("coords", torch.stack([xs.flatten(), ys.flatten()], dim=-1), persistent=False)

    def forward(
        self, values: Tensor, valid: Tensor, naming: Tensor | None = None, offset_values: Tensor | None = None
    ) -> Tensor:
        """values [B, kv, Np, hd] (image tokens first), valid bool [B, Np] (and naming [B, n, Lp]
        with `naming`; the offsets read `offset_values` of another layer when given, else `values`)
        -> [B, K, 2]; examples without an image get keypoints at the centre (0, 0)."""
        offsets = self.offsets(values if offset_values is None else offset_values)
        return self.points(self.local(self.weights(values, valid, naming)), offsets)

    def set_peak(self, peak: int) -> None:
        """How keypoints 0 .. peaked-1 are read from now on: -1 the softmax mean, r >= 0 `local`."""
        if peak < -1:
            raise ValueError(f"keypoint_peak: expected -1 (off) or a radius >= 0 in grid cells, got {peak}")
        self.peak = peak

    def local(self, weights: Tensor) -> Tensor:
        """Softmax weights [B, K, n] -> the same with the first `peaked` keypoints' rows restricted
        to the (2 peak + 1)^2 tokens around their largest weight and renormalized (unchanged when
        `peak` is -1; rows without an image stay zero)."""
        if self.peak < 0:
            return weights
        g, head = self.grid, weights[:, : self.peaked]  # [B, F, n]
        top = head.argmax(-1, keepdim=True)  # [B, F, 1]
        token = torch.arange(g * g, device=weights.device)
        near = ((token // g - top // g).abs() <= self.peak) & ((token % g - top % g).abs() <= self.peak)
        head = head * near
        head = (head / head.sum(-1, keepdim=True)).nan_to_num(0.0)
        return torch.cat([head, weights[:, self.peaked :]], dim=1)

    def offsets(self, values: Tensor) -> Tensor | None:
        """values [B, kv, Np, hd] -> each image token's offset of its point from its patch centre
        [B, n, 2] (within half a patch), or None without offsets."""
        if self.offset is None:
            return None
        features = rearrange(values[:, :, : self.grid * self.grid], "b h n d -> b n (h d)")
        return torch.tanh(self.offset(features)) / self.grid  # a patch is 2 / grid wide in [-1, 1]

    def points(self, weights: Tensor, offsets: Tensor | None = None) -> Tensor:
        """Spatial softmax weights [B, K, n] (and token offsets [B, n, 2]) -> expected points [B, K, 2]."""
        coords = self.coords.to(weights.dtype)
        if offsets is not None:
            coords = coords + offsets.to(weights.dtype)  # [B, n, 2]
        return weights @ coords

    def weights(self, values: Tensor, valid: Tensor, naming: Tensor | None = None) -> Tensor:
        """values [B, kv, Np, hd], valid bool [B, Np] (naming [B, n, Lp]: log-probability of each
        prompt token's word at each image token, needed with `naming`) -> each keypoint's softmax
        over the image tokens [B, K, n] (all zero for an example without an image)."""
        n = self.grid * self.grid
        features = rearrange(values[:, :, :n], "b h n d -> b n (h d)")
        scores = self.score(features).transpose(1, 2)  # [B, K, n]
        if self.token_key is not None or self.naming_gain is not None:
            prompt = rearrange(values[:, :, n:], "b h l d -> b l (h d)")  # [B, Lp, value_dim]
            pool = self.prompt_weights(prompt, valid[:, n:])  # [B, Lp, K]
        if self.token_key is not None:
            k = self.num_keypoints
            summary = torch.einsum("blk,bld->bkd", pool, prompt)  # [B, K, value_dim]: one per keypoint
            # Keypoint k's rows of prompt_query applied to its own summary only.
            weight = self.prompt_query.weight.view(k, self.key_dim, -1)  # [K, dk, value_dim]
            bias = self.prompt_query.bias.view(k, self.key_dim)
            queries = torch.einsum("bkd,kqd->bkq", summary, weight) + bias  # [B, K, dk]
            keys = self.token_key(features)  # [B, n, dk]
            scores = scores + queries @ keys.transpose(1, 2) / self.key_dim**0.5
        if self.naming_gain is not None:
            if naming is None or naming.shape != (values.shape[0], n, values.shape[2] - n):
                got = None if naming is None else list(naming.shape)
                raise ValueError(
                    f"naming: keypoints scored by the backbone's naming need the image naming "
                    f"[B, {n}, Lp={values.shape[2] - n}] (PrefixCache.image_naming), got {got}"
                )
            named = torch.einsum("blk,bnl->bkn", pool.to(naming.dtype), naming)  # [B, K, n]
            scores = scores + (self.naming_gain[:, None] * named).to(scores.dtype)
        image = valid[:, :n]  # [B, n]
        scores = scores.masked_fill(~image[:, None], float("-inf"))
        return torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows without an image: all zero

    def prompt_weights(self, prompt: Tensor, valid: Tensor) -> Tensor:
        """Prompt values [B, Lp, value_dim], valid bool [B, Lp] -> each keypoint's weights over the
        prompt tokens [B, Lp, K] (summing to 1 over the valid ones): their mean, or with
        prompt_pool="attention" the keypoint's own learned attention."""
        if self.prompt_pool is None:
            mask = valid[..., None].to(prompt.dtype)
            return (mask / mask.sum(1, keepdim=True).clamp(min=1)).expand(-1, -1, self.num_keypoints)
        pool = self.prompt_pool(prompt).masked_fill(~valid[..., None], float("-inf"))  # [B, Lp, K]
        return torch.softmax(pool, dim=1).nan_to_num(0.0)


class GoalPoint(nn.Module):
    """Where the instruction takes its target, (x, y) in [-1, 1] over the image, from the prompt's
    values and the supervised keypoints [B, 2, 2] (the target, the object named second).

    Two learned attention pools read the prompt; from them a small MLP chooses a mix of three
    anchors (the target, the second object, the image centre) and adds an offset: a reach stays on
    the target, a place-on goes to the destination, a place-in to the named corner (the centre plus
    an offset), a push ahead of the target (the target plus an offset). Every one of these is one
    choice and one offset a phrase decides, so that supervision on the demonstrations' goals
    (`annotation.goal`) teaches them quickly. The anchors enter detached: the goal's loss trains
    this module only (docs/learning.md, fourteenth round)."""

    def __init__(self, value_dim: int, grid: int, hidden: int = 128, pools: int = 2) -> None:
        super().__init__()
        self.grid = grid
        self.pool = nn.Linear(value_dim, pools)
        nn.init.zeros_(self.pool.weight)  # starts as the mean of the prompt
        nn.init.zeros_(self.pool.bias)
        self.mlp = nn.Sequential(nn.Linear(pools * value_dim, hidden), nn.SiLU(), nn.Linear(hidden, 5))

    def forward(self, values: Tensor, valid: Tensor, anchors: Tensor) -> Tensor:
        """values [B, kv, Np, hd] (image tokens first), valid bool [B, Np], anchors [B, 2, 2] -> [B, 2]."""
        n = self.grid * self.grid
        prompt = rearrange(values[:, :, n:], "b h l d -> b l (h d)")  # [B, Lp, value_dim]
        scores = self.pool(prompt).masked_fill(~valid[:, n:, None], float("-inf"))  # [B, Lp, P]
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)
        summary = torch.einsum("blp,bld->bpd", weights, prompt).flatten(1)  # [B, P * value_dim]
        out = self.mlp(summary).float()
        mix = torch.softmax(out[:, :3], dim=-1)  # target, second object, centre (0, 0)
        offset = torch.tanh(out[:, 3:])  # [B, 2], at most the half-width of the image
        return (mix[:, :2, None] * anchors.detach().float()).sum(1) + offset
