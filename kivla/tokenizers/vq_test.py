"""VQ tokens: nearest-codeword encoding, H/P tokens a chunk, patch layout, errors."""

import numpy as np
import pytest

from kivla.tokenizers import VQTokenizer


def test_encode_picks_the_nearest_codeword(fitted, test_chunks):
    tok: VQTokenizer = fitted["vq"]
    ids = np.stack(tok.encode(test_chunks[:20]))  # [20, H/P]
    assert ids.shape == (20, 10) and tok.vocab_size == 64
    patches = test_chunks[:20].reshape(20, 10, 5 * 7)  # 5 steps × 7 dims, step-major
    distances = ((patches[:, :, None] - tok.codebook[None, None]) ** 2).sum(-1)  # [20, 10, K]
    np.testing.assert_array_equal(ids, distances.argmin(-1))
    decoded = tok.decode(list(ids), strict=True).actions
    np.testing.assert_allclose(decoded.reshape(20, 10, 35), tok.codebook[ids], atol=1e-6)


def test_codebook_beats_the_mean_patch(fitted, train_chunks, test_chunks):
    # k-means must learn something: error well below replacing every patch by the data mean
    # (64 codewords for 35-dim patches of independent dimensions is a coarse code: ~0.6×).
    tok = fitted["vq"]
    error = tok.decode(tok.encode(test_chunks)).actions - test_chunks
    baseline = test_chunks - train_chunks.mean(axis=(0, 1), keepdims=True)
    assert np.sqrt((error**2).mean()) < 0.7 * np.sqrt((baseline**2).mean())


def test_errors_name_the_field(train_chunks):
    with pytest.raises(ValueError, match="patch_size"):
        VQTokenizer.fit(train_chunks[:10], patch_size=7)
    with pytest.raises(ValueError, match="codebook_size"):
        VQTokenizer.fit(train_chunks[:2], codebook_size=64)  # 20 patches < 64 codewords
