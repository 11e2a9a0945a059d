"""Fixtures for the serving tests: one tiny world bundle and observations shaped for it."""

import numpy as np
import pytest

from kivla.model.testing import tiny_world_bundle

PROMPT = "put the red circle on the blue square"


@pytest.fixture(scope="session")
def bundle():
    return tiny_world_bundle("ki")


def make_obs(seed: int = 0, prompt: str = PROMPT, size: int = 32) -> dict:
    """One observation with openpi's LIBERO-style keys."""
    rng = np.random.default_rng(seed)
    return {
        "observation/image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "observation/state": rng.random(5).astype(np.float32),
        "prompt": prompt,
    }


def in_process(bundle, obs: dict, noise_seed: int) -> np.ndarray:
    """`PolicyBundle.act` on the same observation with the same noise seed: actions [H, D]."""
    import torch

    batch = {
        "image": obs["observation/image"][None],
        "state": obs["observation/state"][None],
        "instruction": [obs["prompt"]],
    }
    return bundle.act(batch, generator=torch.Generator().manual_seed(noise_seed))[0]
