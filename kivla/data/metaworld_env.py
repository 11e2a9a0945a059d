"""Meta-World tasks as kivla envs: image + 4-d end-effector state + instruction, 4-d actions in [-1, 1].

`MetaWorldEnv(task, config)` wraps one Meta-World 3.1.1 task. An episode is fully determined by
(benchmark seed, task, configuration index): Meta-World draws 50 object / goal configurations per
task from the benchmark seed (`env.reset(seed=...)` is ignored upstream), and `reset(index)`
picks one. Simulation and rendering are deterministic: the same episode gives the same floats and
the same pixels.

Observation, as the built-in world gives it (docs/metaworld.md):
- "image": uint8 [S, S, 3] from `config.camera`, rotated 180° for the `corner*` cameras (MuJoCo
  renders them upside down; a rotation keeps left and right, a flip would swap them).
- "state": float32 [4] = hand x, y, z (metres) and the gripper opening in [0, 1]: obs[:4] of
  Meta-World's 39-d vector, the proprioception published image-based results use. Object and
  goal positions are not in it; the policy must see them.
- "instruction": the task's sentence from `metaworld_tasks.INSTRUCTIONS`.

Rendering goes through one `mujoco.Renderer` per env without multisampling, shadows and
reflections: ~8 ms a 128 px frame instead of 110-190 ms for Meta-World's own `env.render()`.
`MUJOCO_GL` defaults to `egl` (headless) when unset; it must be set before mujoco is imported.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from kivla.data.metaworld_tasks import INSTRUCTIONS

if not os.environ.get("MUJOCO_GL"):  # unset or empty: headless EGL (read when mujoco is first imported)
    os.environ["MUJOCO_GL"] = "egl"

CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "gripperPOV", "behindGripper")
ROTATED_CAMERAS = ("corner", "corner2", "corner3", "corner4")  # rendered upside down by MuJoCo
IMAGE_SIZES = (32, 256)  # accepted square image sides, inclusive
MAX_PATH_LENGTH = 500  # Meta-World refuses to step an episode further
NUM_CONFIGS = 50  # object / goal configurations Meta-World draws per task and benchmark seed
ACTION_DIM, STATE_DIM = 4, 4
ACTION_NAMES = ("dx", "dy", "dz", "gripper")  # hand displacement (scaled by 1/100 m) and grip effort
STATE_NAMES = ("hand_x", "hand_y", "hand_z", "gripper_opening")
FPS = 80  # Meta-World's control rate: frame_skip 5 of a 2.5 ms MuJoCo step


@dataclass(frozen=True)
class MetaWorldConfig:
    """What an env renders and how long an episode may run; `seed` is Meta-World's benchmark seed."""

    image_size: int = 128
    camera: str = "corner4"
    max_steps: int = MAX_PATH_LENGTH
    seed: int = 0

    def __post_init__(self) -> None:
        low, high = IMAGE_SIZES
        if not low <= self.image_size <= high or self.image_size % 2:
            raise ValueError(
                f"MetaWorldConfig.image_size: expected an even number in {low}..{high} (H.264 needs even "
                f"sides), got {self.image_size}"
            )
        if self.camera not in CAMERAS:
            raise ValueError(f"MetaWorldConfig.camera: expected one of {CAMERAS}, got {self.camera!r}")
        if not 1 <= self.max_steps <= MAX_PATH_LENGTH:
            raise ValueError(
                f"MetaWorldConfig.max_steps: expected 1..{MAX_PATH_LENGTH}, got {self.max_steps}"
            )
        if self.seed < 0:
            raise ValueError(f"MetaWorldConfig.seed: expected >= 0, got {self.seed}")


def import_metaworld():
    """The metaworld module, or an ImportError that says how to install it."""
    try:
        import metaworld
        import metaworld.policies
    except ImportError as err:
        raise ImportError(
            "Meta-World is not installed: `pip install 'kivla[metaworld]'` (or `make install-metaworld`)"
        ) from err
    return metaworld


@cache
def _benchmark_tasks(task: str, seed: int) -> tuple[Any, tuple]:
    """(env class, the task's NUM_CONFIGS configurations) of Meta-World's MT1 benchmark at `seed`."""
    metaworld = import_metaworld()
    benchmark = metaworld.MT1(task, seed=seed)
    return benchmark.train_classes[task], tuple(benchmark.train_tasks)


