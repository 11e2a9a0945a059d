"""The `ActionTokenizer` interface, its registry, and the checks every tokenizer shares.

A tokenizer turns normalized action chunks [N, H, D] (about [-1, 1]) into variable-length lists of
integer ids in [0, vocab_size) and back. Decoding is total in relaxed mode: any list of ints gives
a chunk plus a validity flag, so a model's sampled tokens can always be executed or rejected.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from kivla.io import write_text

CONFIG_FILE = "tokenizer.json"
FORMAT_VERSION = 1


class CoefficientClipWarning(UserWarning):
    """Values outside a tokenizer's alphabet were clipped at encode time; `.count` of `.total`."""

    def __init__(self, message: str, count: int = 0, total: int = 0) -> None:
        super().__init__(message)
        self.count, self.total = count, total


@dataclass(frozen=True)
class DecodeResult:
    """Decoded chunks and, per chunk, whether the tokens were well formed (nothing repaired)."""

    actions: np.ndarray  # [N, H, D] float32
    valid: np.ndarray  # [N] bool


class ActionTokenizer(ABC):
    """Base class: fit on chunks [N, H, D], encode to id lists, decode to chunks + validity."""

    kind: ClassVar[str]
    horizon: int
    action_dim: int

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids; every id produced by `encode` is in [0, vocab_size)."""

    @classmethod
    @abstractmethod
    def fit(cls, chunks: np.ndarray, **config: Any) -> ActionTokenizer:
        """Fit on normalized chunks [N, H, D]; `config` holds the fields of the kind's config."""

    @abstractmethod
    def encode(self, chunks: np.ndarray) -> list[np.ndarray]:
        """Chunks [N, H, D] (or one chunk [H, D]) → N int64 id arrays of varying length."""

    @abstractmethod
    def decode(self, tokens: Sequence[Sequence[int]], strict: bool = False) -> DecodeResult:
        """Id lists → chunks. Relaxed: repair and flag invalid. Strict: ValueError naming the chunk."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """JSON-serializable fields (besides kind, horizon, action_dim) needed to rebuild the tokenizer."""

    @abstractmethod
    def _save_files(self, directory: Path) -> None:
        """Write the kind's extra files (BPE model, codebook) into `directory`."""

    @classmethod
    @abstractmethod
    def _from_state(cls, state: dict[str, Any], directory: Path) -> ActionTokenizer:
        """Rebuild from the JSON written by `save` and the extra files."""

    def save(self, directory: str | os.PathLike) -> None:
        """Write `tokenizer.json` (+ the kind's files) into `directory`, each file atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_files(directory)
        header = {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "horizon": self.horizon,
            "action_dim": self.action_dim,
            "vocab_size": self.vocab_size,
        }
        write_text(directory / CONFIG_FILE, json.dumps({**header, **self._state()}, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ActionTokenizer:
        """Read a tokenizer written by `save`; on the base class the kind comes from the file."""
        directory = Path(directory)
        state = read_config(directory)
        kind = state["kind"]
        target = TOKENIZER_KINDS.get(kind)
        if target is None:
            known = sorted(TOKENIZER_KINDS)
            raise ValueError(f"{directory / CONFIG_FILE}: kind {kind!r} is not one of {known}")
        if cls is not ActionTokenizer and target is not cls:
            raise ValueError(f"{directory / CONFIG_FILE}: holds a {kind!r} tokenizer, not {cls.kind!r}")
        return target._from_state(state, directory)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(horizon={self.horizon}, action_dim={self.action_dim}, "
            f"vocab_size={self.vocab_size})"
        )


TOKENIZER_KINDS: dict[str, type[ActionTokenizer]] = {}


def register(cls: type[ActionTokenizer]) -> type[ActionTokenizer]:
    """Class decorator: make a tokenizer reachable by its `kind` name."""
    TOKENIZER_KINDS[cls.kind] = cls
    return cls


def fit_tokenizer(kind: str, chunks: np.ndarray, **config: Any) -> ActionTokenizer:
    """Fit the tokenizer named `kind` ("fast", "binning", "wavelet", "vq") on chunks [N, H, D]."""
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"kind: expected one of {sorted(TOKENIZER_KINDS)}, got {kind!r}")
    return TOKENIZER_KINDS[kind].fit(chunks, **config)


def load_tokenizer(directory: str | os.PathLike) -> ActionTokenizer:
    """Load any tokenizer saved with `save`; the kind is read from `tokenizer.json`."""
    return ActionTokenizer.load(directory)


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer saved here (expected {CONFIG_FILE})")
    state = json.loads(path.read_text())
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {state.get('format_version')!r}, expected {FORMAT_VERSION}")
    return state


def check_chunks(chunks: Any, horizon: int | None = None, action_dim: int | None = None) -> np.ndarray:
    """Validate chunks and return float64 [N, H, D]; one chunk [H, D] gets a batch axis.

    Raises ValueError naming the expected shape for wrong ndim/H/D, and for NaN or inf values.
    """
    expected = f"[N, {horizon or 'H'}, {action_dim or 'D'}]"
    try:
        array = np.asarray(chunks, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"chunks: expected a float array {expected}: {err}") from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"chunks: expected shape {expected} (or one chunk [H, D]), got {array.shape}")
    if horizon is not None and array.shape[1] != horizon:
        raise ValueError(f"chunks: expected shape {expected}, got horizon {array.shape[1]}: {array.shape}")
    if action_dim is not None and array.shape[2] != action_dim:
        raise ValueError(f"chunks: expected shape {expected}, got action_dim {array.shape[2]}: {array.shape}")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"chunks: expected shape {expected} with H, D > 0, got {array.shape}")
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(f"chunks: NaN or inf at index {tuple(int(i) for i in bad)} of {array.shape}")
    return array


def check_fit_chunks(chunks: Any) -> np.ndarray:
    array = check_chunks(chunks)
    if array.shape[0] == 0:
        raise ValueError("chunks: fit needs at least one chunk [N >= 1, H, D], got N = 0")
    return array


def as_id_arrays(tokens: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Turn any sequence of int sequences into int64 arrays; ints too large for int64 become -1."""
    out = []
    for index, seq in enumerate(tokens):
        if type(seq) is np.ndarray and seq.dtype == np.int64 and seq.ndim == 1:
            out.append(seq)  # what `encode` returns: nothing to convert
            continue
        if isinstance(seq, int | np.integer):
            # A flat id list is one chunk given without its batch: refusing beats decoding N chunks.
            raise ValueError(f"tokens[{index}]: expected a batch of id lists, got the int {seq}")
        try:
            out.append(np.asarray(seq, dtype=np.int64).reshape(-1))
        except (OverflowError, TypeError, ValueError):
            # Python ints beyond int64 are just out-of-range ids: keep them as an invalid marker.
            out.append(np.array([int(v) if -(2**62) < int(v) < 2**62 else -1 for v in seq], dtype=np.int64))
    return out


