"""Where the CLI gets action chunks: a `.npz` with an array `chunks` [N, H, D], a LeRobot dataset
directory (read through `kivla.data.lerobot`, normalized with its quantile stats), or synthetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kivla.tokenizers.base import check_fit_chunks


def load_chunks(path: str | Path, horizon: int = 50, max_chunks: int | None = None) -> np.ndarray:
    """Normalized chunks [N, H, D] from a `.npz` (array `chunks`) or a LeRobot dataset directory.

    `max_chunks` keeps an evenly spaced subset. A `.npz` is taken as already normalized.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--data: no such file or directory {path}")
    if path.is_dir():
        chunks = _lerobot_chunks(path, horizon, max_chunks)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "chunks" not in archive.files:
                raise ValueError(f"{path}: expected an array 'chunks' [N, H, D], found {archive.files}")
            chunks = archive["chunks"]
        chunks = _subset(chunks, max_chunks)
    else:
        raise ValueError(
            f"--data {path}: expected a .npz with an array 'chunks' or a LeRobot dataset directory"
        )
    return check_fit_chunks(chunks).astype(np.float32)


def save_chunks(path: str | Path, chunks: np.ndarray) -> None:
    """Write chunks [N, H, D] as a `.npz` with the array `chunks` (the format `load_chunks` reads)."""
    np.savez_compressed(path, chunks=np.asarray(chunks, dtype=np.float32))


def _subset(items: np.ndarray | range, max_chunks: int | None):
    if max_chunks is None or len(items) <= max_chunks:
        return items
    if max_chunks < 1:
        raise ValueError(f"max_chunks: expected >= 1, got {max_chunks}")
    return items[np.linspace(0, len(items) - 1, max_chunks).round().astype(int)]


def _lerobot_chunks(root: Path, horizon: int, max_chunks: int | None) -> np.ndarray:
    try:  # the reader lives in kivla.data; imported here so the tokenizers never need it otherwise
        from kivla.data.lerobot import LeRobotDataset
        from kivla.data.normalize import QuantileNormalizer
    except ImportError as err:
        raise ValueError(
            f"--data {root}: reading a LeRobot dataset needs kivla.data.lerobot.LeRobotDataset, "
            f"which is not available ({err}); pass a .npz with an array 'chunks' [N, H, D] instead"
        ) from None
    dataset = LeRobotDataset(root, horizon=horizon)
    dataset = LeRobotDataset(root, horizon=horizon, normalizer=QuantileNormalizer.from_stats(dataset.stats))
    rows = _subset(np.arange(len(dataset)), max_chunks)
    if len(rows) == 0:
        raise ValueError(f"--data {root}: the dataset has no frames")
    return np.stack([dataset.action_chunk(int(row))[0] for row in rows])  # [N, H, D]
