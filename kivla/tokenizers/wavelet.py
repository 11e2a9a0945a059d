"""Wavelet tokens: multilevel discrete wavelet transform along time (pywavelets), quantization and
the same integer BPE as FAST. Coefficients are flattened coarse first: [cA_n, cD_n, …, cD_1]."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pywt

from kivla.tokenizers.base import register
from kivla.tokenizers.bpe import IntegerBPE
from kivla.tokenizers.coefficients import QuantizedBPETokenizer, check_quantization


@dataclass(frozen=True)
class WaveletConfig:
    wavelet: str = "db4"  # any discrete wavelet name pywt knows ("haar", "db2", "sym4", …)
    level: int | None = None  # decomposition levels; None = the deepest pywt allows for H
    # "periodization" gives exact reconstruction with about H coefficients (near-orthonormal).
    mode: str = "periodization"
    scale: float = 10.0
    vocab_size: int = 1024
    min_frequency: int = 2

    def __post_init__(self) -> None:
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"wavelet: expected a discrete wavelet name such as 'db4', got {self.wavelet!r}")
        if self.mode not in pywt.Modes.modes:
            raise ValueError(f"mode: expected one of {pywt.Modes.modes}, got {self.mode!r}")
        if self.level is not None and self.level < 1:
            raise ValueError(f"level: expected >= 1 or None, got {self.level}")
        check_quantization(self.scale, self.vocab_size, self.min_frequency)


@register
class WaveletTokenizer(QuantizedBPETokenizer):
    """Wavelet coefficients → round(scale · c) → integer BPE."""

    kind = "wavelet"
    config_class = WaveletConfig

    def __init__(self, config: WaveletConfig, horizon: int, action_dim: int, bpe: IntegerBPE | None) -> None:
        super().__init__(config, horizon, action_dim, bpe)
        max_level = pywt.dwt_max_level(horizon, config.wavelet)
        self.level = max_level if config.level is None else config.level
        if self.level < 1 or self.level > max_level:
            raise ValueError(
                f"level: {config.level} levels of {config.wavelet!r} need a longer horizon than {horizon} "
                f"(at most {max_level})"
            )
        probe = pywt.wavedec(np.zeros(horizon), config.wavelet, mode=config.mode, level=self.level)
        self.band_lengths = [len(band) for band in probe]  # coarse first

    @property
    def num_coefficients(self) -> int:
        return sum(self.band_lengths) * self.action_dim

    def transform(self, chunks: np.ndarray) -> np.ndarray:
        bands = pywt.wavedec(chunks, self.config.wavelet, mode=self.config.mode, level=self.level, axis=1)
        return np.concatenate(bands, axis=1)  # [N, C, D]

    def inverse(self, coefficients: np.ndarray) -> np.ndarray:
        bands = np.split(coefficients, np.cumsum(self.band_lengths)[:-1], axis=1)
        chunks = pywt.waverec(bands, self.config.wavelet, mode=self.config.mode, axis=1)
        return chunks[:, : self.horizon]

    def _state(self) -> dict[str, Any]:
        return {**super()._state(), "band_lengths": self.band_lengths}
