"""The backbone vocabulary: where text, state-bin and action ids live, and what fills them.

Vocabulary of the backbone: [text | 256 state bins | action tokens], action ids at the very end
(as PaliGemma maps FAST onto its last tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

STATE_BINS = 256


class ActionTokenizerLike(Protocol):
    vocab_size: int

    def encode(self, chunks: np.ndarray) -> list[np.ndarray]: ...


class TextTokenizerLike(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def token_id(self, token: str) -> int: ...


@dataclass(frozen=True)
class VocabLayout:
    """Where each id range lives in the backbone vocabulary; action ids are the last ones."""

    text_vocab_size: int
    state_bins: int = STATE_BINS  # 0 when the state does not enter as prompt tokens
    action_vocab_size: int = 0  # 0 when there is no discrete action target
    total: int | None = None  # a pretrained vocabulary's size (HF backbones); default: the sum

    def __post_init__(self) -> None:
        needed = self.text_vocab_size + self.state_bins + self.action_vocab_size
        if self.total is not None and self.total < needed:
            raise ValueError(f"VocabLayout.total: expected >= {needed}, got {self.total}")

    @property
    def vocab_size(self) -> int:
        return self.total or self.text_vocab_size + self.state_bins + self.action_vocab_size

    @property
    def action_offset(self) -> int:
        return self.vocab_size - self.action_vocab_size

    @property
    def state_offset(self) -> int:
        return self.action_offset - self.state_bins


def discretize_state(state: np.ndarray, bins: int = STATE_BINS) -> np.ndarray:
    """Normalized state [..., S] in [-1, 1] -> bin ids [..., S] in [0, bins)."""
    return np.clip(np.floor((np.asarray(state) + 1.0) * 0.5 * bins), 0, bins - 1).astype(np.int64)
