"""KServe's Python model server serving an ONNX file through onnxruntime: the baseline Tidal is measured against.

Runs in its own virtualenv (benchmarks/out/kserve-venv, made by run.py), never in Tidal's.
  python kserve_onnx.py --model_name half_plus_two --model_file model.onnx --threads 1 --http_port 8080
Answers KServe's V1 protocol (/v1/models/NAME:predict) with TF Serving's request forms:
{"instances": [...]} with plain values (one input) or objects keyed by input name.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from kserve import Model, ModelServer, model_server

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(string)": object}


class OnnxModel(Model):
    def __init__(self, name: str, model_file: str, threads: int) -> None:
        super().__init__(name)
        self.model_file = model_file
        self.threads = threads
        self.session: ort.InferenceSession | None = None
        self.load()

    def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.model_file, opts, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, _ORT_TYPES[i.type]) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        instances = payload["instances"]
        if isinstance(instances[0], dict):
            feed = {name: np.asarray([row[name] for row in instances], dtype=dt) for name, dt in self.inputs}
        else:
            name, dt = self.inputs[0]
            feed = {name: np.asarray(instances, dtype=dt)}
        values = self.session.run(self.outputs, feed)
        if len(values) == 1:
            return {"predictions": values[0].tolist()}
        return {"predictions": [dict(zip(self.outputs, row)) for row in zip(*(v.tolist() for v in values))]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_file", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args, _ = parser.parse_known_args()
    ModelServer().start([OnnxModel(args.model_name, args.model_file, args.threads)])
