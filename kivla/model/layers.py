"""Transformer building blocks shared by the backbone and the expert: RMSNorm, adaptive RMSNorm,
rotary position embedding, SwiGLU, and grouped-query attention over explicit K/V."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class AdaRMSNorm(nn.Module):
    """RMSNorm whose scale and shift come from a conditioning vector (flow time), plus a residual gate.

    The modulation starts at zero, so at initialization it is a plain RMSNorm with a unit gate.
    """

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.modulation = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, N, W], cond [B, C] -> (normalized x [B, N, W], gate [B, 1, W])."""
        scale, shift, gate = self.modulation(cond)[:, None, :].chunk(3, dim=-1)
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed * (1.0 + scale) + shift, 1.0 + gate


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def apply_rope(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """Rotate x [B, heads, N, hd] by positions [B, N] (half-split rotary embedding)."""
    half = x.shape[-1] // 2
    freqs = theta ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)  # [hd/2]
    angles = positions.to(torch.float32)[:, None, :, None] * freqs  # [B, 1, N, hd/2]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class QKVProjection(nn.Module):
    """Projects a stream to query heads and (grouped) key/value heads, with RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, head_dim: int, theta: float) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim, self.theta = (
            num_heads,
            num_kv_heads,
            head_dim,
            theta,
        )
        self.q = nn.Linear(dim, num_heads * head_dim, bias=False)
        self.kv = nn.Linear(dim, 2 * num_kv_heads * head_dim, bias=False)
        self.out = nn.Linear(num_heads * head_dim, dim, bias=False)

    def forward(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, N, W] -> q [B, h, N, hd], k and v [B, kv, N, hd] (q and k rotated)."""
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.kv(x), "b n (two h d) -> two b h n d", two=2, h=self.num_kv_heads)
        return apply_rope(q, positions, self.theta), apply_rope(k, positions, self.theta), v


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Grouped-query attention. q [B, h, Nq, hd]; k, v [B, kv, Nk, hd]; mask bool [B, Nq, Nk].

    Returns [B, Nq, h·hd]."""
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask[:, None],
        scale=1.0 / math.sqrt(q.shape[-1]),
        enable_gqa=q.shape[1] != k.shape[1],
    )
    return rearrange(out, "b h n d -> b n (h d)")
