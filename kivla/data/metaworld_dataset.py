"""Generate a LeRobot v3.0 dataset of Meta-World scripted-expert episodes (successful ones only)."""

from __future__ import annotations

from pathlib import Path

from kivla.data.lerobot_write import LeRobotWriter, check_out_dir
from kivla.data.metaworld_env import (
    ACTION_NAMES,
    FPS,
    NUM_CONFIGS,
    STATE_NAMES,
    MetaWorldConfig,
    MetaWorldEnv,
    rollout_expert,
)
from kivla.data.metaworld_tasks import resolve_tasks
from kivla.data.world_dataset import episode_progress
from kivla.io import atomic_directory

ROBOT_TYPE = "metaworld_sawyer"


def generate_metaworld_dataset(
    out_dir: str | Path,
    tasks: str | tuple[str, ...] = "mt10",
    episodes: int = 50,
    config: MetaWorldConfig | None = None,
    video: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    video_codec: str = "libx264",
) -> Path:
    """Write `episodes` successful expert episodes per task at `out_dir` (atomically); returns it.

    Episode i of a task starts from the task's configuration i (mod 50) of benchmark seed
    `config.seed`; an episode the expert fails is dropped and the next configuration tried, at most
    NUM_CONFIGS times in a row. Each frame's task is the task's instruction."""
    names = resolve_tasks(tasks)
    if episodes < 1:
        raise ValueError(f"episodes: expected >= 1 per task, got {episodes}")
    config = config or MetaWorldConfig()
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    bar = episode_progress(len(names) * episodes, progress)
    # An interruption (KeyboardInterrupt included) leaves nothing half-written behind.
    with atomic_directory(out_dir) as tmp:
        with LeRobotWriter(
            tmp, FPS, config.image_size, ACTION_NAMES, STATE_NAMES, video,
            robot_type=ROBOT_TYPE, video_codec=video_codec,
        ) as writer:  # fmt: skip
            for task in names:
                env = MetaWorldEnv(task, config)
                bar.set_postfix_str(task)
                index, failures = 0, 0
                for _ in range(episodes):
                    while True:
                        episode = rollout_expert(env, index)
                        index += 1
                        if episode["success"]:
                            failures = 0
                            break
                        failures += 1
                        if failures >= NUM_CONFIGS:
                            raise RuntimeError(
                                f"{task}: the expert failed {failures} configurations in a row"
                            )
                    writer.add_episode(
                        episode["images"], episode["states"], episode["actions"], env.instruction
                    )
                    bar.update(1)
                env.close()
                if index > episodes:
                    bar.write(f"{task}: dropped {index - episodes} episodes the expert failed")
            bar.close()
    return out_dir