def split_valid_ids(
    tokens: Sequence[Sequence[int]], vocab_size: int, strict: bool
) -> tuple[list[np.ndarray], np.ndarray]:
    """Drop ids outside [0, vocab_size) (invalid chunk), or raise naming the chunk when strict."""
    arrays = as_id_arrays(tokens)
    valid = np.ones(len(arrays), dtype=bool)
    if not arrays:
        return arrays, valid
    # One vectorized range check over the whole batch; only offending chunks are visited.
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays)
    bad = (flat < 0) | (flat >= vocab_size)
    if bad.any():
        owner = np.repeat(np.arange(len(arrays)), counts)
        for index in np.unique(owner[bad]):
            ids = arrays[index]
            wrong = (ids < 0) | (ids >= vocab_size)
            if strict:
                raise ValueError(
                    f"tokens[{index}]: id {int(ids[wrong][0])} outside the vocabulary [0, {vocab_size})"
                )
            arrays[index] = ids[~wrong]
            valid[index] = False
    return arrays, valid


def pack_sequences(
    flat: np.ndarray, counts: np.ndarray, length: int, what: str, strict: bool, min_count: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a concatenation of N sequences (lengths `counts`) into [N, length], padding with zeros or
    truncating; returns the matrix and a bool [N] saying which sequences were well formed.

    Well formed means exactly `length` items, or, when `min_count` is given, `min_count` to `length`
    items (the FAST/wavelet streams, whose trailing zeros are implied and padded back here).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = len(counts)
    low = length if min_count is None else min_count
    exact = (counts >= low) & (counts <= length)
    if strict and not exact.all():
        index = int(np.flatnonzero(~exact)[0])
        expected = f"exactly {length}" if low == length else f"{low} to {length}"
        raise ValueError(f"tokens[{index}]: decodes to {counts[index]} {what}, expected {expected}")
    if n and (counts == length).all():  # the common case of fixed-length kinds: a plain reshape
        return flat.reshape(n, length), exact
    out = np.zeros((n, length), dtype=flat.dtype if flat.size else np.int64)
    if flat.size:
        # Column of every item inside its sequence, in one pass: items past `length` are dropped
        # (truncation), missing ones stay zero (padding).
        column = np.arange(flat.size) - np.repeat(np.cumsum(counts) - counts, counts)
        keep = column < length
        index = column + np.repeat(np.arange(n) * length, counts)
        out.reshape(-1)[index[keep]] = flat[keep]
    return out, exact


def clip_counted(values: np.ndarray, low: float, high: float, who: str, what: str) -> np.ndarray:
    """Clip to [low, high]; when anything was clipped, warn once with the count."""
    import warnings

    outside = int(np.count_nonzero((values < low) | (values > high)))
    if outside:
        message = f"{who}: clipped {outside} of {values.size} {what} to [{low}, {high}]"
        warnings.warn(CoefficientClipWarning(message, outside, values.size), stacklevel=3)
        values = np.clip(values, low, high)
    return values
