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
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def ada_rms_norm(x: Tensor, modulation: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Adaptive RMSNorm (pi0.5): scale, shift and a residual gate come from the conditioning.

    x [B, N, W]; modulation [B, 3·W] = (scale, shift, gate) -> (scale·rmsnorm(x) + shift [B, N, W],
    gate [B, 1, W]). (1, 0, 1) is a plain RMSNorm with a unit gate.
    """
    scale, shift, gate = modulation[:, None, :].chunk(3, dim=-1)
    return torch.addcmul(shift, F.rms_norm(x, x.shape[-1:], None, eps), scale), gate


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


def rope_tables(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin [B, 1, N, head_dim / 2] for positions [B, N]; computed once, shared by all layers."""
    half = head_dim // 2
    freqs = theta ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None, :, None] * freqs
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate x [B, heads, N, hd] by the tables of `rope_tables` (half-split rotary embedding)."""
    cos, sin = rope
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class QKVProjection(nn.Module):
    """Projects a stream to query heads and (grouped) key/value heads, with RoPE on q and k."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        # One matmul for q, k and v (fewer kernel launches: the expert runs 10 times a chunk).
        self.qkv = nn.Linear(dim, (num_heads + 2 * num_kv_heads) * head_dim, bias=False)
        self.out = nn.Linear(num_heads * head_dim, dim, bias=False)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, N, W] -> q [B, h, N, hd], k and v [B, kv, N, hd] (q and k rotated)."""
        h, kv = self.num_heads, self.num_kv_heads
        qkv = rearrange(self.qkv(x), "b n (h d) -> b h n d", d=self.head_dim)  # [B, h + 2kv, N, hd]
        qk = apply_rope(qkv[:, : h + kv], rope)  # q and k heads rotated together
        return qk[:, :h], qk[:, h:], qkv[:, h + kv :]


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """bool [B, Nq, Nk] (True = may attend) -> additive [B, 1, Nq, Nk] (0 or −inf), built once a
    forward pass instead of once a layer. Every row must allow at least one key."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill_(~allowed, float("-inf"))[:, None]


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Grouped-query attention. q [B, h, Nq, hd]; k, v [B, kv, Nk, hd]; mask from `additive_mask`
    [B, 1, Nq, Nk]. Returns [B, Nq, h·hd]."""
    out = F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        scale=1.0 / math.sqrt(q.shape[-1]),
        enable_gqa=q.shape[1] != k.shape[1],
    )
    return rearrange(out, "b h n d -> b n (h d)")
