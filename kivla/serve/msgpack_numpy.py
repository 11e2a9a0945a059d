"""msgpack with numpy arrays, byte-compatible with openpi's `openpi_client.msgpack_numpy`.

An array travels as the map {b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str,
b"shape": [...]}, a numpy scalar as {b"__npgeneric__": True, b"data": item, b"dtype": dtype.str}.
Object, void and complex dtypes are refused both ways: nothing in a frame is ever executed or
unpickled. Unpacking also checks what openpi's trusts: the dtype kind, the shape, and that the
byte count matches the shape, so a hostile frame raises `ValueError` instead of building an array
over memory it does not own.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import msgpack
import numpy as np

REFUSED_KINDS = ("V", "O", "c")  # void (structured), object, complex: as openpi
ALLOWED_KINDS = "biufUS"  # bool, ints, floats, fixed-width strings


def pack_array(obj: Any) -> Any:
    """msgpack `default` hook: numpy arrays and scalars to openpi's tagged maps."""
    if isinstance(obj, np.ndarray | np.generic) and obj.dtype.kind in REFUSED_KINDS:
        raise ValueError(f"Unsupported dtype: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def _get(obj: dict, key: str) -> Any:
    # openpi packs the tag keys as bytes; accept str keys from other packers too.
    return obj[key.encode()] if key.encode() in obj else obj[key]


def _dtype(value: Any) -> np.dtype:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise ValueError(f"ndarray dtype: expected a dtype string, got {type(value).__name__}")
    try:
        dtype = np.dtype(value)
    except TypeError as err:
        raise ValueError(f"ndarray dtype: {value!r} is not a numpy dtype") from err
    if dtype.kind not in ALLOWED_KINDS or dtype.itemsize == 0:
        raise ValueError(f"ndarray dtype: {value!r} refused (allowed kinds: {ALLOWED_KINDS})")
    return dtype


def unpack_array(obj: dict) -> Any:
    """msgpack `object_hook`: the inverse of `pack_array`, validated."""
    if b"__ndarray__" in obj or "__ndarray__" in obj:
        dtype, shape, data = _dtype(_get(obj, "dtype")), _get(obj, "shape"), _get(obj, "data")
        if not isinstance(shape, list | tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise ValueError(f"ndarray shape: expected a list of non-negative ints, got {shape!r}")
        if not isinstance(data, bytes):
            raise ValueError(f"ndarray data: expected bytes, got {type(data).__name__}")
        if math.prod(shape) * dtype.itemsize != len(data):
            raise ValueError(
                f"ndarray data: {len(data)} bytes do not hold shape {list(shape)} of dtype {dtype.str}"
            )
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))
    if b"__npgeneric__" in obj or "__npgeneric__" in obj:
        dtype = _dtype(_get(obj, "dtype"))
        data = _get(obj, "data")
        if not isinstance(data, bool | int | float | str | bytes):
            raise ValueError(f"npgeneric data: expected a scalar, got {type(data).__name__}")
        return dtype.type(data)
    return obj


Packer = functools.partial(msgpack.Packer, default=pack_array)
packb = functools.partial(msgpack.packb, default=pack_array)
Unpacker = functools.partial(msgpack.Unpacker, object_hook=unpack_array)
unpackb = functools.partial(msgpack.unpackb, object_hook=unpack_array)
