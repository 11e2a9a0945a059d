"""Shared machinery of the transform + quantize + BPE tokenizers (FAST and wavelet).

A subclass supplies a linear transform along time, chunks [N, H, D] → coefficients [N, C, D], and
its inverse. This class quantizes q = round(scale · c), flattens low frequency first (row-major on
[C, D]: all D coefficients of the first row, then the next), clips to the alphabet fitted on the
training data with a counted warning, drops the trailing run of zeros (the high frequencies of a
smooth chunk: ~85% of a 50×7 stream) and runs the integer BPE on what is left; decoding inverts
each step and pads the stream back to C·D with zeros, which is lossless because C and D are fixed.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kivla.tokenizers.base import (
    ActionTokenizer,
    DecodeResult,
    check_chunks,
    check_fit_chunks,
    clip_counted,
    pack_sequences,
    split_valid_ids,
)
from kivla.tokenizers.bpe import IntegerBPE

BPE_FILE = "bpe.json"


def check_quantization(scale: float, vocab_size: int, min_frequency: int) -> None:
    """The settings FAST and wavelet share: coefficient scale and the BPE over the integers."""
    if not scale > 0:
        raise ValueError(f"scale: expected > 0, got {scale}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size: expected >= 2, got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency: expected >= 1, got {min_frequency}")


class QuantizedBPETokenizer(ActionTokenizer):
    """Transform along time → round(scale · c) → low-frequency-first flatten → integer BPE."""

    config_class: ClassVar[type]

    def __init__(self, config: Any, horizon: int, action_dim: int, bpe: IntegerBPE) -> None:
        self.config = config
        self.horizon, self.action_dim = int(horizon), int(action_dim)
        self.bpe = bpe

    # Subclass hooks -------------------------------------------------------------------------
    @abstractmethod
    def transform(self, chunks: np.ndarray) -> np.ndarray:
        """Chunks [N, H, D] → coefficients [N, C, D], vectorized over the batch."""

    @abstractmethod
    def inverse(self, coefficients: np.ndarray) -> np.ndarray:
        """Coefficients [N, C, D] → chunks [N, H, D]."""

    @property
    def num_coefficients(self) -> int:
        """C · D: integers per chunk before BPE."""
        return self.transform(np.zeros((1, self.horizon, self.action_dim))).shape[1] * self.action_dim

    # Interface ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    @property
    def alphabet(self) -> tuple[int, int]:
        """The integer range [low, high] the BPE covers; other values are clipped at encode."""
        return self.bpe.low, self.bpe.high

    @classmethod
    def fit(cls, chunks: np.ndarray, **config: Any) -> QuantizedBPETokenizer:
        chunks = check_fit_chunks(chunks)
        cfg = cls.config_class(**config)
        _, horizon, action_dim = chunks.shape
        probe = cls(cfg, horizon, action_dim, bpe=None)  # the transform needs only config and shape
        symbols = probe.quantize(probe.transform(chunks))  # [N, C·D]
        lengths = significant_lengths(symbols)  # the BPE learns the streams it will encode
        # The alphabet covers every chunk inside [-1, 1]: for an orthonormal transform
        # |c| <= ||a||_2 <= sqrt(H), so |q| <= scale·sqrt(H); wider training data widens it.
        bound = int(np.ceil(cfg.scale * np.sqrt(horizon)))
        low, high = min(int(symbols.min()), -bound), max(int(symbols.max()), bound)
        bpe = IntegerBPE.train(symbols, low, high, cfg.vocab_size, cfg.min_frequency, lengths)
        return cls(cfg, horizon, action_dim, bpe)

    def quantize(self, coefficients: np.ndarray) -> np.ndarray:
        """[N, C, D] floats → [N, C·D] ints, low frequency first."""
        n = coefficients.shape[0]
        return np.rint(coefficients * self.config.scale).astype(np.int64).reshape(n, -1)

    def encode(self, chunks: np.ndarray) -> list[np.ndarray]:
        chunks = check_chunks(chunks, self.horizon, self.action_dim)
        symbols = self.quantize(self.transform(chunks))
        low, high = self.alphabet
        symbols = clip_counted(symbols, low, high, f"{type(self).__name__}.encode", "coefficients")
        return self.bpe.encode(symbols, significant_lengths(symbols))

    def decode(self, tokens: Sequence[Sequence[int]], strict: bool = False) -> DecodeResult:
        """Ids → chunks. A chunk is valid when its ids are all known and expand to 1 … C·D
        coefficients: fewer than C·D is the normal case (the trailing zeros `encode` dropped are
        padded back); none at all, or more than C·D (truncated), is repaired and flagged."""
        ids, valid = split_valid_ids(tokens, self.vocab_size, strict)
        symbols, counts = self.bpe.expand(ids)
        length = self.num_coefficients
        packed, exact = pack_sequences(symbols, counts, length, "coefficients", strict, min_count=1)
        coefficients = packed.reshape(len(ids), length // self.action_dim, self.action_dim)
        actions = self.inverse(coefficients / self.config.scale).astype(np.float32)
        return DecodeResult(actions=actions, valid=valid & exact)

    # Serialization --------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        low, high = self.alphabet
        return {"config": asdict(self.config), "alphabet": [low, high], "bpe_file": BPE_FILE}

    def _save_files(self, directory: Path) -> None:
        self.bpe.save(directory / BPE_FILE)

    @classmethod
    def _from_state(cls, state: dict[str, Any], directory: Path) -> QuantizedBPETokenizer:
        low, high = state["alphabet"]
        bpe = IntegerBPE.load(directory / state["bpe_file"], low, high)
        return cls(cls.config_class(**state["config"]), state["horizon"], state["action_dim"], bpe)


def significant_lengths(symbols: np.ndarray) -> np.ndarray:
    """symbols [N, L] → [N] lengths up to and including the last non-zero symbol, at least 1.

    The zeros after it carry no information once decode pads back to L. One symbol is always kept,
    so an all-zero chunk still has a token and an empty id list stays an error, not a chunk.
    """
    length = symbols.shape[1]
    nonzero = symbols != 0
    trailing = np.argmax(nonzero[:, ::-1], axis=1)  # zeros after the last non-zero (0 if none at all)
    return np.where(nonzero.any(axis=1), length - trailing, 1).astype(np.int64)
