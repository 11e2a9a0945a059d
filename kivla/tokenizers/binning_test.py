"""Per-step binning: H·D tokens, error at most half a bin, values at the range edges."""

import numpy as np

from kivla.tokenizers import BinningTokenizer


def test_error_is_at_most_half_a_bin(fitted, test_chunks):
    tok: BinningTokenizer = fitted["binning"]
    assert tok.vocab_size == 256 and tok.bin_width == 2 / 256
    ids = tok.encode(test_chunks)
    assert {len(seq) for seq in ids} == {350}
    error = tok.decode(ids, strict=True).actions - test_chunks
    assert np.abs(error).max() <= tok.bin_width / 2 + 1e-6


def test_range_edges_map_to_the_outer_bins(fitted):
    tok = fitted["binning"]
    chunk = np.zeros((1, 50, 7))
    chunk[0, 0, :2] = [-1.0, 1.0]
    ids = tok.encode(chunk)[0]
    assert ids[0] == 0 and ids[1] == 255
    assert ids[2] == 128  # 0.0 sits at the lower edge of bin 128


def test_step_major_order(fitted):
    tok = fitted["binning"]
    chunk = np.linspace(-0.99, 0.99, 350).reshape(1, 50, 7)
    ids = tok.encode(chunk)[0]
    assert np.all(np.diff(ids) >= 0)  # row-major: step 0's D values, then step 1's, …
