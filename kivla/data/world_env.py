"""`TabletopEnv`: the gym-style built-in world, and `VectorEnv`, a batch of them for evaluation.

Action (ACTION_DIM = 4, float32): the absolute target end-effector command (x, y, z, g) in
[0, 1]^4 at FPS = 10 Hz. The end effector moves towards (x, y, z) by at most MAX_XY_STEP in the
plane and MAX_Z_STEP in height per step; the gripper opening follows g directly. Absolute targets
make action chunks smooth curves, which suits DCT-based tokenizers.
State (STATE_DIM = 5, float32): (x, y, z, g, holding) of the end effector after the last step.
With `WorldConfig.privileged_state` the state also carries what perception would have to find,
PRIVILEGED_NAMES (the target's xy and the task's goal point): a diagnostic that bounds what a
policy does with perfect perception (docs/learning.md, seventh round), never a benchmark setting.
Contact rules: closing the gripper (g crossing 0.5 downwards) below GRASP_HEIGHT grasps the nearest
object within GRASP_RADIUS; opening it releases the object where it is. A closed, empty gripper
below GRASP_HEIGHT pushes objects it touches out of its way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kivla.data.world_scene import OBJECT_RADIUS, Renderer, Scene
from kivla.data.world_tasks import FAMILIES, SPLITS, Task, goal_point, is_success, sample_task

ACTION_DIM = 4
STATE_DIM = 5
FPS = 10
ACTION_NAMES = ("x", "y", "z", "gripper")
STATE_NAMES = ("x", "y", "z", "gripper", "holding")
PRIVILEGED_NAMES = ("target_x", "target_y", "goal_x", "goal_y")

MAX_XY_STEP = 0.06
MAX_Z_STEP = 0.2
GRASP_HEIGHT = 0.3
GRASP_RADIUS = 0.05
PUSH_CONTACT = OBJECT_RADIUS + 0.03  # center distance kept between a pushing gripper and an object


@dataclass
class WorldConfig:
    """Settings of the built-in world."""

    image_size: int = 64
    min_objects: int = 2
    max_objects: int = 4
    max_steps: int = 200  # truncation
    split: str = "train"  # which task compositions reset() draws: "train" or "ood"
    families: tuple[str, ...] = FAMILIES
    privileged_state: bool = False  # append PRIVILEGED_NAMES to the state (a diagnostic)

    @property
    def state_names(self) -> tuple[str, ...]:
        return STATE_NAMES + (PRIVILEGED_NAMES if self.privileged_state else ())

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 256:
            raise ValueError(f"WorldConfig.image_size: expected 32..256, got {self.image_size}")
        if not 2 <= self.min_objects <= self.max_objects <= 4:
            raise ValueError(
                f"WorldConfig.min_objects/max_objects: expected 2 <= min <= max <= 4, "
                f"got {self.min_objects}, {self.max_objects}"
            )
        if self.max_steps < 1:
            raise ValueError(f"WorldConfig.max_steps: expected >= 1, got {self.max_steps}")
        if self.split not in SPLITS:
            raise ValueError(f"WorldConfig.split: expected one of {SPLITS}, got {self.split!r}")
        self.families = tuple(self.families)
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise ValueError(f"WorldConfig.families: expected a non-empty subset of {FAMILIES}, got {bad}")


def is_privileged_state_dim(state_dim: int) -> bool:
    """True when a policy's state size is that of the privileged state (evaluate it with one)."""
    return state_dim == STATE_DIM + len(PRIVILEGED_NAMES)


def step_scene(scene: Scene, action: np.ndarray) -> None:
    """Advance the scene by one control step in place (the whole physics of the world)."""
    target = np.clip(np.asarray(action, dtype=np.float64), 0.0, 1.0)
    ee = scene.ee
    delta = target[:2] - ee[:2]
    norm = float(np.hypot(*delta))
    # Assign the target exactly when reachable, so a planned trajectory is followed bit for bit.
    ee[:2] = target[:2] if norm <= MAX_XY_STEP else ee[:2] + delta * (MAX_XY_STEP / norm)
    dz = target[2] - ee[2]
    ee[2] = target[2] if abs(dz) <= MAX_Z_STEP else ee[2] + np.sign(dz) * MAX_Z_STEP
    was_open = ee[3] >= 0.5
    ee[3] = target[3]
    closed, low = ee[3] < 0.5, ee[2] < GRASP_HEIGHT
    if scene.held >= 0:
        scene.positions[scene.held] = ee[:2] + scene.hold_offset
        if not closed:
            scene.held = -1
        return
    if was_open and closed and low:
        dist = np.linalg.norm(scene.positions - ee[:2], axis=1)
        nearest = int(np.argmin(dist))
        if dist[nearest] <= GRASP_RADIUS:
            scene.held = nearest
            scene.hold_offset = scene.positions[nearest] - ee[:2]
            return
    if closed and low:
        offset = scene.positions - ee[:2]  # [N, 2]
        dist = np.linalg.norm(offset, axis=1)
        touching = dist < PUSH_CONTACT
        if touching.any():
            direction = offset[touching] / np.maximum(dist[touching], 1e-9)[:, None]
            scene.positions[touching] = ee[:2] + direction * PUSH_CONTACT
            np.clip(scene.positions, 0.02, 0.98, out=scene.positions)


