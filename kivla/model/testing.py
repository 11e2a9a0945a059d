"""Small, untrained but real `PolicyBundle`s shaped for the built-in world, for tests and smoke runs.

The `test` size at image 32×32 (the smallest the world renders), horizon 8, the world's action and
state dims, a word-level text tokenizer over the world's vocabulary and, optionally, a binning
action target. Assembled by `kivla.model.assemble`, like every policy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kivla.data.language import corpus_words
from kivla.data.normalize import QuantileNormalizer
from kivla.data.world_env import ACTION_DIM, STATE_DIM
from kivla.model.assemble import assemble_bundle, policy_config
from kivla.model.batch import BatchBuilder
from kivla.model.bundle import PolicyBundle
from kivla.model.presets import RECIPES
from kivla.model.text import TextTokenizer

IMAGE_SIZE, HORIZON = 32, 8


def tiny_world_bundle(recipe: str = "ki", seed: int = 0, discrete_target: str | None = None) -> PolicyBundle:
    """A freshly initialized bundle; `discrete_target` "binning" (default unless the recipe has
    none) or "none"."""
    from kivla.tokenizers import fit_tokenizer

    target = discrete_target if discrete_target is not None else RECIPES[recipe].discrete_target
    text = TextTokenizer.fit(corpus_words())
    action_tokenizer = None
    if target != "none":
        chunks = np.random.default_rng(seed).uniform(-1, 1, (64, HORIZON, ACTION_DIM)).astype(np.float32)
        action_tokenizer = fit_tokenizer("binning", chunks, num_bins=16)
    builder = BatchBuilder(
        text,
        action_tokenizer,
        image_size=IMAGE_SIZE,
        horizon=HORIZON,
        action_dim=ACTION_DIM,
        state_dim=STATE_DIM,
        max_prompt_len=48,
        max_suffix_len=48,
    )
    overrides = {} if discrete_target is None else {"discrete_target": discrete_target}
    config = policy_config(
        "test", recipe, image_size=IMAGE_SIZE, vocab_size=builder.vocab_size, horizon=HORIZON,
        action_dim=ACTION_DIM, state_dim=STATE_DIM, **overrides,
    )  # fmt: skip
    normalizer = QuantileNormalizer(
        {
            "action": (np.zeros(ACTION_DIM), np.ones(ACTION_DIM)),
            "observation.state": (np.zeros(STATE_DIM), np.ones(STATE_DIM)),
        }
    )
    return assemble_bundle(config, builder, normalizer, recipe, seed=seed)


def save_tiny_world_bundle(directory: str | Path, **kwargs) -> Path:
    """`tiny_world_bundle(**kwargs)` saved to `directory`."""
    return tiny_world_bundle(**kwargs).save(directory)
