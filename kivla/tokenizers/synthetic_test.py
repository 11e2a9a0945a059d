"""The smooth chunk generator: shapes, range, determinism, smoothness."""

import numpy as np
import pytest
import scipy.fft

from kivla.tokenizers.synthetic import minimum_jerk, smooth_chunks


def test_shape_range_and_seed():
    a = smooth_chunks(64, horizon=50, action_dim=7, seed=3)
    assert a.shape == (64, 50, 7) and a.dtype == np.float32
    assert np.abs(a).max() <= 0.9
    np.testing.assert_array_equal(a, smooth_chunks(64, seed=3))
    assert not np.array_equal(a, smooth_chunks(64, seed=4))


def test_chunks_are_smooth():
    a = smooth_chunks(500, seed=0).astype(np.float64)
    assert np.abs(np.diff(a, axis=1)).max() < 0.4  # no jumps: min-jerk peak speed 1.875·A/T
    energy = scipy.fft.dct(a, type=2, norm="ortho", axis=1) ** 2  # [N, H, D]
    assert energy[:, 12:].sum() < 0.01 * energy.sum()  # almost all energy in the lowest frequencies


def test_minimum_jerk_profile():
    s = np.linspace(0, 1, 11)
    np.testing.assert_allclose(minimum_jerk(s)[[0, 5, 10]], [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="horizon"):
        smooth_chunks(4, horizon=1)
