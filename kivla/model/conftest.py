"""Fixtures for the model tests: a tiny text tokenizer, a stand-in action tokenizer, small examples."""

import dataclasses

import numpy as np
import pytest

from kivla.data.example import Example
from kivla.model.batch import BatchBuilder
from kivla.model.presets import tiny_test_config
from kivla.model.text import TextTokenizer

CORPUS = ["put the red circle on the blue square", "what color is the circle", "red blue green left right"]


class BinningStandIn:
    """Uniform binning of every other step of dim 0: enough to give variable-content token ids."""

    vocab_size = 16

    def encode(self, chunks: np.ndarray) -> list[np.ndarray]:
        return [np.clip(((c[::2, 0] + 1) * 8).astype(np.int64), 0, 15) for c in chunks]


@pytest.fixture
def builder() -> BatchBuilder:
    c = tiny_test_config()
    return BatchBuilder(
        TextTokenizer.fit(CORPUS),
        BinningStandIn(),
        image_size=c.backbone.image_size,
        horizon=c.expert.horizon,
        action_dim=c.expert.action_dim,
        state_dim=c.expert.state_dim,
        max_prompt_len=12,
        max_suffix_len=16,
    )


@pytest.fixture
def config(builder):
    c = tiny_test_config()
    return dataclasses.replace(c, backbone=dataclasses.replace(c.backbone, vocab_size=builder.vocab_size))


def robot_example(rng: np.random.Generator, prompt: str = "put the red circle on the blue square") -> Example:
    return Example(
        prompt=prompt,
        image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, (4, 3)).astype(np.float32),
        action_is_pad=np.array([False, False, False, True]),
        state=rng.uniform(-1, 1, 2).astype(np.float32),
        flow=True,
        fast=True,
    )


def vqa_example(rng: np.random.Generator) -> Example:
    return Example(
        prompt="what color is the circle",
        image=rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        answer="red",
        kind="vqa:color",
        lm=True,
    )
