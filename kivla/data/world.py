"""The built-in world in one import: env, tasks, expert (see docs/world.md)."""

from kivla.data.world_env import (
    ACTION_DIM,
    ACTION_NAMES,
    FPS,
    STATE_DIM,
    STATE_NAMES,
    TabletopEnv,
    VectorEnv,
    WorldConfig,
)
from kivla.data.world_expert import ExpertStyle, expert_action, expert_chunk, plan_actions, rollout_expert
from kivla.data.world_tasks import FAMILIES, SPLITS, Task, compositions, is_held_out, is_success, sample_task

__all__ = [
    "ACTION_DIM",
    "ACTION_NAMES",
    "FAMILIES",
    "FPS",
    "SPLITS",
    "STATE_DIM",
    "STATE_NAMES",
    "ExpertStyle",
    "TabletopEnv",
    "Task",
    "VectorEnv",
    "WorldConfig",
    "compositions",
    "expert_action",
    "expert_chunk",
    "is_held_out",
    "is_success",
    "plan_actions",
    "rollout_expert",
    "sample_task",
]
