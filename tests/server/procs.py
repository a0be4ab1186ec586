"""Running `tidal model-server` as a real process on a free port, for the end-to-end tests."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_config_server(root: Path, config_text: str, timeout: float = 180.0) -> "ServerProcess":
    """A model server with REST and gRPC serving the models of a TF Serving model config (written under `root`),
    TensorFlow kept to one thread; its gRPC address is `.grpc_address`."""
    config = root / "models.config"
    config.write_text(config_text)
    grpc_port = free_port()
    proc = ServerProcess(["--port", str(grpc_port), "--model_config_file", str(config),
                          "--tensorflow_intra_op_parallelism", "1"], root / "server.log").start(timeout=timeout)
    proc.grpc_address = f"127.0.0.1:{grpc_port}"
    return proc


class ServerProcess:
    def __init__(self, args: list[str], log_path: Path, pythonpath: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.argv = [sys.executable, "-m", "tidal", "model-server", "--port", "0", "--rest_api_host", "127.0.0.1",
                     "--rest_api_port", str(self.port), *args]
        self.pythonpath = pythonpath  # directories before the repository's (a sitecustomize, say)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*self.pythonpath, str(REPO)]))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"model server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _, _ = self.request("GET", "/v2/health/ready")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"model server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 30.0) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def build_slow_model(base: Path, version: int = 1, layers: int = 8) -> Path:
    """A model whose run time the request sets: y = mean(ones[n, 1024] @ W ... @ W), `layers` matmuls."""
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    inits = [numpy_helper.from_array(np.full((1024, 1024), 1 / 1024, np.float32), "w"),
             numpy_helper.from_array(np.array([1024], np.int64), "width"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    nodes = [helper.make_node("Concat", ["n", "width"], ["shape"], axis=0),
             helper.make_node("ConstantOfShape", ["shape"], ["h0"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))]
    nodes += [helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]) for i in range(layers)]
    nodes += [helper.make_node("ReduceMean", [f"h{layers}"], ["m"], keepdims=0),
              helper.make_node("Reshape", ["m", "one"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "slow", [n], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = base / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path
