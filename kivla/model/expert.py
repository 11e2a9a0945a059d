"""The action expert: a smaller transformer, one layer per backbone layer, reading the backbone.

In layer i, the expert's queries attend over [backbone prefix K/V of layer i ; expert K/V of layer
i] (shared attention, separate weights). Flow time t enters through adaptive RMSNorm (pi0.5). The
expert's tokens are the H noisy action steps, optionally preceded by one state token and one token
of spatial-softmax keypoints over the image (kivla.model.keypoints; or the keypoints join the flow
time in the adaptive norms).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kivla.model.backbone import Backbone, PrefixCache
from kivla.model.config import ExpertConfig
from kivla.model.keypoints import GoalPoint, SpatialKeypoints
from kivla.model.layers import QKVProjection, SwiGLU, ada_rms_norm, additive_mask, attend, rope_tables
from kivla.model.masks import expert_attention_mask


def time_embedding(t: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> Tensor:
    """Sinusoidal embedding of t [B] in [0, 1] -> [B, dim] (periods as in openpi)."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** fraction
    angles = t.to(torch.float32)[:, None] * (2 * math.pi / period)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


@dataclass
class ExpertContext:
    mask: Tensor  # additive [B, 1, E, Np + E]
    rope: tuple[Tensor, Tensor]  # cos, sin [B, 1, E, head_dim / 2]
    keypoint_token: Tensor | None = None  # [B, 1, W] when keypoints enter as a token
    keypoint_cond: Tensor | None = None  # [B, W] when they enter the adaptive norms
    keypoint_state: Tensor | None = None  # [B, 2 x points] when they join the state's token


def _check_layer(field: str, layer: int, num_layers: int) -> None:
    """`ExpertConfig.<field>` must index one of the backbone's layers (negative from the end)."""
    if not -num_layers <= layer < num_layers:
        raise ValueError(f"ExpertConfig.{field}: expected in [-{num_layers}, {num_layers - 1}], got {layer}")


