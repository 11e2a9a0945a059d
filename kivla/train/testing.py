"""Helpers for tests of multi-process training: run a function on N local gloo ranks."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_entry(rank: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple) -> None:
    # The environment torchrun would give this rank; one thread each, as the CPU is shared.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
    torch.set_num_threads(1)
    fn(*args)
    # Leave without interpreter finalization: under load, gloo's worker threads can still hold
    # work when the interpreter tears down, and the rank then aborts ("terminate called without
    # an active exception", SIGABRT) after everything it had to do is done and written. An
    # exception in `fn` still reaches mp.spawn as a failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(fn: Callable[..., Any], *args: Any, world_size: int = 2) -> None:
    """Call `fn(*args)` in `world_size` processes set up like torchrun's (fn must be importable)."""
    mp.spawn(_rank_entry, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)
