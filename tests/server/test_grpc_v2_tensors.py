"""Open Inference Protocol gRPC tensors: ModelInferRequest contents in, numpy out, and back; table-driven."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.errors import InvalidArgument
from tidal.models.signatures import Signature, TensorSpec
from tidal.server.grpc_v2 import decode_inputs, encode_outputs
from tidal.server.protos import open_inference_grpc_pb2 as pb
from tidal.server.tensors import BY_V2

DTYPES = {"BOOL": ("bool_contents", [True, False]), "INT8": ("int_contents", [-128, 127]),
          "INT16": ("int_contents", [-3, 3]), "INT32": ("int_contents", [-(2 ** 31), 7]),
          "INT64": ("int64_contents", [-(2 ** 63), 9]), "UINT8": ("uint_contents", [0, 255]),
          "UINT16": ("uint_contents", [0, 65535]), "UINT32": ("uint_contents", [0, 2 ** 32 - 1]),
          "UINT64": ("uint64_contents", [0, 2 ** 64 - 1]), "FP32": ("fp32_contents", [0.5, -2.0]),
          "FP64": ("fp64_contents", [0.25, 1e300]), "BYTES": ("bytes_contents", [b"a", b"\xff\x00"])}


def sig(datatype: str) -> Signature:
    return Signature("serving_default", "tensorflow/serving/predict", {"x": TensorSpec("x", datatype, (-1,))},
                     {"y": TensorSpec("y", datatype, (-1,))})


def request(datatype: str, shape=(2,), field=None, values=None, raw=None) -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name="m")
    t = r.inputs.add(name="x", datatype=datatype, shape=list(shape))
    if field is not None:
        getattr(t.contents, field).extend(values)
    if raw is not None:
        r.raw_input_contents.append(raw)
    return r


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_typed_contents_round_trip(datatype):
    field, values = DTYPES[datatype]
    arr = decode_inputs(request(datatype, field=field, values=values), sig(datatype), "m")["x"]
    assert arr.shape == (2,) and arr.tolist() == values
    response = pb.ModelInferResponse()
    encode_outputs(response, {"y": arr}, ["y"], raw=False, model="m")
    assert list(getattr(response.outputs[0].contents, field)) == values
    assert response.outputs[0].datatype == datatype and not response.raw_output_contents


@pytest.mark.parametrize("datatype", [d for d in DTYPES if d != "BYTES"] + ["FP16"])
def test_raw_contents_round_trip(datatype):
    arr = np.array([1, 0, 1], dtype=BY_V2[datatype].np)
    got = decode_inputs(request(datatype, shape=(3,), raw=arr.tobytes()), sig(datatype), "m")["x"]
    np.testing.assert_array_equal(got, arr)
    response = pb.ModelInferResponse()
    encode_outputs(response, {"y": got}, ["y"], raw=True, model="m")
    assert response.raw_output_contents == [arr.tobytes()]


def test_fp16_outputs_make_the_whole_answer_raw():
    response = pb.ModelInferResponse()
    encode_outputs(response, {"a": np.ones(2, np.float32), "h": np.ones(2, np.float16)}, ["a", "h"], raw=False,
                   model="m")
    assert len(response.raw_output_contents) == 2 and not response.outputs[0].HasField("contents")


BAD = [
    ("FP16 typed", request("FP16", shape=(0,)), "FP16", "has no typed contents field; send it in raw_input_contents"),
    ("INT8 out of range", request("INT8", field="int_contents", values=[1, 300]), "INT8",
     "a value is outside the range of INT8"),
    ("UINT16 out of range", request("UINT16", field="uint_contents", values=[1, 70000]), "UINT16",
     "outside the range of UINT16"),
    ("negative dimension", request("FP32", shape=(-2,), field="fp32_contents", values=[]), "FP32",
     "has a negative dimension"),
    ("rank past the limit", request("FP32", shape=(1,) * 33, field="fp32_contents", values=[1.0]), "FP32",
     "at most 32"),
    ("BOOL raw not 0 or 1", request("BOOL", shape=(1,), raw=b"\x02"), "BOOL", "BOOL elements must be bytes 0 or 1"),
    ("BYTES raw truncated", request("BYTES", shape=(1,), raw=b"\x05\0\0\0ab"), "BYTES", "runs past"),
    ("huge shape, little data", request("FP32", shape=(2 ** 40, 2 ** 40), raw=b"\0" * 8), "FP32",
     "does not match shape"),
]


@pytest.mark.parametrize("req, datatype, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_tensors_are_invalid_argument(req, datatype, message):
    with pytest.raises(InvalidArgument) as err:
        decode_inputs(req, sig(datatype), "m")
    assert message in err.value.message
