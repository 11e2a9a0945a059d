"""The stages of the demo and the studies: timed, logged, and reused once finished.

One rule for every pipeline: a stage is finished when its output exists, and a finished stage is
not run again, so an interrupted pipeline resumes where it stopped. The outputs: a dataset's
`meta/info.json`, a training run's checkpoint at its final step, an evaluation's JSON file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kivla.io import write_json
from kivla.train.checkpoint import checkpoint_dir, latest_checkpoint


class Stages:
    """Times and logs the named stages of one pipeline (`[tag] name ...`, `[tag] name: N s`)."""

    def __init__(self, tag: str, progress: bool = True) -> None:
        self.tag, self.progress = tag, progress
        self.timings: dict[str, float] = {}  # seconds per stage, in order

    def log(self, message: str) -> None:
        if self.progress:
            print(f"[{self.tag}] {message}", flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.log(f"{name} ...")
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        self.log(f"{name}: {self.timings[name]:.0f} s")


def finished_run(run_dir: Path, steps: int) -> Path | None:
    """The checkpoint of a training run that reached `steps`, or None."""
    root = Path(run_dir) / "checkpoints"
    ckpt = latest_checkpoint(root)
    return ckpt if ckpt == checkpoint_dir(root, steps) else None


def world_dataset(root: Path, episodes: int, image_size: int, seed: int, video: bool, progress: bool) -> Path:
    """The built-in world's expert episodes at `root`, generated unless already there."""
    if not (root / "meta" / "info.json").is_file():
        from kivla.data.world_dataset import generate_dataset

        generate_dataset(root, episodes, image_size, seed=seed, video=video, progress=progress)
    return root


def trained(run_dir: Path, steps: int, train: Callable[[], Path]) -> Path:
    """The final checkpoint of the run in `run_dir`: reused when it reached `steps`, else trained."""
    return finished_run(run_dir, steps) or train()


def cached_json(path: Path, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The JSON at `path` if a finished stage wrote it; else `make()`, written there atomically."""
    if path.is_file():
        return json.loads(path.read_text())
    result = make()
    write_json(path, result)
    return result
