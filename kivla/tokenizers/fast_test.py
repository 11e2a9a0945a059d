"""FAST: the quantization error bound, token counts on smooth chunks, and the coefficient layout."""

import numpy as np
import pytest
import scipy.fft

from kivla.tokenizers import FASTConfig, FASTTokenizer
from kivla.tokenizers.fast import dct, idct


@pytest.mark.parametrize("scale", [4.0, 10.0, 25.0])
def test_round_trip_error_is_bounded_by_the_quantization_step(train_chunks, test_chunks, scale):
    # Rounding moves every DCT coefficient by at most 0.5/scale. The DCT is orthonormal, so per
    # (chunk, dim) column the time-domain error has the same L2 norm (Parseval):
    #   RMSE <= 0.5/scale,   max |error| <= ||error column||_2 <= 0.5·sqrt(H)/scale.
    tok = FASTTokenizer.fit(train_chunks, scale=scale, vocab_size=1024)
    out = tok.decode(tok.encode(test_chunks), strict=True)
    error = out.actions.astype(np.float64) - test_chunks
    column_norm = np.sqrt((error**2).sum(axis=1))  # [N, D]
    assert np.sqrt((error**2).mean()) <= 0.5 / scale
    assert column_norm.max() <= 0.5 * np.sqrt(50) / scale * (1 + 1e-5)
    assert np.abs(error).max() <= 0.5 * np.sqrt(50) / scale * (1 + 1e-5)
    # Rounding error is about uniform on the coefficients that matter (RMSE near step/sqrt(12)),
    # smaller on the tiny high-frequency ones rounded to 0: well inside the bound, never zero.
    assert 0.1 / scale < np.sqrt((error**2).mean()) < 0.35 / scale


def test_median_tokens_on_smooth_chunks_at_vocab_1024(fitted, test_chunks):
    tok = fitted["fast"]
    assert tok.vocab_size == 1024
    lengths = np.array([len(ids) for ids in tok.encode(test_chunks)])
    assert 20 <= np.median(lengths) <= 80
    assert lengths.max() < 350  # BPE compresses every chunk below one symbol per coefficient


def test_coefficients_are_low_frequency_first(fitted, test_chunks):
    tok = fitted["fast"]
    chunk = test_chunks[:1].astype(np.float64)
    symbols = tok.quantize(tok.transform(chunk))[0]  # [H·D]
    coefficients = scipy.fft.dct(chunk[0], type=2, norm="ortho", axis=0)  # [H, D] per chunk
    np.testing.assert_array_equal(symbols[:7], np.rint(10 * coefficients[0]))  # all D of freq 0
    np.testing.assert_array_equal(symbols, np.rint(10 * coefficients).reshape(-1))  # row-major
    # The tokens carry the stream up to its last non-zero coefficient; the rest is implied zeros.
    decoded_symbols, counts = tok.bpe.expand(tok.encode(chunk))
    last = int(np.flatnonzero(symbols)[-1])
    assert counts.tolist() == [last + 1] and last + 1 < 350
    np.testing.assert_array_equal(decoded_symbols, symbols[: last + 1])


def test_batched_transform_matches_per_chunk_scipy(test_chunks):
    batch = test_chunks[:20].astype(np.float64)
    looped = np.stack([scipy.fft.dct(c, type=2, norm="ortho", axis=0) for c in batch])
    np.testing.assert_allclose(dct(batch), looped, atol=1e-12)
    np.testing.assert_allclose(idct(dct(batch)), batch, atol=1e-12)


def test_alphabet_covers_the_normalized_range(fitted):
    # |c| <= sqrt(H) for chunks in [-1, 1]: any such chunk encodes without clipping.
    low, high = fitted["fast"].alphabet
    assert low <= -np.ceil(10 * np.sqrt(50)) and high >= np.ceil(10 * np.sqrt(50))
    extreme = np.ones((2, 50, 7))
    extreme[1] *= -1
    out = fitted["fast"].decode(fitted["fast"].encode(extreme), strict=True)
    assert np.abs(out.actions - extreme).max() <= 0.5 * np.sqrt(50) / 10


def test_decode_pads_short_streams_and_truncates_long_ones(fitted, test_chunks):
    tok = fitted["fast"]
    ids = tok.encode(test_chunks[:1])[0]
    # Fewer than H·D coefficients is the normal case: the missing high frequencies are zeros.
    # Dropping the last token is a valid, coarser chunk: its coefficients become zeros.
    short = tok.decode([ids[:-1]], strict=True)
    assert short.valid.tolist() == [True]
    full_symbols, _ = tok.bpe.expand([ids])
    kept_symbols, _ = tok.bpe.expand([ids[:-1]])
    expected = np.zeros(350)
    expected[: kept_symbols.size] = full_symbols[: kept_symbols.size]
    np.testing.assert_allclose(short.actions[0], idct(expected.reshape(1, 50, 7) / 10)[0], atol=1e-6)
    # More than H·D coefficients: cut to H·D and flagged (strict raises).
    long = np.concatenate([ids] * 400)
    out = tok.decode([long])
    assert out.valid.tolist() == [False]
    symbols, _ = tok.bpe.expand([long])
    np.testing.assert_allclose(out.actions[0], idct(symbols[:350].reshape(1, 50, 7) / 10)[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"tokens\[0\]: decodes to \d+ coefficients, expected 1 to 350"):
        tok.decode([long], strict=True)


def test_round_trip_is_exact_on_the_quantized_coefficients(fitted, test_chunks):
    tok = fitted["fast"]
    chunks = test_chunks[:50].astype(np.float64)
    quantized = np.rint(10 * dct(chunks))  # what the tokens must carry, all H·D of it
    out = tok.decode(tok.encode(chunks), strict=True)
    assert out.valid.all()
    np.testing.assert_allclose(out.actions, idct(quantized / 10), atol=1e-6)


def test_all_zero_chunks_and_a_non_zero_last_coefficient(fitted):
    tok = fitted["fast"]
    zeros = np.zeros((2, 50, 7))
    ids = tok.encode(zeros)
    assert [len(seq) for seq in ids] == [1, 1]  # one token for the DC zero; empty stays invalid
    out = tok.decode(ids, strict=True)
    assert out.valid.all() and not out.actions.any()
    # A chunk whose very last coefficient (highest frequency, last dim) is non-zero keeps all 350.
    coefficients = np.zeros((1, 50, 7))
    coefficients[0, 0, 0], coefficients[0, -1, -1] = 0.3, -0.2
    chunk = idct(coefficients)
    ids = tok.encode(chunk)
    symbols, counts = tok.bpe.expand(ids)
    assert counts.tolist() == [350] and symbols[-1] == -2 and symbols[0] == 3
    out = tok.decode(ids, strict=True)
    np.testing.assert_allclose(out.actions, chunk, atol=1e-6)


def test_config_errors_name_the_field(train_chunks):
    with pytest.raises(ValueError, match="scale"):
        FASTConfig(scale=0)
    with pytest.raises(ValueError, match="min_frequency"):
        FASTConfig(min_frequency=0)
    with pytest.raises(ValueError, match="vocab_size"):
        FASTTokenizer.fit(train_chunks[:50], vocab_size=100)  # smaller than the alphabet
    with pytest.raises(TypeError):
        FASTTokenizer.fit(train_chunks[:50], bogus=1)
