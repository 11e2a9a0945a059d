"""Flow-matching math, in the seed's convention: t = 0 is noise, t = 1 is the clean chunk.

x_t = t·x1 + (1−t)·x0 with x0 ~ N(0, I); the target velocity is x1 − x0; sampling integrates
dx/dt = v(x_t, t) from t = 0 to t = 1 with Euler steps. This is the only module that knows the
convention (openpi uses the mirror one: t = 1 noise).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

BETA_ALPHA = 1.5  # s ~ Beta(1.5, 1): mass near s = 1, i.e. near t = 0 (noisy), as in pi0
TIME_EPS = 0.001


def sample_time(
    n: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> Tensor:
    """Training flow times [n] in [0.001, 1): t = 1 − (0.999·s + 0.001), s ~ Beta(1.5, 1).

    Beta(a, 1) has CDF s^a, so s = u^(1/a) with u uniform: exact and seedable by `generator`.
    """
    return time_from_uniform(torch.rand(n, generator=generator, device=device))


def time_from_uniform(u: Tensor) -> Tensor:
    """Map uniform samples u in [0, 1) to training flow times (any shape): s = u^(1/a), t = 1 − s'."""
    s = u.pow(1.0 / BETA_ALPHA)
    return 1.0 - ((1.0 - TIME_EPS) * s + TIME_EPS)


def interpolate(noise: Tensor, actions: Tensor, t: Tensor) -> Tensor:
    """x_t = t·x1 + (1−t)·x0. noise, actions [B, H, D]; t [B]."""
    t = t.view(-1, *([1] * (actions.dim() - 1)))
    return t * actions + (1.0 - t) * noise


def target_velocity(noise: Tensor, actions: Tensor) -> Tensor:
    """dx_t/dt = x1 − x0, [B, H, D]."""
    return actions - noise


def integrate(velocity: Callable[[Tensor, Tensor], Tensor], noise: Tensor, num_steps: int = 10) -> Tensor:
    """Euler-integrate `velocity(x_t [B, H, D], t [B])` from t = 0 (noise) to t = 1 (clean)."""
    if num_steps < 1:
        raise ValueError(f"num_steps: expected >= 1, got {num_steps}")
    x = noise
    dt = 1.0 / num_steps
    for step in range(num_steps):
        t = torch.full((x.shape[0],), step * dt, dtype=x.dtype, device=x.device)
        x = x + dt * velocity(x, t)
    return x
