"""Small, untrained but real `PolicyBundle`s shaped for the built-in world, for tests and smoke runs.

Image 32×32 (the smallest the world renders), horizon 8, the world's action and state dims, a
word-level text tokenizer over the world's vocabulary and, optionally, a binning action target.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from kivla.data.language import corpus_words
from kivla.data.normalize import QuantileNormalizer
from kivla.data.world_env import ACTION_DIM, STATE_DIM
from kivla.model.batch import BatchBuilder
from kivla.model.bundle import PolicyBundle
from kivla.model.config import recipe_config, tiny_test_config
from kivla.model.policy import KIPolicy
from kivla.model.text import TextTokenizer

IMAGE_SIZE, HORIZON = 32, 8


def tiny_world_bundle(recipe: str = "ki", seed: int = 0, discrete_target: str | None = None) -> PolicyBundle:
    """A freshly initialized bundle; `discrete_target` "binning" (default unless the recipe has
    none) or "none"."""
    from kivla.tokenizers import fit_tokenizer

    torch.manual_seed(seed)
    base = tiny_test_config()
    base = dataclasses.replace(
        base,
        backbone=dataclasses.replace(base.backbone, image_size=IMAGE_SIZE, patch_size=8),
        expert=dataclasses.replace(base.expert, horizon=HORIZON, action_dim=ACTION_DIM, state_dim=STATE_DIM),
    )
    overrides = {} if discrete_target is None else {"discrete_target": discrete_target}
    config = recipe_config(recipe, base, **overrides)
    text = TextTokenizer.fit(corpus_words())
    action_tokenizer = None
    if config.discrete_target != "none":
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
    config = dataclasses.replace(
        config, backbone=dataclasses.replace(config.backbone, vocab_size=builder.vocab_size)
    )
    normalizer = QuantileNormalizer(
        {
            "action": (np.zeros(ACTION_DIM), np.ones(ACTION_DIM)),
            "observation.state": (np.zeros(STATE_DIM), np.ones(STATE_DIM)),
        }
    )
    return PolicyBundle(KIPolicy(config), builder, normalizer, recipe)


def save_tiny_world_bundle(directory: str | Path, **kwargs) -> Path:
    """`tiny_world_bundle(**kwargs)` saved to `directory`."""
    return tiny_world_bundle(**kwargs).save(directory)
