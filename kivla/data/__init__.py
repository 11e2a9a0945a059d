"""kivla.data: the built-in world, its language data, LeRobot v3 datasets, normalization, mixtures.

Light names (numpy only) import eagerly; the torch-backed reader and the mixture sampler load on
first use so that `import kivla.data` stays cheap.
"""

from kivla.data.example import Example
from kivla.data.language import LanguageExample, corpus_words, language_examples
from kivla.data.normalize import QuantileNormalizer
from kivla.data.world import (
    ACTION_DIM,
    FAMILIES,
    FPS,
    STATE_DIM,
    TabletopEnv,
    Task,
    VectorEnv,
    WorldConfig,
    expert_action,
    expert_chunk,
    sample_task,
)

_LAZY = {
    "LeRobotDataset": "kivla.data.lerobot_read",
    "generate_dataset": "kivla.data.world_dataset",
    "MixtureSampler": "kivla.data.mixture",
}

__all__ = [
    "ACTION_DIM",
    "FAMILIES",
    "FPS",
    "STATE_DIM",
    "Example",
    "LanguageExample",
    "QuantileNormalizer",
    "TabletopEnv",
    "Task",
    "VectorEnv",
    "WorldConfig",
    "corpus_words",
    "expert_action",
    "expert_chunk",
    "language_examples",
    "sample_task",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kivla.data' has no attribute {name!r}")
