"""FAST (Pertsch et al. 2025): orthonormal DCT-II along time, quantization, BPE over integers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from kivla.tokenizers.base import register
from kivla.tokenizers.coefficients import QuantizedBPETokenizer, check_quantization


@dataclass(frozen=True)
class FASTConfig:
    scale: float = 10.0  # γ: coefficients are round(γ · c); the quantization step is 1/γ
    vocab_size: int = 1024  # BPE vocabulary (the public processor uses 2048)
    min_frequency: int = 2  # BPE merges need a pair seen at least this often

    def __post_init__(self) -> None:
        check_quantization(self.scale, self.vocab_size, self.min_frequency)


def dct(chunks: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II along time: [N, H, D] → [N, H, D], row k holds frequency k."""
    return scipy.fft.dct(chunks, type=2, norm="ortho", axis=1)


def idct(coefficients: np.ndarray) -> np.ndarray:
    """Inverse of `dct` (orthonormal DCT-III)."""
    return scipy.fft.idct(coefficients, type=2, norm="ortho", axis=1)


@register
class FASTTokenizer(QuantizedBPETokenizer):
    """FAST tokens. Since the DCT is orthonormal, a rounding error of at most 0.5/scale per
    coefficient gives a chunk RMSE of at most 0.5/scale (Parseval) when nothing is clipped."""

    kind = "fast"
    config_class = FASTConfig

    def transform(self, chunks: np.ndarray) -> np.ndarray:
        return dct(chunks)

    def inverse(self, coefficients: np.ndarray) -> np.ndarray:
        return idct(coefficients)

    @property
    def num_coefficients(self) -> int:
        return self.horizon * self.action_dim
