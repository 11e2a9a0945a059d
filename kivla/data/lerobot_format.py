"""The LeRobot v3.0 dataset layout: paths, feature specs and statistics (shared by writer and reader).

```
meta/info.json                  codebase_version "v3.0", fps, features, chunks_size, path templates
meta/stats.json                 per feature: min, max, mean, std, count, q01, q10, q50, q90, q99
meta/tasks.parquet              task (string, the pandas index) -> task_index
meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, data and video
                                           file indices, dataset_from/to_index, from/to_timestamp
data/chunk-000/file-000.parquet            one row per frame
videos/<video_key>/chunk-000/file-000.mp4  frames of many episodes, one after another
```
Files roll over: file index i lives in chunk i // chunks_size as file i % chunks_size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
IMAGE_KEY = "observation.images.top"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
# Per-frame integer features a generator knows and a camera does not (kivla's world writes them;
# datasets without them train the same way, without the dense vision losses on robot frames).
ANNOTATION_PREFIX = "annotation."
LABELS_KEY = "annotation.labels"  # uint8 [S*S]: the world's label map of the frame's image
REFER_KEY = "annotation.refer"  # int64 [2]: label classes of the instruction's target, destination
# int32 [2]: where the instruction's target ends up in the demonstration (hindsight), its centre
# (x, y) at the episode's last step in GOAL_UNITS of the image side.
GOAL_KEY = "annotation.goal"
GOAL_UNITS = 1000
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def file_location(file_counter: int, chunks_size: int = CHUNKS_SIZE) -> tuple[int, int]:
    """(chunk_index, file_index) of the file_counter-th file of a kind."""
    return file_counter // chunks_size, file_counter % chunks_size


def feature_stats(values: np.ndarray) -> dict[str, list]:
    """Stats of a numeric feature; values [N, D] -> each stat a list of D numbers."""
    values = np.asarray(values, dtype=np.float64)
    stats = {
        "min": values.min(0),
        "max": values.max(0),
        "mean": values.mean(0),
        "std": values.std(0),
        "count": np.array([len(values)]),
    }
    for name, q in QUANTILES.items():
        stats[name] = np.quantile(values, q, axis=0)
    return {k: v.tolist() for k, v in stats.items()}


def image_stats(pixels: np.ndarray, count: int) -> dict[str, list]:
    """Per-channel stats of images in [0, 1], shaped [3, 1, 1] as LeRobot stores them.

    pixels: uint8 [P, 3], a subsample of pixels of the dataset's frames; count: number of frames.
    """
    stats = feature_stats(pixels.astype(np.float64) / 255.0)
    out = {k: [[[v]] for v in vals] for k, vals in stats.items() if k != "count"}
    out["count"] = [count]
    return out


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"LeRobot dataset: missing file {path}")
    return json.loads(path.read_text())
