"""Meta-World bounds behind the `Policy` interface: the scripted experts and uniform random actions."""

from __future__ import annotations

from typing import Any

import numpy as np

from kivla.data.metaworld_env import ACTION_DIM, STATE_DIM, MetaWorldEnv, expert_action, expert_policy


class MetaWorldExpertPolicy:
    """Meta-World's scripted expert of each env's task: it reads the env's full 39-d observation.

    `evaluate_metaworld` calls `bind(envs)` before each batch; every chunk is one action (the
    expert closes the loop at every step, as it does when it writes datasets)."""

    name = "expert"
    needs_images = False

    def __init__(self) -> None:
        self.envs: list[MetaWorldEnv] = []
        self._experts: dict[str, Any] = {}

    def bind(self, envs: list[MetaWorldEnv]) -> None:
        self.envs = list(envs)
        for env in envs:
            self._experts.setdefault(env.task, expert_policy(env.task))

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if len(obs["instruction"]) != len(self.envs):
            raise ValueError(
                f"obs: expected {len(self.envs)} observations (one per bound env), "
                f"got {len(obs['instruction'])}"
            )
        return np.stack([expert_action(self._experts[e.task], e.raw) for e in self.envs])[:, None]


class MetaWorldRandomPolicy:
    """Uniform random actions in [-1, 1]^4, a fresh chunk at every replan (seeded)."""

    name = "random"
    needs_images = False

    def __init__(self, horizon: int = 50, seed: int = 0) -> None:
        if horizon < 1:
            raise ValueError(f"horizon: expected >= 1, got {horizon}")
        self.horizon = horizon
        self.rng = np.random.default_rng([seed, 11])

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        b = len(obs["instruction"])
        return self.rng.uniform(-1.0, 1.0, (b, self.horizon, ACTION_DIM)).astype(np.float32)


def check_bundle(bundle) -> None:
    """ValueError unless a trained bundle takes Meta-World's 4-d state and gives 4-d actions."""
    builder = bundle.builder
    if builder.action_dim != ACTION_DIM or builder.state_dim != STATE_DIM:
        raise ValueError(
            f"policy: Meta-World needs action_dim {ACTION_DIM} and state_dim {STATE_DIM} "
            "(hand xyz, gripper), "
            f"the bundle has {builder.action_dim} and {builder.state_dim} (trained on another dataset?)"
        )
