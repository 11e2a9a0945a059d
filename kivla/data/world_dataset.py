"""Generate a LeRobot v3.0 dataset of scripted-expert episodes from the built-in world."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kivla.data.lerobot_format import GOAL_KEY, GOAL_UNITS, LABELS_KEY, REFER_KEY
from kivla.data.lerobot_write import LeRobotWriter, check_out_dir
from kivla.data.world_env import ACTION_NAMES, FPS, TabletopEnv, WorldConfig
from kivla.data.world_expert import rollout_expert
from kivla.data.world_tasks import FAMILIES
from kivla.io import atomic_directory

MAX_ATTEMPTS = 20  # re-seeds allowed per episode when the expert fails (it rarely does)


def episode_seed(seed: int, episode: int, attempt: int = 0) -> int:
    """The env seed of an episode: a pure function of (dataset seed, episode, attempt)."""
    return int(np.random.SeedSequence([seed, episode, attempt]).generate_state(1, np.uint64)[0] >> 1)


def generate_dataset(
    out_dir: str | Path,
    episodes: int,
    image_size: int = 64,
    seed: int = 0,
    video: bool = True,
    split: str = "train",
    families: tuple[str, ...] = FAMILIES,
    frames_per_file: int = 100_000,
    overwrite: bool = False,
    progress: bool = True,
    video_codec: str = "libx264",
    annotations: bool = True,
    privileged_state: bool = False,
) -> Path:
    """Write `episodes` successful expert episodes as a LeRobot v3.0 dataset at `out_dir`, atomically.

    Failed expert episodes (rare) are re-drawn with the next attempt's seed, so every episode of the
    dataset succeeds. With `annotations`, every frame also carries the world's label map and the
    label classes the instruction names (`annotation.labels`, `annotation.refer`): the targets of
    the dense vision losses in robot co-training; and where the target ends up (`annotation.goal`,
    the same for every frame of an episode), the target of a goal keypoint. With `privileged_state`,
    the state also carries the target's and the goal's xy (`WorldConfig.privileged_state`, a
    diagnostic). Returns the dataset path.
    """
    if episodes < 1:
        raise ValueError(f"episodes: expected >= 1, got {episodes}")
    out_dir = Path(out_dir)
    world = WorldConfig(
        image_size=image_size, split=split, families=families, privileged_state=privileged_state
    )
    env = TabletopEnv(world)
    check_out_dir(out_dir, overwrite)
    # An interruption (KeyboardInterrupt included) leaves nothing half-written behind.
    with atomic_directory(out_dir) as tmp:
        with LeRobotWriter(
            tmp,
            FPS,
            image_size,
            ACTION_NAMES,
            world.state_names,
            video,
            frames_per_file,
            video_codec=video_codec,
        ) as writer:
            bar = episode_progress(episodes, progress)
            for index in range(episodes):
                for attempt in range(MAX_ATTEMPTS):
                    episode = rollout_expert(env, episode_seed(seed, index, attempt))
                    if episode["success"]:
                        break
                else:
                    raise RuntimeError(f"expert failed {MAX_ATTEMPTS} times on episode {index}")
                length = len(episode["actions"])
                goal = np.round(episode["goal"] * GOAL_UNITS).astype(np.int32)
                extra = {
                    LABELS_KEY: episode["labels"],
                    REFER_KEY: np.tile(episode["refer"], (length, 1)),
                    GOAL_KEY: np.tile(goal, (length, 1)),
                }
                writer.add_episode(
                    episode["images"],
                    episode["states"],
                    episode["actions"],
                    episode["task"].instruction,
                    extra if annotations else None,
                )
                bar.update(1)
            bar.close()
    return out_dir


def episode_progress(total: int, enabled: bool):
    """A tqdm bar over the episodes a generator writes (silent when not `enabled`)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="episodes", unit="ep", disable=not enabled)
