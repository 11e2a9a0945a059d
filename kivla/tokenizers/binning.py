"""Per-step uniform binning (RT-2 / OpenVLA style): every value of the chunk becomes one of
`num_bins` ids over [low, high], step by step, so a chunk is always H · D tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kivla.tokenizers.base import (
    ActionTokenizer,
    DecodeResult,
    check_chunks,
    check_fit_chunks,
    clip_counted,
    pack_sequences,
    register,
    split_valid_ids,
)


@dataclass(frozen=True)
class BinningConfig:
    num_bins: int = 256  # per dimension; ids are shared across dimensions
    low: float = -1.0  # range of the normalized actions
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.num_bins < 2:
            raise ValueError(f"num_bins: expected >= 2, got {self.num_bins}")
        if not self.high > self.low:
            raise ValueError(f"high: expected > low ({self.low}), got {self.high}")


@register
class BinningTokenizer(ActionTokenizer):
    """Uniform bins; decoding returns bin centres, so the error is at most half a bin inside range."""

    kind = "binning"

    def __init__(self, config: BinningConfig, horizon: int, action_dim: int) -> None:
        self.config = config
        self.horizon, self.action_dim = int(horizon), int(action_dim)

    @property
    def vocab_size(self) -> int:
        return self.config.num_bins

    @property
    def bin_width(self) -> float:
        return (self.config.high - self.config.low) / self.config.num_bins

    @classmethod
    def fit(cls, chunks: np.ndarray, **config: Any) -> BinningTokenizer:
        # Nothing is learned: the fixed range is the point of this baseline; fit records H and D.
        chunks = check_fit_chunks(chunks)
        return cls(BinningConfig(**config), chunks.shape[1], chunks.shape[2])

    def encode(self, chunks: np.ndarray) -> list[np.ndarray]:
        chunks = check_chunks(chunks, self.horizon, self.action_dim)
        cfg = self.config
        values = clip_counted(chunks, cfg.low, cfg.high, "BinningTokenizer.encode", "action values")
        bins = np.floor((values - cfg.low) / self.bin_width).astype(np.int64)
        bins = np.minimum(bins, cfg.num_bins - 1).reshape(len(chunks), -1)  # `high` itself → last bin
        return list(bins)

    def decode(self, tokens: Sequence[Sequence[int]], strict: bool = False) -> DecodeResult:
        ids, valid = split_valid_ids(tokens, self.vocab_size, strict)
        counts = np.array([len(a) for a in ids], dtype=np.int64)
        flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        values = self.config.low + (flat + 0.5) * self.bin_width
        # Missing steps are padded with 0.0 (the centre of the normalized range).
        packed, exact = pack_sequences(values, counts, self.horizon * self.action_dim, "values", strict)
        actions = packed.reshape(len(ids), self.horizon, self.action_dim).astype(np.float32)
        return DecodeResult(actions=actions, valid=valid & exact)

    def _state(self) -> dict[str, Any]:
        return {"config": asdict(self.config)}

    def _save_files(self, directory: Path) -> None:
        pass  # everything fits in tokenizer.json

    @classmethod
    def _from_state(cls, state: dict[str, Any], directory: Path) -> BinningTokenizer:
        return cls(BinningConfig(**state["config"]), state["horizon"], state["action_dim"])
