"""TensorProto <-> numpy with TensorFlow's rules, checked against TensorFlow's own make_ndarray / make_tensor_proto."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed (pip install tidal[tensorflow])")

from tidal.errors import InvalidArgument  # noqa: E402
from tidal.server import tensor_proto, tfs_protos  # noqa: E402

pb = tfs_protos.load()


def proto(dtype: int, shape, **fields):
    p = pb.tensor_pb2.TensorProto(dtype=dtype, **fields)
    for d in shape:
        p.tensor_shape.dim.add().size = d
    return p


ARRAYS = [
    np.array([1.5, -2.0, 3.25], np.float32),
    np.arange(6, dtype=np.float64).reshape(2, 3),
    np.array([[1, -2], [3, 4]], np.int32),
    np.array([1 << 40, -5], np.int64),
    np.array([0, 255], np.uint8),
    np.array([-128, 127], np.int8),
    np.array([65535], np.uint16),
    np.array([1 << 63], np.uint64),
    np.array([True, False]),
    np.array([0.5, -1.25], np.float16),
    np.array([b"ab", b"\xff\x00"], dtype=object),
    np.zeros((0, 3), np.float32),
]


@pytest.mark.parametrize("arr", ARRAYS, ids=[f"{a.dtype}{list(a.shape)}" for a in ARRAYS])
def test_round_trip_in_typed_fields(arr):
    p = pb.tensor_pb2.TensorProto()
    tensor_proto.from_numpy(arr, p)
    assert not p.tensor_content  # typed fields, as TF Serving answers (clients read float_val)
    back = tensor_proto.to_numpy(p)
    assert back.shape == arr.shape and back.dtype == arr.dtype
    assert back.tolist() == arr.tolist()


def test_strings_from_str_arrays_are_utf8():
    p = pb.tensor_pb2.TensorProto()
    tensor_proto.from_numpy(np.array(["héllo", "x"]), p)
    assert p.dtype == pb.types_pb2.DT_STRING and list(p.string_val) == ["héllo".encode(), b"x"]


def test_agrees_with_tensorflow():
    tf = pytest.importorskip("tensorflow")
    for arr in [np.array([[1.0, 2.0]], np.float32), np.array([3, 4], np.int64), np.array([b"a"], dtype=object)]:
        made = tf.make_tensor_proto(arr)  # tensor_content for numbers
        np.testing.assert_array_equal(tensor_proto.to_numpy(made), arr)
        p = pb.tensor_pb2.TensorProto()
        tensor_proto.from_numpy(arr, p)
        np.testing.assert_array_equal(tf.make_ndarray(p), arr)


def test_a_short_value_list_is_padded_with_its_last_value():
    p = proto(pb.types_pb2.DT_FLOAT, [2, 2], float_val=[1.0, 2.0])
    assert tensor_proto.to_numpy(p).tolist() == [[1.0, 2.0], [2.0, 2.0]]
    assert tensor_proto.to_numpy(proto(pb.types_pb2.DT_INT64, [3])).tolist() == [0, 0, 0]
    assert tensor_proto.to_numpy(proto(pb.types_pb2.DT_STRING, [2])).tolist() == [b"", b""]


BAD = [
    ("too many values", lambda: proto(pb.types_pb2.DT_FLOAT, [1], float_val=[1.0, 2.0]), "more than its shape"),
    ("content size", lambda: proto(pb.types_pb2.DT_FLOAT, [3], tensor_content=b"\x00" * 8), "tensor_content holds 8"),
    ("negative dim", lambda: proto(pb.types_pb2.DT_FLOAT, [-1], float_val=[1.0]), "negative dimension"),
    ("unknown rank", lambda: pb.tensor_pb2.TensorProto(dtype=pb.types_pb2.DT_FLOAT,
                                                       tensor_shape={"unknown_rank": True}), "unknown rank"),
    ("huge fill", lambda: proto(pb.types_pb2.DT_FLOAT, [1 << 20, 1 << 20], float_val=[1.0]), "padding that many"),
    ("unsupported dtype", lambda: proto(pb.types_pb2.DT_COMPLEX64, [1]), "unsupported dtype DT_COMPLEX64"),
    ("int out of range", lambda: proto(pb.types_pb2.DT_UINT8, [1], int_val=[300]), "out of range"),
]


@pytest.mark.parametrize("name,make,message", BAD, ids=[b[0] for b in BAD])
def test_malformed_tensors_are_invalid_argument(name, make, message):
    with pytest.raises(InvalidArgument, match=message):
        tensor_proto.to_numpy(make())
