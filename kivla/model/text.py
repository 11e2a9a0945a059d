"""Word-level text tokenizer for the built-in tiny VLM (HF `tokenizers` WordLevel model).

Lower-cased, split on whitespace and punctuation. Special tokens come first with fixed ids, so a
saved tokenizer and the vocabulary layout of the backbone agree on them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from kivla.io import write_text

PAD, UNK, BOS, EOS, ACT, ANS = "<pad>", "<unk>", "<bos>", "<eos>", "<act>", "<ans>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS, ACT, ANS)  # ids 0..5 in this order


class TextTokenizer:
    """`fit` on a corpus, `encode` / `decode`, `save` / `load` (one JSON file)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        for index, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != index:
                raise ValueError(f"TextTokenizer: special token {token!r} must have id {index}")
        self.tokenizer = tokenizer

    @classmethod
    def fit(cls, corpus: Iterable[str], min_frequency: int = 1, max_vocab: int = 4096) -> TextTokenizer:
        """Vocabulary of the words in `corpus` (at most `max_vocab` entries, specials included)."""
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(
            vocab_size=max_vocab, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS)
        )
        tokenizer.train_from_iterator(corpus, trainer=trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def token_id(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by spaces; special tokens dropped."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def save(self, path: str | os.PathLike) -> None:
        """Atomic write of the tokenizer JSON."""
        write_text(path, self.tokenizer.to_str())

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextTokenizer:
        if not Path(path).is_file():
            raise FileNotFoundError(f"TextTokenizer.load: no tokenizer file at {path}")
        return cls(Tokenizer.from_file(str(path)))
