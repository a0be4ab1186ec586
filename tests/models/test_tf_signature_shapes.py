"""SignatureDefs with unknown-rank, partially known and sparse inputs: served, shapes from the request, sparse refused by name."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install tidal[tensorflow])")

from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402

from tidal.errors import InvalidArgument  # noqa: E402
from tidal.models.runtimes.tensorflow import signature_from_def  # noqa: E402
from tidal.models.signatures import InputChecker, conform  # noqa: E402


def sig_def(inputs: dict, method="tensorflow/serving/predict") -> meta_graph_pb2.SignatureDef:
    d = meta_graph_pb2.SignatureDef(method_name=method)
    for key, shape in inputs.items():
        info = d.inputs[key]
        info.dtype = types_pb2.DT_FLOAT
        if shape == "sparse":
            info.coo_sparse.values_tensor_name = f"{key}/values:0"
            info.coo_sparse.indices_tensor_name = f"{key}/indices:0"
            info.coo_sparse.dense_shape_tensor_name = f"{key}/shape:0"
        else:
            info.name = f"{key}:0"
            if shape is None:
                info.tensor_shape.unknown_rank = True
            else:
                for size in shape:
                    info.tensor_shape.dim.add().size = size
    out = d.outputs["y"]
    out.name, out.dtype = "y:0", types_pb2.DT_FLOAT
    return d


@pytest.mark.parametrize("tf1, shape, value, ok", [
    (False, None, np.zeros((2, 3, 4), np.float32), True),     # unknown rank: any rank
    (False, None, np.float32(1.0), True),
    (False, (-1, 1), np.zeros((3, 1), np.float32), True),
    (False, (-1, 1), np.zeros((3,), np.float32), False),      # a TF2 function's declared shape holds
    (False, (-1, 1), np.zeros((3, 2), np.float32), False),
    (True, (-1, 1), np.zeros((3,), np.float32), True),        # a TF1 graph: the request's shape, as TF Serving
    (True, (-1, 1), np.zeros((3, 2), np.float32), True),
    (True, (-1, 1), np.array(["a"]), False),                  # dtypes still checked
])
def test_shapes_taken_from_the_request(tf1, shape, value, ok):
    sig = signature_from_def("s", sig_def({"x": shape}), tf1=tf1)
    assert sig.inputs["x"].rank_known is (shape is not None)
    for check in (lambda i: conform(sig, i), InputChecker(sig)):
        if ok:
            assert check({"x": value})["x"].shape == np.shape(value)
        else:
            with pytest.raises(InvalidArgument):
                check({"x": value})


def test_unknown_rank_is_not_batched():
    assert not signature_from_def("s", sig_def({"x": None})).batchable
    assert signature_from_def("s", sig_def({"x": (-1, 1)})).batchable


def test_sparse_input_keeps_the_signature_and_refuses_requests_naming_the_input():
    sig = signature_from_def("sparse_sig", sig_def({"ids": "sparse", "x": (-1,)}))
    assert sig.inputs["ids"].sparse and not sig.batchable
    for check in (lambda i: conform(sig, i), InputChecker(sig)):
        with pytest.raises(InvalidArgument, match="signature 'sparse_sig' takes sparse input 'ids'"):
            check({"ids": np.zeros(2, np.float32), "x": np.zeros(2, np.float32)})
