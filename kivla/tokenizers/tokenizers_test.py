"""Invariants every tokenizer kind must keep: the interface contract, save/load, relaxed decode
that never raises, strict decode that names the chunk, and clear errors for bad input."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kivla.tokenizers import TOKENIZER_KINDS, ActionTokenizer, fit_tokenizer, load_tokenizer

KINDS = sorted(TOKENIZER_KINDS)


def test_registry_names_the_four_kinds():
    assert set(KINDS) == {"fast", "binning", "wavelet", "vq"}
    with pytest.raises(ValueError, match="kind"):
        fit_tokenizer("bogus", np.zeros((4, 50, 7)))


@pytest.mark.parametrize("kind", KINDS)
def test_encode_decode_contract(fitted, test_chunks, kind):
    tok = fitted[kind]
    assert (tok.horizon, tok.action_dim) == (50, 7)
    ids = tok.encode(test_chunks)
    assert len(ids) == len(test_chunks)
    for seq in ids:
        assert seq.dtype == np.int64 and seq.ndim == 1 and len(seq) > 0
        assert seq.min() >= 0 and seq.max() < tok.vocab_size
    out = tok.decode(ids, strict=True)
    assert out.actions.shape == test_chunks.shape and out.actions.dtype == np.float32
    assert out.valid.all()
    # One chunk [H, D] is a batch of one.
    assert np.array_equal(tok.encode(test_chunks[0])[0], ids[0])


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_identical_encodings(fitted, test_chunks, tmp_path, kind):
    tok = fitted[kind]
    tok.save(tmp_path / kind)
    loaded = load_tokenizer(tmp_path / kind)
    assert type(loaded) is type(tok)
    assert (loaded.vocab_size, loaded.horizon, loaded.action_dim) == (tok.vocab_size, 50, 7)
    before, after = tok.encode(test_chunks), loaded.encode(test_chunks)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    np.testing.assert_array_equal(loaded.decode(after).actions, tok.decode(before).actions)
    # The kind-specific class loads it too, and nothing is pickled.
    assert type(type(tok).load(tmp_path / kind)) is type(tok)
    assert not list((tmp_path / kind).glob("*.pkl")) and not list((tmp_path / kind).glob("*.pt"))


def test_load_errors(tmp_path, fitted):
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        load_tokenizer(tmp_path / "missing")
    fitted["fast"].save(tmp_path / "fast")
    with pytest.raises(ValueError, match="'fast'"):
        TOKENIZER_KINDS["binning"].load(tmp_path / "fast")


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_errors_name_the_expected_shape(fitted, kind):
    tok = fitted[kind]
    good = np.zeros((2, 50, 7))
    with pytest.raises(ValueError, match=r"\[N, 50, 7\]"):
        tok.encode(good[:, :40])  # wrong H
    with pytest.raises(ValueError, match=r"\[N, 50, 7\]"):
        tok.encode(good[..., :6])  # wrong D
    with pytest.raises(ValueError, match=r"\[N, 50, 7\]"):
        tok.encode(np.zeros((2, 3, 50, 7)))  # wrong ndim
    for bad in (np.nan, np.inf, -np.inf):
        chunk = good.copy()
        chunk[1, 4, 2] = bad
        with pytest.raises(ValueError, match=r"NaN or inf at index \(1, 4, 2\)"):
            tok.encode(chunk)
    with pytest.raises(ValueError, match="batch of id lists"):
        tok.decode([1, 2, 3])


@pytest.mark.parametrize("kind", KINDS)
def test_strict_decode_names_the_chunk(fitted, test_chunks, kind):
    tok = fitted[kind]
    ids = tok.encode(test_chunks[:3])
    with pytest.raises(ValueError, match=r"tokens\[1\].*outside the vocabulary"):
        tok.decode([ids[0], [*ids[1], tok.vocab_size], ids[2]], strict=True)
    with pytest.raises(ValueError, match=r"tokens\[2\]: decodes to \d+ \w+, expected"):
        tok.decode([ids[0], ids[1], list(ids[2]) * 400], strict=True)  # too many for every kind
    if kind in ("binning", "vq"):  # fixed length: too few is an error too (FAST/wavelet pad zeros)
        with pytest.raises(ValueError, match=r"tokens\[2\].*expected exactly"):
            tok.decode([ids[0], ids[1], ids[2][:1]], strict=True)
    with pytest.raises(ValueError, match=r"tokens\[0\]"):
        tok.decode([[]], strict=True)


@pytest.mark.parametrize("kind", KINDS)
def test_relaxed_decode_repairs_and_flags(fitted, test_chunks, kind):
    tok = fitted[kind]
    ids = tok.encode(test_chunks[:2])
    out = tok.decode([ids[0], [], [-1, *ids[1]], list(ids[1]) * 400])
    assert out.actions.shape == (4, 50, 7)
    assert out.valid.tolist() == [True, False, False, False]
    np.testing.assert_array_equal(out.actions[1], 0.0)  # nothing decodes to the zero chunk
    # An unknown id is dropped and the rest still decodes to the same chunk.
    np.testing.assert_allclose(out.actions[2], tok.decode([ids[1]]).actions[0])
    assert np.isfinite(out.actions).all()


@pytest.mark.parametrize("kind", KINDS)
def test_relaxed_decode_never_raises(fitted, kind):
    tok = fitted[kind]
    near = st.integers(min_value=-3, max_value=tok.vocab_size + 3)
    anything = st.integers(min_value=-(2**70), max_value=2**70)
    batches = st.lists(st.lists(st.one_of(near, near, anything), max_size=400), max_size=4)

    @given(batches)
    def check(tokens):
        out = tok.decode(tokens)
        assert out.actions.shape == (len(tokens), tok.horizon, tok.action_dim)
        assert out.valid.shape == (len(tokens),) and out.valid.dtype == bool
        assert np.isfinite(out.actions).all()
        for seq, valid in zip(tokens, out.valid, strict=True):
            if any(not 0 <= v < tok.vocab_size for v in seq):
                assert not valid

    check()


@pytest.mark.parametrize("kind", KINDS)
def test_clip_warning_counts_once_per_call(fitted, kind):
    tok: ActionTokenizer = fitted[kind]
    chunks = np.zeros((3, 50, 7))
    chunks[0, :, 0] = 4.0  # far outside the normalized range
    chunks[2, :, 1] = -4.0
    if kind == "vq":  # nearest codeword: nothing to clip, values far out still encode
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tok.encode(chunks)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok.encode(chunks)
    clip = [w for w in caught if "clipped" in str(w.message)]
    assert len(clip) == 1
    warning = clip[0].message
    if kind == "binning":  # every one of the 2 × 50 values out of range
        assert warning.count == 100 and warning.total == 3 * 350
    elif kind == "fast":  # a constant dimension has only a DC term, far beyond the alphabet
        assert warning.count == 2 and warning.total == 3 * 350
    else:  # wavelet: the coarse approximation band of the two dimensions
        assert 2 <= warning.count <= 2 * 13
    assert f"clipped {warning.count} of {warning.total}" in str(warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.encode(np.zeros((3, 50, 7)))  # in range: silent
