"""The tokenizers a run fits on its data, and the vocabulary and sequence budget they fix.

Text: a word-level vocabulary of everything the world says plus the dataset's task strings.
Actions: the recipe's discrete target, fitted on the dataset's chunks (or loaded), with ids in
the `ACTION_VOCAB_RESERVED` slots at the end of the backbone vocabulary.
"""

from __future__ import annotations

from pathlib import Path

from kivla.data.chunks import dataset_chunks
from kivla.data.language import corpus_words
from kivla.data.lerobot_read import LeRobotDataset
from kivla.data.normalize import QuantileNormalizer
from kivla.model.text import TextTokenizer
from kivla.model.vocab import STATE_BINS, VocabLayout
from kivla.tokenizers import ActionTokenizer, fit_tokenizer, load_tokenizer

ACTION_VOCAB_RESERVED = 1024  # ids kept at the end of the vocabulary for any discrete action target
MAX_PROMPT_LEN, MAX_SUFFIX_LEN = 48, 72  # the suffix grows to fit the longest action encoding


def fit_text_tokenizer(extra: list[str] = ()) -> TextTokenizer:
    """Word-level vocabulary of everything the world can say, plus `extra` texts (dataset tasks)."""
    return TextTokenizer.fit([" ".join(corpus_words()), *extra])


def vocab_layout(text: TextTokenizer) -> VocabLayout:
    """[text | state bins | the reserved action ids]: the same layout for every discrete target."""
    return VocabLayout(text.vocab_size, STATE_BINS, ACTION_VOCAB_RESERVED)


def fit_action_tokenizer(
    target: str,
    dataset: LeRobotDataset,
    normalizer: QuantileNormalizer,
    fit_chunks: int,
    saved: Path | str | None = None,
) -> tuple[ActionTokenizer | None, int]:
    """The run's discrete action target (fitted on `fit_chunks` of the data's chunks, or the
    `saved` one) and the suffix length its tokens need: <act> + the longest encoding + <eos>."""
    if target == "none":
        return None, 0
    chunks = dataset_chunks(dataset, normalizer, max_chunks=fit_chunks)
    tokenizer = load_tokenizer(saved) if saved is not None else fit_tokenizer(target, chunks)
    if tokenizer.vocab_size > ACTION_VOCAB_RESERVED:
        raise ValueError(
            f"action tokenizer: vocab_size {tokenizer.vocab_size} exceeds the {ACTION_VOCAB_RESERVED} "
            "ids reserved for actions in the backbone vocabulary"
        )
    if tokenizer.horizon != dataset.horizon:
        raise ValueError(
            f"action tokenizer: horizon {tokenizer.horizon} != RunConfig.horizon {dataset.horizon}"
        )
    return tokenizer, max(len(ids) for ids in tokenizer.encode(chunks)) + 2
