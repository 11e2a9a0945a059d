"""Quantile normalizer: q01 -> -1, q99 -> +1, invertible, JSON round trip, clear errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kivla.data.normalize import QuantileNormalizer

STATS = {
    "action": {"q01": [0.0, -2.0, 5.0], "q99": [1.0, 2.0, 5.0]},
    "observation.state": {"q01": [0.1], "q99": [0.9]},
}


def test_quantiles_map_to_unit_interval():
    norm = QuantileNormalizer.from_stats(STATS)
    out = norm.normalize("action", np.array([[0.0, -2.0, 5.0], [1.0, 2.0, 5.0], [0.5, 0.0, 6.0]]))
    np.testing.assert_allclose(out, [[-1, -1, 0], [1, 1, 0], [0, 0, 1]], atol=1e-6)  # constant dim: x - q01
    assert out.dtype == np.float32


@given(arrays(np.float64, (7, 3), elements=st.floats(-50, 50)))
def test_invertible(x):
    norm = QuantileNormalizer.from_stats(STATS)
    back = norm.unnormalize("action", norm.normalize("action", x))
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-4)


def test_json_round_trip(tmp_path):
    norm = QuantileNormalizer.from_stats(STATS)
    norm.save(tmp_path / "norm.json")
    loaded = QuantileNormalizer.load(tmp_path / "norm.json")
    x = np.random.default_rng(0).normal(size=(4, 1))
    np.testing.assert_array_equal(
        loaded.normalize("observation.state", x), norm.normalize("observation.state", x)
    )
    assert [p.name for p in tmp_path.iterdir()] == ["norm.json"]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="missing feature 'action'"):
        QuantileNormalizer.from_stats({"observation.state": STATS["observation.state"]})
    with pytest.raises(ValueError, match="q99"):
        QuantileNormalizer.from_stats({"action": {"q01": [0.0]}}, keys=("action",))
    norm = QuantileNormalizer.from_stats(STATS)
    with pytest.raises(ValueError, match="last dimension 3"):
        norm.normalize("action", np.zeros((2, 4)))
    with pytest.raises(ValueError, match="no bounds"):
        norm.normalize("reward", np.zeros(1))
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        QuantileNormalizer.load(tmp_path / "missing.json")
