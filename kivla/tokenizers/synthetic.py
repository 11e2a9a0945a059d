"""Smooth synthetic action chunks for tests, the CLI and the benchmark (no dataset needed).

Each dimension of a chunk follows minimum-jerk segments between random waypoints (the profile of
the built-in world's scripted expert: zero velocity and acceleration at every waypoint), plus a
little low-frequency cosine so the dimensions are not piecewise identical.
"""

from __future__ import annotations

import numpy as np


def minimum_jerk(s: np.ndarray) -> np.ndarray:
    """Minimum-jerk position profile 10s³ − 15s⁴ + 6s⁵ for progress s in [0, 1]."""
    return s**3 * (10.0 - 15.0 * s + 6.0 * s**2)


def smooth_chunks(
    n: int,
    horizon: int = 50,
    action_dim: int = 7,
    seed: int = 0,
    max_segments: int = 3,
    amplitude: float = 0.9,
) -> np.ndarray:
    """`n` smooth chunks [n, horizon, action_dim] (float32) inside [−amplitude, amplitude]."""
    if n < 0 or horizon < 2 or action_dim < 1 or max_segments < 1:
        raise ValueError(
            f"smooth_chunks: expected n >= 0, horizon >= 2, action_dim >= 1, max_segments >= 1, "
            f"got n={n}, horizon={horizon}, action_dim={action_dim}, max_segments={max_segments}"
        )
    rng = np.random.default_rng(seed)
    t = np.arange(horizon, dtype=np.float64)  # [H]
    # Segment boundaries per chunk: 0 = b0 < b1 < … < bS = H − 1 (S varies per chunk, shared by
    # dims). Durations are random weights in [0.5, 1.5], so no segment is shorter than ~1/7 of H.
    segments = rng.integers(1, max_segments + 1, size=n)  # [n]
    weights = rng.uniform(0.5, 1.5, size=(n, max_segments))
    weights[np.arange(max_segments)[None] >= segments[:, None]] = 0.0  # unused: zero length at the end
    ends = np.cumsum(weights, 1) / weights.sum(1, keepdims=True) * (horizon - 1)
    bounds = np.concatenate([np.zeros((n, 1)), ends], 1)  # [n, S+1]; unused ones equal H − 1
    waypoints = rng.uniform(-0.75, 0.75, size=(n, max_segments + 1, action_dim))  # [n, S+1, D]
    # For every step: its segment (strict >, so t = H − 1 stays in the last used segment) and its
    # progress s in [0, 1] inside the segment.
    index = (t[None, :, None] > bounds[:, None, 1:-1]).sum(-1)  # [n, H]
    start = np.take_along_axis(bounds, index, 1)
    stop = np.take_along_axis(bounds, index + 1, 1)
    s = np.clip((t[None] - start) / np.maximum(stop - start, 1e-9), 0.0, 1.0)
    a = np.take_along_axis(waypoints, index[..., None], 1)  # [n, H, D]
    b = np.take_along_axis(waypoints, index[..., None] + 1, 1)
    chunks = a + (b - a) * minimum_jerk(s)[..., None]
    # A slow wobble (under one period per chunk) on top.
    freq = rng.uniform(0.2, 1.0, size=(n, 1, action_dim))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, action_dim))
    chunks += 0.1 * np.cos(2 * np.pi * freq * t[None, :, None] / horizon + phase)
    return np.clip(chunks, -amplitude, amplitude).astype(np.float32)
