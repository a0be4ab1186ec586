"""A real tidal HttpServer on 127.0.0.1, in its own thread and loop, standing in for a model server."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tests.threaded_server import ThreadedServer
from tidal.http.server import Response

TF_METADATA = orjson.dumps({
    "model_spec": {"name": "m", "signature_name": "", "version": "1"},
    "metadata": {"signature_def": {"signature_def": {"serving_default": {
        "inputs": {"x": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "3"}]}}},
        "outputs": {}, "method_name": "tensorflow/serving/predict"}}}}})
V2_METADATA = orjson.dumps({"name": "m", "versions": ["1"], "platform": "onnxruntime_onnx",
                            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}], "outputs": []})


class FakeModelServer(ThreadedServer):
    """Answers metadata and inference for model `m` (input x: FP32 [-1, 3]); can stall all answers for a while."""

    def __init__(self) -> None:
        super().__init__()
        self.stall_until = 0.0  # time.monotonic() before which no request is answered
        self.delay = 0.0
        self.requests = 0
        self.bodies: list[bytes] = []

    def handle(self, req):
        if req.method == "GET" and req.path == "/api/v1/services/m":  # the control plane's view of service m
            if req.headers.get("authorization") != "Bearer tok":
                return Response(401, b'{"error": "token"}')
            return Response(200, orjson.dumps({"name": "m", "desired": 3, "available": 2, "replicas": [
                {"name": "m-1", "billing": "on-demand"}, {"name": "m-2", "billing": "spot"},
                {"name": "m-3", "billing": "spot"}]}))
        if req.method == "GET" and req.path == "/v1/models/m/metadata":
            return Response(200, TF_METADATA)
        if req.method == "GET" and req.path == "/v2/models/m":
            return Response(200, V2_METADATA)
        if req.method != "POST" or req.path not in ("/v1/models/m:predict", "/v2/models/m/infer"):
            return Response(404, b'{"error": "not found"}')
        self.requests += 1
        if len(self.bodies) < 5:
            self.bodies.append(req.body)
        try:
            doc = orjson.loads(req.body)
            rows = doc["inputs"]["x"] if req.path.startswith("/v1") else doc["inputs"][0]["data"]
            if req.path.startswith("/v2") and doc["inputs"][0]["name"] not in ("x", "text"):
                raise KeyError("unknown input")
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
            return Response(400, b'{"error": "bad body"}')
        answer = Response(200, orjson.dumps({"predictions": rows}))
        wait = max(self.delay, self.stall_until - time.monotonic())
        if wait > 0:
            return self._later(wait, answer)
        return answer

    async def _later(self, seconds: float, answer: Response) -> Response:
        await asyncio.sleep(seconds)
        return answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"


@pytest.fixture
def model_server():
    s = FakeModelServer()
    s.start()
    yield s
    s.stop()
