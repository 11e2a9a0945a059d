"""Shared fixtures: smooth chunks and one fitted tokenizer of every kind (fit once per session)."""

import numpy as np
import pytest

from kivla.tokenizers import TOKENIZER_KINDS, fit_tokenizer
from kivla.tokenizers.synthetic import smooth_chunks

# Small but realistic: 50×7 chunks; the VQ codebook is shrunk so fitting stays ~1 s.
FIT_CONFIG = {"fast": {}, "wavelet": {}, "binning": {}, "vq": {"codebook_size": 64, "iterations": 10}}


@pytest.fixture(scope="session")
def train_chunks() -> np.ndarray:
    return smooth_chunks(1500, seed=0)  # [1500, 50, 7]


@pytest.fixture(scope="session")
def test_chunks() -> np.ndarray:
    return smooth_chunks(300, seed=1)  # held out


@pytest.fixture(scope="session")
def fitted(train_chunks):
    return {kind: fit_tokenizer(kind, train_chunks, **FIT_CONFIG[kind]) for kind in sorted(TOKENIZER_KINDS)}
