"""BPE over integer symbols, shared by the FAST and wavelet tokenizers.

Each integer of the alphabet [low, high] is one character (a CJK ideograph, so no normalizer or
byte-level mapping ever splits it), and the HF `tokenizers` BPE model runs with **no**
pre-tokenizer: a whole chunk is one "word", so merges may span any symbols. This is what the
public FAST processor does not do (it maps integers to unicode and runs a byte-level BPE with a
regex pre-tokenizer, so merges stop at character-class boundaries).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, trainers

from kivla.io import write_text

# CJK Unified Ideographs: 20,992 consecutive letters, far from surrogates and whitespace.
BASE_CODEPOINT = 0x4E00
MAX_ALPHABET = 20_992


class IntegerBPE:
    """A trained BPE over the integers [low, high]: int matrices in, id arrays out, and back."""

    def __init__(self, tokenizer: Tokenizer, low: int, high: int) -> None:
        self.tokenizer = tokenizer
        self.low, self.high = int(low), int(high)
        self._build_expansion_table()

    @classmethod
    def train(
        cls,
        symbols: np.ndarray,
        low: int,
        high: int,
        vocab_size: int,
        min_frequency: int,
        lengths: np.ndarray | None = None,
    ) -> IntegerBPE:
        """Train on symbols [N, L] (ints in [low, high]; row i uses its first `lengths[i]` symbols,
        all L when `lengths` is None); every alphabet integer keeps its own id."""
        alphabet = int(high) - int(low) + 1
        if alphabet > MAX_ALPHABET:
            raise ValueError(f"alphabet: {alphabet} integers in [{low}, {high}], at most {MAX_ALPHABET}")
        if vocab_size < alphabet:
            raise ValueError(
                f"vocab_size: {vocab_size} is smaller than the alphabet of {alphabet} integers "
                f"[{low}, {high}]; raise vocab_size or lower the scale"
            )
        tokenizer = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=[chr(BASE_CODEPOINT + i) for i in range(alphabet)],
            limit_alphabet=alphabet,
        )
        tokenizer.train_from_iterator(_to_strings(symbols, low, lengths), trainer=trainer)
        return cls(tokenizer, low, high)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, symbols: np.ndarray, lengths: np.ndarray | None = None) -> list[np.ndarray]:
        """Symbols [N, L] (already clipped to [low, high]; row i uses its first `lengths[i]`, all L
        when None) → N id arrays, through HF `tokenizers` in one `encode_batch_fast` call."""
        strings = _to_strings(symbols, self.low, lengths)
        encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        return [np.asarray(e.ids, dtype=np.int64) for e in encode_batch(strings, add_special_tokens=False)]

    def expand(self, ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Valid id arrays → (all symbols concatenated, symbols per sequence [N]); vectorized lookup."""
        counts_ids = np.array([len(a) for a in ids], dtype=np.int64)
        flat_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        lengths = self._lengths[flat_ids]  # symbols behind each id
        total = int(lengths.sum())
        # Position of every output symbol inside the flat table: start of its id + offset within it.
        first = np.cumsum(lengths) - lengths
        index = np.repeat(self._offsets[flat_ids] - first, lengths) + np.arange(total)
        symbols = self._table[index]
        per_id_end = np.cumsum(counts_ids)
        cum = np.concatenate([[0], np.cumsum(lengths)])
        counts = cum[per_id_end] - cum[per_id_end - counts_ids]
        return symbols, counts

    def save(self, path: Path) -> None:
        write_text(path, self.tokenizer.to_str())

    @classmethod
    def load(cls, path: Path, low: int, high: int) -> IntegerBPE:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: BPE model file missing")
        return cls(Tokenizer.from_file(str(path)), low, high)

    def _build_expansion_table(self) -> None:
        """For every id, the integers it stands for, as one flat table + offsets + lengths."""
        pieces = [np.zeros(0, dtype=np.int64)] * self.vocab_size
        for token, index in self.tokenizer.get_vocab().items():
            codes = np.frombuffer(token.encode("utf-32-le"), dtype="<u4").astype(np.int64)
            pieces[index] = codes - BASE_CODEPOINT + self.low
        self._lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        self._offsets = np.cumsum(self._lengths) - self._lengths
        self._table = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        vocab = self.tokenizer.get_vocab()
        alphabet = [chr(BASE_CODEPOINT + i) for i in range(self.high - self.low + 1)]
        missing = [i + self.low for i, char in enumerate(alphabet) if char not in vocab]
        if missing:
            raise ValueError(f"BPE model: alphabet integers {missing[:5]} have no token id")
        self._symbol_ids = np.array([vocab[char] for char in alphabet], dtype=np.int64)  # integer → id


def _to_strings(symbols: np.ndarray, low: int, lengths: np.ndarray | None = None) -> list[str]:
    """[N, L] ints → N strings (row i: its first lengths[i] symbols, or all L), built in one buffer
    decode (no per-symbol Python)."""
    n, length = symbols.shape
    codes = (np.asarray(symbols, dtype=np.int64) - low + BASE_CODEPOINT).astype("<u4")
    if lengths is None:
        lengths = np.full(n, length, dtype=np.int64)
    else:
        codes = codes[np.arange(length) < np.asarray(lengths)[:, None]]
    text = codes.tobytes().decode("utf-32-le")
    ends = np.cumsum(lengths).tolist()
    return [text[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