def expert_policy(task: str):
    """Meta-World's scripted expert of `task` (`get_action(obs39) -> [4]`)."""
    import_metaworld()
    from metaworld import policies

    words = task.removesuffix("-v3").split("-")
    name = "Sawyer" + "".join(w.capitalize() for w in words) + "V3Policy"
    name = {"SawyerPegInsertSideV3Policy": "SawyerPegInsertionSideV3Policy"}.get(name, name)
    return getattr(policies, name)()


def expert_action(expert, raw: np.ndarray) -> np.ndarray:
    """The expert's float32 [4] action for a 39-d observation, clipped to [-1, 1] as the env does."""
    with warnings.catch_warnings():  # the experts' gains overshoot by design; the clip is the intent
        warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
        return np.clip(expert.get_action(raw), -1.0, 1.0).astype(np.float32)


class MetaWorldEnv:
    """One Meta-World task with kivla's observation (module docstring); `raw` is the last 39-d obs."""

    def __init__(self, task: str, config: MetaWorldConfig | None = None, render: bool = True) -> None:
        if task not in INSTRUCTIONS:
            raise ValueError(f"task: unknown Meta-World task {task!r}")
        self.task, self.config = task, config or MetaWorldConfig()
        self.instruction = INSTRUCTIONS[task]
        env_class, self.configs = _benchmark_tasks(task, self.config.seed)
        self.env = env_class()
        self.env.max_path_length = MAX_PATH_LENGTH
        self.render_images = render
        self._renderer = None
        self.raw = np.zeros(39)
        self.steps, self.success = 0, False

    # -- episodes --------------------------------------------------------------------------------
    def reset(self, index: int) -> dict[str, Any]:
        """Start configuration `index % NUM_CONFIGS` of the task; returns the first observation."""
        self.env.set_task(self.configs[index % len(self.configs)])
        self.raw, _ = self.env.reset()
        self.steps, self.success = 0, False
        return self.observation()

    @property
    def done(self) -> bool:
        return self.success or self.steps >= self.config.max_steps

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool]:
        """Apply a 4-d action (clipped to [-1, 1]); (observation, success so far)."""
        if self.done:
            raise ValueError("step: the episode is over (success or max_steps); call reset first")
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(ACTION_DIM), -1.0, 1.0)
        self.raw, _, _, _, info = self.env.step(action)
        self.steps += 1
        self.success = self.success or bool(info["success"])
        return self.observation(), self.success

    def observation(self) -> dict[str, Any]:
        obs = {"state": self.raw[:STATE_DIM].astype(np.float32), "instruction": self.instruction}
        if self.render_images:
            obs["image"] = self.render()
        return obs

    # -- pixels ----------------------------------------------------------------------------------
    def render(self) -> np.ndarray:
        """uint8 [S, S, 3] of the current state from the config's camera (see module docstring)."""
        import mujoco

        if self._renderer is None:
            model = self.env.model
            model.vis.quality.offsamples = 0  # no multisampling: the cost is in the resolve, not the draw
            size = self.config.image_size
            self._renderer = mujoco.Renderer(model, size, size)
        renderer = self._renderer
        renderer.update_scene(self.env.data, camera=self.config.camera)
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        image = renderer.render()
        if self.config.camera in ROTATED_CAMERAS:
            image = image[::-1, ::-1]
        return np.ascontiguousarray(image)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.env.close()


def rollout_expert(env: MetaWorldEnv, index: int) -> dict[str, Any]:
    """One scripted-expert episode of configuration `index`, to success or max_steps.

    Returns {"images" uint8 [T,S,S,3], "states" float32 [T,4], "actions" float32 [T,4], "success",
    "length"}: frame t is the observation the action t was chosen from (actions clipped to [-1, 1],
    what the env executed); the last action is the one that reached success."""
    expert = expert_policy(env.task)
    obs = env.reset(index)
    images, states, actions = [], [], []
    while not env.done:
        action = expert_action(expert, env.raw)
        if env.render_images:
            images.append(obs["image"])
        states.append(obs["state"])
        actions.append(action)
        obs, _ = env.step(action)
    size = env.config.image_size
    return {
        "images": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        "states": np.stack(states),
        "actions": np.stack(actions),
        "success": env.success,
        "length": env.steps,
    }
