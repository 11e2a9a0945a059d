"""Action chunks for fitting a discrete action target: from a `.npz` or a LeRobot dataset.

A `.npz` holds an array `chunks` [N, H, D], taken as already normalized; a LeRobot dataset's
chunks are normalized with its quantile stats (`meta/stats.json`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kivla.data.lerobot_read import LeRobotDataset
from kivla.data.normalize import QuantileNormalizer


def load_chunks(path: str | Path, horizon: int = 50, max_chunks: int | None = None) -> np.ndarray:
    """Normalized chunks [N, H, D] from a `.npz` (array `chunks`) or a LeRobot dataset directory.

    `max_chunks` keeps an evenly spaced subset.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data: no such file or directory {path}")
    if path.is_dir():
        dataset = LeRobotDataset(path, horizon=horizon)
        return dataset_chunks(dataset, QuantileNormalizer.from_stats(dataset.stats), max_chunks)
    if path.suffix != ".npz":
        raise ValueError(
            f"--data {path}: expected a .npz with an array 'chunks' or a LeRobot dataset directory"
        )
    with np.load(path, allow_pickle=False) as archive:
        if "chunks" not in archive.files:
            raise ValueError(f"{path}: expected an array 'chunks' [N, H, D], found {archive.files}")
        chunks = archive["chunks"]
    if chunks.ndim != 3:
        raise ValueError(f"{path}: chunks must be [N, H, D], got shape {chunks.shape}")
    return _subset(chunks, max_chunks).astype(np.float32)


def dataset_chunks(
    dataset: LeRobotDataset, normalizer: QuantileNormalizer, max_chunks: int | None = None
) -> np.ndarray:
    """Chunks [N, H, D] of an open dataset's frames (an evenly spaced subset), normalized."""
    rows = _subset(np.arange(len(dataset)), max_chunks)
    if len(rows) == 0:
        raise ValueError(f"--data {dataset.root}: the dataset has no frames")
    return np.stack([dataset.action_chunk(int(row), normalizer)[0] for row in rows])  # [N, H, D]


def save_chunks(path: str | Path, chunks: np.ndarray) -> None:
    """Write chunks [N, H, D] as a `.npz` with the array `chunks` (the format `load_chunks` reads)."""
    np.savez_compressed(path, chunks=np.asarray(chunks, dtype=np.float32))


def _subset(items: np.ndarray, max_chunks: int | None) -> np.ndarray:
    if max_chunks is None or len(items) <= max_chunks:
        return items
    if max_chunks < 1:
        raise ValueError(f"max_chunks: expected >= 1, got {max_chunks}")
    return items[np.linspace(0, len(items) - 1, max_chunks).round().astype(int)]