class TabletopEnv:
    """The built-in world with a gym-style API (`reset(seed)`, `step(action)`)."""

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        self.renderer = Renderer(self.config.image_size)
        self.scene: Scene | None = None
        self.task: Task | None = None
        self.seed: int | None = None
        self.t = 0

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """New episode; the seed fixes scene, task and the expert's style. options: {"split", "family"}."""
        options = options or {}
        self.seed = int(seed) if seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        cfg = self.config
        split = options.get("split", cfg.split)
        if split not in SPLITS:
            raise ValueError(f"options['split']: expected one of {SPLITS}, got {split!r}")
        # The split enters the seed so that train and OOD episodes of one seed are unrelated.
        rng = np.random.default_rng([self.seed, SPLITS.index(split)])
        families = (options["family"],) if "family" in options else cfg.families
        num_objects = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        self.task, self.scene = sample_task(rng, split, families, num_objects)
        self.t = 0
        self.expert_cache: dict = {}  # the oracle's plan (kivla.data.world_expert)
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        """Apply one action [ACTION_DIM]; reward 1 and terminated on success."""
        if self.scene is None:
            raise ValueError("TabletopEnv.step: call reset() first")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,) or not np.isfinite(action).all():
            raise ValueError(f"action: expected finite float [{ACTION_DIM}], got shape {action.shape}")
        step_scene(self.scene, action)
        self.t += 1
        success = is_success(self.task, self.scene)
        truncated = self.t >= self.config.max_steps and not success
        return self._obs(), float(success), success, truncated, self._info(success)

    def state(self) -> np.ndarray:
        """float32 [STATE_DIM]: (x, y, z, g, holding); [STATE_DIM + 4] with the privileged state."""
        s = self.scene
        state = [*s.ee, float(s.held >= 0)]
        if self.config.privileged_state:
            state += [*s.positions[self.task.target], *goal_point(self.task, s)]
        return np.array(state, dtype=np.float32)

    def render(self) -> np.ndarray:
        return self.renderer.render(self.scene)

    def _obs(self) -> dict:
        return {"image": self.render(), "state": self.state(), "instruction": self.task.instruction}

    def _info(self, success: bool | None = None) -> dict:
        if success is None:
            success = is_success(self.task, self.scene)
        return {"task": self.task, "success": success, "t": self.t, "seed": self.seed}


class VectorEnv:
    """`num_envs` TabletopEnvs stepped together; finished envs hold still until the next reset."""

    def __init__(self, config: WorldConfig | None = None, num_envs: int = 8):
        if num_envs < 1:
            raise ValueError(f"num_envs: expected >= 1, got {num_envs}")
        self.envs = [TabletopEnv(config) for _ in range(num_envs)]
        self.done = np.zeros(num_envs, dtype=bool)
        self.success = np.zeros(num_envs, dtype=bool)
        self._last: list[dict] = []

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def reset(self, seeds: list[int], options: dict | None = None) -> tuple[dict, list[dict]]:
        if len(seeds) != self.num_envs:
            raise ValueError(f"seeds: expected {self.num_envs} seeds, got {len(seeds)}")
        pairs = [env.reset(int(s), options) for env, s in zip(self.envs, seeds, strict=True)]
        self.done[:] = False
        self.success[:] = False
        self._last = [obs for obs, _ in pairs]
        return stack_obs(self._last), [info for _, info in pairs]

    def step(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        """actions [N, ACTION_DIM] -> obs (batched), reward [N], terminated [N], truncated [N], infos."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(f"actions: expected [{self.num_envs}, {ACTION_DIM}], got {actions.shape}")
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos = []
        for i, env in enumerate(self.envs):
            if self.done[i]:
                infos.append(env._info())
                terminated[i], truncated[i] = self.success[i], not self.success[i]
                continue
            obs, rewards[i], terminated[i], truncated[i], info = env.step(actions[i])
            self._last[i] = obs
            infos.append(info)
        self.success |= terminated
        self.done |= terminated | truncated
        return stack_obs(self._last), rewards, terminated, truncated, infos


def stack_obs(observations: list[dict]) -> dict:
    """Batch observations: image [N, S, S, 3], state [N, STATE_DIM], instruction list[str]."""
    return {
        "image": np.stack([o["image"] for o in observations]),
        "state": np.stack([o["state"] for o in observations]),
        "instruction": [o["instruction"] for o in observations],
    }
