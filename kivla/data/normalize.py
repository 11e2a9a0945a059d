"""Quantile normalization: q01 -> -1 and q99 -> +1 per dimension, invertible, saved as JSON.

Values outside [q01, q99] map outside [-1, 1] (no clipping), so unnormalize(normalize(x)) == x up
to float error. A dimension with q99 == q01 (constant in the data) maps to x - q01.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kivla.io import write_json

EPS = 1e-8


class QuantileNormalizer:
    """Per-key affine maps built from LeRobot stats (q01, q99)."""

    def __init__(self, bounds: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.bounds = {}
        for key, (low, high) in bounds.items():
            low, high = (
                np.asarray(low, dtype=np.float64).reshape(-1),
                np.asarray(high, dtype=np.float64).reshape(-1),
            )
            if low.shape != high.shape:
                raise ValueError(f"bounds[{key!r}]: q01 shape {low.shape} != q99 shape {high.shape}")
            if not (np.isfinite(low).all() and np.isfinite(high).all()) or (high < low).any():
                raise ValueError(f"bounds[{key!r}]: expected finite q01 <= q99")
            self.bounds[key] = (low, high)

    @classmethod
    def from_stats(
        cls, stats: dict, keys: Iterable[str] = ("action", "observation.state")
    ) -> QuantileNormalizer:
        """From a meta/stats.json dict; each key needs `q01` and `q99`."""
        bounds = {}
        for key in keys:
            if key not in stats:
                raise ValueError(f"stats: missing feature {key!r} (have {sorted(stats)})")
            for q in ("q01", "q99"):
                if q not in stats[key]:
                    raise ValueError(f"stats[{key!r}]: missing {q!r}")
            bounds[key] = (np.asarray(stats[key]["q01"]), np.asarray(stats[key]["q99"]))
        return cls(bounds)

    def _affine(self, key: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if key not in self.bounds:
            raise ValueError(f"normalizer: no bounds for {key!r} (have {sorted(self.bounds)})")
        low, high = self.bounds[key]
        if np.shape(x)[-1:] != low.shape:
            raise ValueError(f"{key}: expected last dimension {low.shape[0]}, got shape {np.shape(x)}")
        span = high - low
        scale = np.where(span > EPS, 2.0 / np.maximum(span, EPS), 1.0)
        shift = np.where(span > EPS, low + span / 2, low)
        return scale, shift

    def normalize(self, key: str, x: np.ndarray) -> np.ndarray:
        """x [..., D] -> float32, q01 -> -1, q99 -> +1."""
        scale, shift = self._affine(key, x)
        return ((np.asarray(x, dtype=np.float64) - shift) * scale).astype(np.float32)

    def unnormalize(self, key: str, x: np.ndarray) -> np.ndarray:
        """Inverse of `normalize`."""
        scale, shift = self._affine(key, x)
        return (np.asarray(x, dtype=np.float64) / scale + shift).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "kind": "quantile",
            "bounds": {k: {"q01": lo.tolist(), "q99": hi.tolist()} for k, (lo, hi) in self.bounds.items()},
        }

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (temp file beside it + os.replace)."""
        write_json(path, self.to_dict(), sort_keys=False)

    @classmethod
    def load(cls, path: str | Path) -> QuantileNormalizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"normalizer: missing file {path}")
        data = json.loads(path.read_text())
        if data.get("kind") != "quantile" or "bounds" not in data:
            raise ValueError(f"{path}: not a quantile normalizer (expected kind 'quantile' and 'bounds')")
        return cls({k: (v["q01"], v["q99"]) for k, v in data["bounds"].items()})
