"""tensorflow-serving-api's message and service modules, loaded without starting TensorFlow's runtime.

The generated `*_pb2` modules import `tensorflow.core...` protos, and importing any
`tensorflow.*` module first runs `tensorflow/__init__.py`: about 10 s and 700 MB, for
messages that need none of it. A replica serving only ONNX models should not pay that
for its gRPC port, so the protos are imported beneath a bare placeholder `tensorflow`
package that is removed again afterwards; a later real `import tensorflow` (when a
SavedModel loads) reuses the same proto modules, so message classes are shared.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from types import SimpleNamespace

_MODULES = {
    "predict_pb2": "tensorflow_serving.apis.predict_pb2",
    "classification_pb2": "tensorflow_serving.apis.classification_pb2",
    "regression_pb2": "tensorflow_serving.apis.regression_pb2",
    "inference_pb2": "tensorflow_serving.apis.inference_pb2",
    "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
    "get_model_status_pb2": "tensorflow_serving.apis.get_model_status_pb2",
    "prediction_service_pb2": "tensorflow_serving.apis.prediction_service_pb2",
    "model_service_pb2": "tensorflow_serving.apis.model_service_pb2",
    "model_management_pb2": "tensorflow_serving.apis.model_management_pb2",
    "prediction_log_pb2": "tensorflow_serving.apis.prediction_log_pb2",
    "tensor_pb2": "tensorflow.core.framework.tensor_pb2",
    "types_pb2": "tensorflow.core.framework.types_pb2",
    "meta_graph_pb2": "tensorflow.core.protobuf.meta_graph_pb2",
    "example_pb2": "tensorflow.core.example.example_pb2",
    "error_codes_pb2": "tensorflow.core.protobuf.error_codes_pb2",
}

_loaded: SimpleNamespace | None = None


def available() -> bool:
    """Whether grpcio and tensorflow-serving-api (with the tensorflow package it needs) are installed."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("grpc", "tensorflow_serving", "tensorflow"))
    except (ImportError, ValueError):
        return False


def load() -> SimpleNamespace:
    """The modules, as attributes named like `predict_pb2`; ImportError when they are not installed.

    Call it before any other thread may import tensorflow: while the placeholder is in
    place, such an import would get the placeholder.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    placeholder = None
    if sys.modules.get("tensorflow") is None:
        spec = importlib.util.find_spec("tensorflow")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("tensorflow is not installed", name="tensorflow")
        placeholder = types.ModuleType("tensorflow")
        placeholder.__path__ = list(spec.submodule_search_locations)
        sys.modules["tensorflow"] = placeholder
    try:
        modules = {short: importlib.import_module(full) for short, full in _MODULES.items()}
    finally:
        if placeholder is not None and sys.modules.get("tensorflow") is placeholder:
            del sys.modules["tensorflow"]
    _loaded = SimpleNamespace(**modules)
    return _loaded
