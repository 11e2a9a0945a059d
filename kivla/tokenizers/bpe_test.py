"""The integer BPE: lossless, merges cross any symbol boundary, batch lookup matches the library."""

import numpy as np
import pytest

from kivla.tokenizers.bpe import IntegerBPE


def test_round_trip_is_exact_and_merges_span_sign_changes():
    rng = np.random.default_rng(0)
    # A motif mixing negative, zero and positive integers: a regex pre-tokenizer over their
    # characters would split it; here it must become a single token.
    motif = np.array([-3, 0, 5, -3, 7, 0, 0, 2])
    rows = np.concatenate([np.tile(motif, (200, 1)), rng.integers(-8, 9, size=(200, 8))], axis=1)
    bpe = IntegerBPE.train(rows, -8, 8, vocab_size=200, min_frequency=2)
    ids = bpe.encode(rows)
    symbols, counts = bpe.expand(ids)
    np.testing.assert_array_equal(symbols.reshape(rows.shape), rows)
    assert counts.tolist() == [16] * 200
    # Every row's first token covers the whole motif (possibly plus the next symbol).
    _, first_counts = bpe.expand([seq[:1] for seq in ids])
    assert first_counts.min() >= 8


def test_expand_matches_library_decode_and_handles_empty():
    rng = np.random.default_rng(1)
    rows = rng.integers(-4, 5, size=(100, 30))
    bpe = IntegerBPE.train(rows, -4, 4, vocab_size=60, min_frequency=2)
    ids = [np.array([], dtype=np.int64), *bpe.encode(rows[:5]), np.array([], dtype=np.int64)]
    symbols, counts = bpe.expand(ids)
    assert counts.tolist() == [0, 30, 30, 30, 30, 30, 0]
    library = "".join(bpe.tokenizer.decode(list(map(int, seq))).replace(" ", "") for seq in ids)
    assert len(library) == len(symbols)
    empty_symbols, empty_counts = bpe.expand([])
    assert empty_symbols.size == 0 and empty_counts.size == 0


def test_vocab_smaller_than_alphabet_is_refused():
    with pytest.raises(ValueError, match="vocab_size"):
        IntegerBPE.train(np.zeros((2, 3), dtype=np.int64), -50, 50, vocab_size=64, min_frequency=2)


def test_lengths_encode_each_row_prefix_like_the_cut_rows():
    rng = np.random.default_rng(2)
    rows = np.rint(rng.laplace(0, 1.5, size=(200, 40))).clip(-6, 6).astype(np.int64)
    lengths = rng.integers(1, 41, size=200)
    bpe = IntegerBPE.train(rows, -6, 6, vocab_size=120, min_frequency=2, lengths=lengths)
    ids = bpe.encode(rows, lengths)
    for row, length, seq in zip(rows, lengths, ids, strict=True):
        np.testing.assert_array_equal(seq, bpe.encode(row[None, :length])[0])
    symbols, counts = bpe.expand(ids)
    assert counts.tolist() == lengths.tolist()
    np.testing.assert_array_equal(symbols, rows[np.arange(40) < lengths[:, None]])
