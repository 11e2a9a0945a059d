"""Discrete action targets: FAST (DCT + BPE), per-step binning, wavelet + BPE, and a VQ codebook.

from kivla.tokenizers import fit_tokenizer, load_tokenizer
tok = fit_tokenizer("fast", chunks)          # chunks [N, H, D], normalized to about [-1, 1]
ids = tok.encode(chunks)                     # list of int64 arrays, ids in [0, tok.vocab_size)
out = tok.decode(ids)                        # out.actions [N, H, D], out.valid [N]
tok.save("dir"); tok = load_tokenizer("dir")
"""

from kivla.tokenizers.base import (
    TOKENIZER_KINDS,
    ActionTokenizer,
    CoefficientClipWarning,
    DecodeResult,
    fit_tokenizer,
    load_tokenizer,
)
from kivla.tokenizers.binning import BinningConfig, BinningTokenizer
from kivla.tokenizers.fast import FASTConfig, FASTTokenizer
from kivla.tokenizers.vq import VQConfig, VQTokenizer
from kivla.tokenizers.wavelet import WaveletConfig, WaveletTokenizer

__all__ = [
    "TOKENIZER_KINDS",
    "ActionTokenizer",
    "BinningConfig",
    "BinningTokenizer",
    "CoefficientClipWarning",
    "DecodeResult",
    "FASTConfig",
    "FASTTokenizer",
    "VQConfig",
    "VQTokenizer",
    "WaveletConfig",
    "WaveletTokenizer",
    "fit_tokenizer",
    "load_tokenizer",
]
