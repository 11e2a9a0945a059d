"""Wavelet tokens: exact transform inverse, bounded round-trip error, config errors."""

import numpy as np
import pytest

from kivla.tokenizers import WaveletConfig, WaveletTokenizer


@pytest.mark.parametrize("wavelet", ["db4", "haar", "sym4"])
def test_transform_inverse_is_exact(train_chunks, wavelet):
    tok = WaveletTokenizer(WaveletConfig(wavelet=wavelet), 50, 7, bpe=None)
    chunks = train_chunks[:10].astype(np.float64)
    coefficients = tok.transform(chunks)
    assert coefficients.shape == (10, tok.num_coefficients // 7, 7)
    np.testing.assert_allclose(tok.inverse(coefficients), chunks, atol=1e-9)


def test_round_trip_error_is_bounded_by_the_quantization_step(fitted, test_chunks):
    # Periodized db4 is close to orthonormal (an analysis frame with norm about 1), so the error
    # stays near that of an orthonormal transform: RMSE <= 0.5/scale holds with room to spare.
    tok = fitted["wavelet"]
    out = tok.decode(tok.encode(test_chunks), strict=True)
    error = out.actions - test_chunks
    assert 0.01 < np.sqrt((error**2).mean()) <= 0.5 / tok.config.scale
    assert np.abs(error).max() <= 0.5 * np.sqrt(50) / tok.config.scale


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="wavelet"):
        WaveletConfig(wavelet="nope")
    with pytest.raises(ValueError, match="mode"):
        WaveletConfig(mode="nope")
    with pytest.raises(ValueError, match="level"):
        WaveletTokenizer(WaveletConfig(level=9), 50, 7, bpe=None)
