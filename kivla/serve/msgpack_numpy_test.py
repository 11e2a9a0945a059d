import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy as openpi_msgpack

from kivla.serve import msgpack_numpy

VALUES = {
    "image": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
    "state": np.linspace(-1, 1, 5, dtype=np.float32),
    "f64": np.array([[1.5, -2.0]]),
    "ints": np.array([1, 2, 3], dtype=np.int64),
    "flags": np.array([True, False]),
    "empty": np.zeros((0, 4), dtype=np.float32),
    "text": np.array(["a", "bc"]),
    "scalar": np.float32(0.25),
    "count": np.int64(7),
    "prompt": "put the red circle on the blue square",
    "nested": {"list": [1, 2.5, "x"], "none": None},
}


def _equal(a, b) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _equal(a[k], b[k])
    elif isinstance(a, np.ndarray | np.generic):
        assert type(a) is type(b) and a.dtype == b.dtype and np.shape(a) == np.shape(b)
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize(
    ("pack", "unpack"),
    [
        (msgpack_numpy.packb, openpi_msgpack.unpackb),
        (openpi_msgpack.packb, msgpack_numpy.unpackb),
        (msgpack_numpy.packb, msgpack_numpy.unpackb),
    ],
    ids=["kivla->openpi", "openpi->kivla", "kivla->kivla"],
)
def test_round_trips_with_openpi(pack, unpack):
    _equal(VALUES, unpack(pack(VALUES)))


def test_bytes_equal_openpi():
    assert msgpack_numpy.packb(VALUES) == openpi_msgpack.packb(VALUES)


def test_non_contiguous_arrays_pack_their_values():
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T
    np.testing.assert_array_equal(msgpack_numpy.unpackb(msgpack_numpy.packb(a)), a)


@pytest.mark.parametrize(
    "value", [np.array([object()]), np.array([1 + 2j]), np.zeros(2, dtype=[("a", "f4")]), np.complex64(1)]
)
def test_refused_dtypes_on_pack(value):
    with pytest.raises(ValueError, match="Unsupported dtype"):
        msgpack_numpy.packb(value)


def _tagged(dtype, shape, data) -> bytes:
    return msgpack.packb({b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape})


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (_tagged("|O", [1], b"\0" * 8), "refused"),  # would build an array of raw pointers
        (_tagged("<c8", [1], b"\0" * 8), "refused"),
        (_tagged("[('a', '<f4')]", [1], b"\0" * 4), "dtype"),
        (_tagged("<f4", [4], b"\0" * 8), "do not hold"),
        (_tagged("<f4", [-1], b""), "non-negative"),
        (_tagged("<f4", "4", b"\0" * 16), "shape"),
        (_tagged("not a dtype", [1], b"\0"), "not a numpy dtype"),
        (_tagged("<f4", [1], "text"), "expected bytes"),
        (msgpack.packb({b"__npgeneric__": True, b"data": 1, b"dtype": "|O"}), "refused"),
    ],
)
def test_hostile_arrays_raise_value_error(frame, match):
    with pytest.raises(ValueError, match=match):
        msgpack_numpy.unpackb(frame)


def test_str_tag_keys_are_accepted():
    frame = msgpack.packb({"__ndarray__": True, "data": b"\x01\x02", "dtype": "|u1", "shape": [2]})
    np.testing.assert_array_equal(msgpack_numpy.unpackb(frame), [1, 2])
