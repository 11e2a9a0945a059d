"""The numpy batch BPE gives exactly the ids of the HF `tokenizers` library."""

import numpy as np
import pytest

from kivla.tokenizers.bpe import IntegerBPE


def _same(bpe: IntegerBPE, symbols: np.ndarray) -> None:
    ours, library = bpe.encode(symbols), bpe.encode_with_library(symbols)
    assert len(ours) == len(library)
    for index, (a, b) in enumerate(zip(ours, library, strict=True)):
        assert np.array_equal(a, b), f"chunk {index}: {a.tolist()} != {b.tolist()}"


def test_matches_library_on_fast_chunks(fitted, test_chunks):
    tok = fitted["fast"]
    low, high = tok.alphabet
    symbols = np.clip(tok.quantize(tok.transform(test_chunks.astype(np.float64))), low, high)
    _same(tok.bpe, symbols)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_library_on_random_and_repetitive_streams(seed):
    rng = np.random.default_rng(seed)
    # Long runs of one symbol (merge (a, a) chains), skewed small alphabets and pure noise.
    runs = np.repeat(rng.integers(-2, 3, size=(300, 12)), rng.integers(1, 9), axis=1)[:, :64]
    skewed = np.rint(rng.laplace(0, 1.5, size=(300, 64))).clip(-6, 6).astype(np.int64)
    noise = rng.integers(-6, 7, size=(300, 64))
    train = np.concatenate([runs, skewed, noise])
    bpe = IntegerBPE.train(train, -6, 6, vocab_size=300, min_frequency=2)
    _same(bpe, train)
    _same(bpe, np.concatenate([runs[:, ::-1], noise[:, :7], noise[:, :7]], axis=1))
    _same(bpe, np.zeros((3, 1), dtype=np.int64))  # one-symbol words
    _same(bpe, np.full((2, 200), 0, dtype=np.int64))  # one long run
    assert bpe.encode(np.zeros((0, 5), dtype=np.int64)) == []


def test_matches_library_at_scale_with_the_largest_dense_vocab():
    from kivla.tokenizers import FASTTokenizer
    from kivla.tokenizers.synthetic import smooth_chunks

    tok = FASTTokenizer.fit(smooth_chunks(5000, seed=7), scale=20, vocab_size=2048)
    assert tok.vocab_size == 2048
    test = smooth_chunks(5000, seed=8).astype(np.float64)
    low, high = tok.alphabet
    _same(tok.bpe, np.clip(tok.quantize(tok.transform(test)), low, high))