class ExpertLayer(nn.Module):
    def __init__(self, config: ExpertConfig, num_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        c = config
        self.attn = QKVProjection(c.width, c.num_heads, num_kv_heads, head_dim)
        self.mlp = SwiGLU(c.width, c.mlp_hidden)

    def forward(
        self,
        x: Tensor,
        modulation: Tensor,  # [B, 2, 3·W]: attention and MLP norms
        rope: tuple[Tensor, Tensor],
        prefix_k: Tensor,
        prefix_v: Tensor,
        mask: Tensor,
    ) -> Tensor:
        """x [B, E, W]; prefix_k/v [B, kv, Np, hd]; mask additive [B, 1, E, Np + E]."""
        h, gate = ada_rms_norm(x, modulation[:, 0])
        q, k, v = self.attn(h, rope)
        keys = torch.cat([prefix_k, k], dim=2)
        values = torch.cat([prefix_v, v], dim=2)
        x = x + gate * self.attn.out(attend(q, keys, values, mask))
        h, gate = ada_rms_norm(x, modulation[:, 1])
        return x + gate * self.mlp(h)


class ActionExpert(nn.Module):
    """v_theta(x_t, t | prefix): velocity of the flow for an action chunk [B, H, D]."""

    def __init__(self, config: ExpertConfig, backbone: Backbone, state_token: bool = False) -> None:
        super().__init__()
        if config.num_heads is None:  # derived: one query head per backbone kv head
            config = dataclasses.replace(config, num_heads=backbone.num_kv_heads)
        c = config
        if c.num_heads % backbone.num_kv_heads:
            raise ValueError(
                f"ExpertConfig.num_heads: must be a multiple of the backbone's kv heads "
                f"({backbone.num_kv_heads}), got {c.num_heads}"
            )
        self.config, self.state_token = config, state_token
        self.action_in = nn.Linear(c.action_dim, c.width)
        self.time_mlp = nn.Sequential(
            nn.Linear(c.time_embedding_dim, c.width), nn.SiLU(), nn.Linear(c.width, c.width), nn.SiLU()
        )
        num_points = c.keypoints + c.goal_point if c.keypoints else 0  # the goal joins the keypoints
        joined = 2 * num_points if c.keypoint_input == "state" else 0
        if joined and not state_token:
            raise ValueError("ExpertConfig.keypoint_input: 'state' needs the state as an expert token")
        self.state_in = nn.Linear(c.state_dim + joined, c.width) if state_token else None
        self.keypoints = self.keypoints_in = self.goal = None
        if c.keypoints:
            if backbone.image_grid is None:
                raise ValueError(
                    f"ExpertConfig.keypoints: needs a backbone whose prefix starts with a square grid of "
                    f"image tokens; {type(backbone).__name__} has none (use keypoints=0)"
                )
            _check_layer("keypoint_layer", c.keypoint_layer, backbone.num_layers)
            self.offset_layer = (
                c.keypoint_layer if c.keypoint_offset_layer is None else c.keypoint_offset_layer
            )
            _check_layer("keypoint_offset_layer", self.offset_layer, backbone.num_layers)
            value_dim = backbone.num_kv_heads * backbone.head_dim
            self.keypoints = SpatialKeypoints(c.keypoints, value_dim, backbone.image_grid,
                                              conditioned=c.keypoints_follow_prompt,
                                              offsets=c.keypoint_offsets,
                                              prompt_pool=c.keypoint_prompt_pool,
                                              naming=c.keypoint_naming,
                                              peak=c.keypoint_peak)  # fmt: skip
            if c.goal_point:
                self.goal_layer = c.keypoint_layer if c.goal_layer is None else c.goal_layer
                _check_layer("goal_layer", self.goal_layer, backbone.num_layers)
                self.goal = GoalPoint(value_dim, backbone.image_grid)
            if c.keypoint_input == "token":
                self.keypoints_in = nn.Linear(2 * num_points, c.width)
            elif c.keypoint_input == "norm":  # added to the time conditioning, which ends in a SiLU as well
                self.keypoints_in = nn.Sequential(nn.Linear(2 * num_points, c.width), nn.SiLU(),
                                                  nn.Linear(c.width, c.width), nn.SiLU())  # fmt: skip
        self.layers = nn.ModuleList(
            ExpertLayer(c, backbone.num_kv_heads, backbone.head_dim) for _ in range(backbone.num_layers)
        )
        # One projection gives every adaptive norm its (scale, shift, gate): 2 a layer + the final
        # one; computed once a call instead of once a norm. Starts as plain RMSNorm with unit gates.
        self.num_norms = 2 * backbone.num_layers + 1
        self.modulation = nn.Linear(c.width, self.num_norms * 3 * c.width)
        nn.init.zeros_(self.modulation.weight)
        with torch.no_grad():  # (scale, shift, gate) = (1, 0, 1) for every norm
            self.modulation.bias.view(self.num_norms, 3, c.width).copy_(
                torch.tensor([1.0, 0.0, 1.0])[:, None]
            )
        self.action_out = nn.Linear(c.width, c.action_dim)
        self.head_dim, self.rope_theta = backbone.head_dim, backbone.rope_theta

    def context(
        self, cache: PrefixCache, num_actions: int, dtype: torch.dtype,
        forced: tuple[Tensor, Tensor] | None = None,
    ) -> ExpertContext:  # fmt: skip
        """Mask and RoPE tables of the expert tokens, and the keypoint token; they depend on the
        prefix only, so sampling builds them once for all Euler steps. `forced` = (use bool [B, F],
        points [B, F, 2]) replaces the first F of `points` where `use` holds (teacher forcing)."""
        as_token = self.keypoints is not None and self.config.keypoint_input == "token"
        num_expert = num_actions + (self.state_in is not None) + as_token
        readable = cache.valid
        if not self.config.attend_image:  # the image reaches the expert through its keypoints only
            readable = cache.valid.clone()
            readable[:, : self.keypoints.grid**2] = False
        mask = additive_mask(expert_attention_mask(readable, num_expert), dtype)
        # Expert positions continue after the valid prefix; the suffix never enters this stream.
        start = cache.valid.long().sum(dim=1, keepdim=True)
        positions = start + torch.arange(num_expert, device=cache.valid.device)[None]
        keypoint_token = keypoint_cond = keypoint_state = None
        if self.keypoints is not None:  # [B, K, 2] -> one token in front of the others, FiLM or state
            points = self.points(cache)  # [B, K (+1: the goal, third), 2]
            if forced is not None:
                use, true = forced
                f = use.shape[1]
                head = torch.where(use[..., None], true.to(points.dtype), points[:, :f])
                points = torch.cat([head, points[:, f:]], dim=1)
            points = points * self.config.keypoint_gain
            if self.config.keypoint_input == "state":
                keypoint_state = points.flatten(1)  # [B, 2 points]
            else:
                features = self.keypoints_in(points.flatten(1).to(dtype))  # [B, W]
                keypoint_token, keypoint_cond = (features[:, None], None) if as_token else (None, features)
        rope = rope_tables(positions, self.head_dim, self.rope_theta, dtype)
        return ExpertContext(mask, rope, keypoint_token, keypoint_cond, keypoint_state)

    def points(self, cache: PrefixCache) -> Tensor:
        """The points the expert reads [B, K (+1), 2] in [-1, 1]: its keypoints, with the goal point
        (when it has one) third, after the target's and the second object's keypoints."""
        c = self.config
        values = cache.values
        points = self.keypoints(
            values[c.keypoint_layer], cache.valid, cache.image_naming, values[self.offset_layer]
        )  # [B, K, 2]
        if self.goal is None:
            return points
        goal = self.goal(cache.values[self.goal_layer], cache.valid, points[:, :2]).to(points.dtype)  # [B, 2]
        return torch.cat([points[:, :2], goal[:, None], points[:, 2:]], dim=1)

    def forward(
        self,
        cache: PrefixCache,
        noisy_actions: Tensor,
        t: Tensor,
        state: Tensor | None = None,
        context: ExpertContext | None = None,
    ) -> Tensor:
        """cache: per-layer prefix K/V [B, ...]; noisy_actions [B, H, D]; t [B]; state [B, S] -> [B, H, D]."""
        if len(cache.keys) != len(self.layers):
            raise ValueError(f"cache: expected {len(self.layers)} layers of K/V, got {len(cache.keys)}")
        if context is None:
            context = self.context(cache, noisy_actions.shape[1], noisy_actions.dtype)
        cond = self.time_mlp(time_embedding(t, self.config.time_embedding_dim).to(noisy_actions.dtype))
        if context.keypoint_cond is not None:
            cond = cond + context.keypoint_cond.to(cond.dtype)
        x = self.action_in(noisy_actions)  # [B, H, W]
        if self.state_in is not None:
            if state is None:
                raise ValueError("state: required when the state enters as an expert token")
            if context.keypoint_state is not None:
                state = torch.cat([state, context.keypoint_state.to(state.dtype)], dim=-1)
            x = torch.cat([self.state_in(state)[:, None], x], dim=1)
        if context.keypoint_token is not None:
            x = torch.cat([context.keypoint_token.to(x.dtype), x], dim=1)
        modulation = self.modulation(cond).view(x.shape[0], self.num_norms, -1)
        for i, (layer, k, v) in enumerate(zip(self.layers, cache.keys, cache.values, strict=True)):
            x = layer(x, modulation[:, 2 * i : 2 * i + 2], context.rope, k, v, context.mask)
        h, _ = ada_rms_norm(x, modulation[:, -1])
        return self.action_out(h[:, x.shape[1] - noisy_actions.shape[1] :])
