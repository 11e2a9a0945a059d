"""Reference policies behind the `Policy` interface: the scripted expert (oracle) and random actions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kivla.data.world_env import ACTION_DIM, VectorEnv
from kivla.data.world_expert import expert_chunk


class OraclePolicy:
    """The scripted expert: it ignores the observation and reads the env's scene and task.

    `evaluate` calls `bind(env)` with each VectorEnv it creates; the chunk of env i is the expert's
    plan from env i's current state (the expert replans whenever the env left its plan).
    """

    name = "oracle"

    def __init__(self, env: VectorEnv | None = None, horizon: int = 50) -> None:
        if horizon < 1:
            raise ValueError(f"horizon: expected >= 1, got {horizon}")
        self.env, self.horizon = env, horizon

    def bind(self, env: VectorEnv) -> None:
        self.env = env

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.env is None:
            raise ValueError("OraclePolicy: no env bound (construct with a VectorEnv or call bind(env))")
        if len(obs["instruction"]) != self.env.num_envs:
            raise ValueError(
                f"obs: expected {self.env.num_envs} observations (one per env), got {len(obs['instruction'])}"
            )
        return np.stack([expert_chunk(e, self.horizon) for e in self.env.envs]).astype(np.float32)


class RandomPolicy:
    """Uniform random absolute targets in [0, 1]^4, a fresh chunk at every replan (seeded)."""

    name = "random"

    def __init__(self, horizon: int = 50, seed: int = 0) -> None:
        if horizon < 1:
            raise ValueError(f"horizon: expected >= 1, got {horizon}")
        self.horizon = horizon
        self.rng = np.random.default_rng([seed, 5])

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        b = len(obs["instruction"])
        return self.rng.uniform(0.0, 1.0, (b, self.horizon, ACTION_DIM)).astype(np.float32)


class BundlePolicy:
    """A `PolicyBundle` as a seeded `Policy` (the flow noise comes from its own generator)."""

    def __init__(self, bundle, seed: int = 0, num_steps: int = 10) -> None:
        if bundle.builder.action_dim != ACTION_DIM:
            raise ValueError(
                f"policy action_dim: the built-in world needs {ACTION_DIM}, the bundle has "
                f"{bundle.builder.action_dim}"
            )
        self.bundle, self.num_steps = bundle, num_steps
        self.name = bundle.recipe or "policy"
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def image_size(self) -> int:
        return self.bundle.builder.image_size

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return self.bundle.act(obs, num_steps=self.num_steps, generator=self.generator)
