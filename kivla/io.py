"""Atomic writes, the one place kivla writes files: beside the target, then one `os.replace`.

A reader (or a process killed mid-write) sees the old file or the new one, never half of one.
Every package writes through these functions: JSON, text, bytes, files written by other
libraries (PNG, GIF, safetensors) and whole directories (checkpoints, bundles, datasets).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix); on success it replaces `path`.

    For writers that want a file name (matplotlib, PIL, safetensors); the temp file is removed
    when the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = True) -> Path:
    """Write `obj` as indented JSON (and a final newline) to `path` atomically; returns the path."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it takes the place of `path`.

    An interrupted write leaves only a hidden `.tmp-*` directory, never a half-written `path`.
    An existing `path` is moved aside first and deleted only once the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".tmp-{path.name}-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_directory(tmp, path)


def publish_directory(tmp: Path, path: Path) -> None:
    """Move the finished directory `tmp` to `path`, replacing an old one only once `tmp` is complete."""
    path = Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
