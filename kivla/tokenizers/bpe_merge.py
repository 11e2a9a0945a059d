"""Batch BPE encoding in numpy: the trained merges applied to every chunk at once.

HF `tokenizers` trains and stores the BPE; encoding a batch through it costs ~40–70 µs a
350-symbol chunk in its per-character pipeline (offsets, alignments, `Encoding` objects), which
dominated FAST's encode time. This module gives the same ids (pinned against the library in
`bpe_merge_test.py`) with whole-batch array operations:

BPE encoding merges, inside each word, the adjacent pair of lowest merge rank, leftmost first,
until no pair has a merge. A new pair always ranks above the merge that made it, so all
occurrences of a word's lowest-rank pair can merge in one step (runs of the same symbol left
to right). Each round does that for every word at once; words with no mergeable pair leave.
"""

from __future__ import annotations

import json

import numpy as np
from tokenizers import Tokenizer

NO_MERGE = np.iinfo(np.int32).max
MAX_DENSE_VOCAB = 2048  # dense [V+1, V+1] int32 tables: 2 × 17 MB at most


class MergeTable:
    """Merge ranks and results as dense tables; row/column V is the word separator."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        model = json.loads(tokenizer.to_str())["model"]
        vocab: dict[str, int] = model["vocab"]
        size = len(vocab)
        if size > MAX_DENSE_VOCAB:
            raise ValueError(f"vocab_size: dense merge tables support at most {MAX_DENSE_VOCAB}, got {size}")
        self.separator = size
        self.width = size + 1
        rank = np.full((self.width, self.width), NO_MERGE, dtype=np.int32)
        merged = np.zeros((self.width, self.width), dtype=np.int32)
        for index, merge in enumerate(model["merges"]):
            left, right = merge if isinstance(merge, list) else merge.split(" ")
            a, b = vocab[left], vocab[right]
            rank[a, b] = index
            merged[a, b] = vocab[left + right]
        self._rank, self._merged = rank.ravel(), merged.ravel()  # indexed by a · (V+1) + b

    def encode(self, ids: np.ndarray) -> list[np.ndarray]:
        """ids [N, L] (single-symbol token ids) → N arrays of merged token ids."""
        n, length = ids.shape
        sep = self.separator
        # [SEP w0 SEP w1 … SEP w(n-1) SEP]: pairs touching SEP never merge, so words stay apart.
        # int32 throughout: (V+1)² < 2³¹ for the dense tables, half the memory traffic of int64.
        seq = np.full((n, length + 1), sep, dtype=np.int32)
        seq[:, 1:] = ids
        seq = np.append(seq.ravel(), np.int32(sep))
        spans = np.full(n, length + 1, dtype=np.int64)  # pair positions of each word, SEP pair first
        words = np.arange(n)  # original index of each word still in `seq`
        finished_seq, finished_words = [], []
        while words.size:
            pair = seq[:-1] * np.int32(self.width) + seq[1:]
            rank = self._rank.take(pair)
            starts = np.cumsum(spans) - spans
            lowest = np.minimum.reduceat(rank, starts)  # [words]
            done = lowest == NO_MERGE
            if done.any():  # move finished words (with their leading SEP) out of the working set
                leaving = np.repeat(done, spans)  # over pair positions = seq[:-1]
                finished_seq.append(seq[:-1][leaving])
                finished_words.append(words[done])
                keep = np.append(~leaving, True)
                seq, pair, rank = seq[keep], pair[~leaving], rank[~leaving]
                words, lowest, spans = words[~done], lowest[~done], spans[~done]
                if not words.size:
                    break
                starts = np.cumsum(spans) - spans
            at = np.flatnonzero(rank == np.repeat(lowest, spans))
            if at.size > 1 and (at[1:] == at[:-1] + 1).any():
                # A run a a a with merge (a, a): merge left to right, every other position.
                run_start = np.ones(at.size, dtype=bool)
                run_start[1:] = at[1:] != at[:-1] + 1
                order = np.arange(at.size)
                offset = order - np.maximum.accumulate(np.where(run_start, order, 0))
                at = at[(offset & 1) == 0]
            seq[at] = self._merged.take(pair[at])
            removed = np.zeros(seq.size, dtype=bool)
            removed[at + 1] = True  # the right half of a merged pair: same word as its left half
            spans -= np.add.reduceat(removed[:-1], starts, dtype=np.int64)
            seq = seq[~removed]
        return _split_words(finished_seq, finished_words, n, sep)


def _split_words(parts: list[np.ndarray], words: list[np.ndarray], n: int, sep: int) -> list[np.ndarray]:
    """Finished [SEP tokens… SEP tokens…] pieces → one id array per original word index."""
    if n == 0:
        return []
    flat = np.concatenate(parts)
    order = np.concatenate(words)
    separators = np.flatnonzero(flat == sep)
    lengths = np.diff(np.append(separators, flat.size)) - 1
    tokens = flat[flat != sep].astype(np.int64)
    ends = np.cumsum(lengths).tolist()
    result: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n
    for word, start, end in zip(order.tolist(), [0, *ends[:-1]], ends, strict=True):
        result[word] = tokens[start:end]
    return result
