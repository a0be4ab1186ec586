"""Model warmup: a version's assets.extra/tf_serving_warmup_requests (PredictionLog records) replayed before it serves."""

from __future__ import annotations

import logging
import os
import struct

from tidal.errors import FailedPrecondition

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving's limit on warmup records


class WarmupError(FailedPrecondition):
    """The warmup file cannot be read or one of its requests fails: the version does not become AVAILABLE."""


def read_records(path: str) -> list[bytes]:
    """The records of a TFRecord file (length, length CRC, data, data CRC); WarmupError when it is cut short."""
    with open(path, "rb") as f:
        data = f.read()
    records, pos = [], 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise WarmupError(f"{WARMUP_FILE}: truncated record header at byte {pos}")
        (length,) = struct.unpack_from("<Q", data, pos)
        end = pos + 12 + length + 4
        if end > len(data):
            raise WarmupError(f"{WARMUP_FILE}: record at byte {pos} claims {length} bytes, more than the file holds")
        records.append(data[pos + 12:pos + 12 + length])
        if len(records) > MAX_RECORDS:
            raise WarmupError(f"{WARMUP_FILE}: more than {MAX_RECORDS} warmup records")
        pos = end
    return records


async def replay(servable, version_dir: str, iterations: int = 1) -> int:
    """Run the version's warmup requests `iterations` times each; the number of requests run (0: no file)."""
    path = os.path.join(version_dir, WARMUP_FILE)
    if not os.path.isfile(path):
        return 0
    from tidal.errors import TidalError
    from tidal.server import tfs_protos

    try:
        records = read_records(path)
        pb = tfs_protos.load()
    except OSError as e:
        raise WarmupError(f"cannot read {WARMUP_FILE}: {e.strerror or e}") from None
    except ImportError as e:
        raise WarmupError(f"{WARMUP_FILE} needs tensorflow-serving-api to be read ({e.name or e})") from None
    count = 0
    for i, record in enumerate(records):
        entry = pb.prediction_log_pb2.PredictionLog()
        try:
            entry.ParseFromString(record)
        except Exception:
            raise WarmupError(f"{WARMUP_FILE}: record {i} is not a PredictionLog") from None
        signature, inputs = _request(entry, servable, i)
        for _ in range(iterations):
            try:
                await servable.predict(signature, inputs)
            except TidalError as e:
                raise WarmupError(f"{WARMUP_FILE}: record {i} failed: {e.message}") from None
            count += 1
    log.info("model %s: version %d warmed up with %d requests", servable.name, servable.version, count)
    return count


def _request(entry, servable, i: int):
    """The signature and input tensors of one PredictionLog's request."""
    from tidal.errors import TidalError
    from tidal.server import dataplane, tensor_proto
    from tidal.server.grpc_api import features_to_tensors

    kind = entry.WhichOneof("log_type")
    try:
        if kind == "predict_log":
            request = entry.predict_log.request
            name = request.model_spec.signature_name or None
            sig = dataplane.signature(servable.signatures, name, dataplane.Method.PREDICT)
            return sig.name, {k: tensor_proto.to_numpy(v, k) for k, v in request.inputs.items()}
        if kind in ("classify_log", "regress_log"):
            request = getattr(entry, kind).request
            method = dataplane.Method.CLASSIFY if kind == "classify_log" else dataplane.Method.REGRESS
            sig = dataplane.signature(servable.signatures, request.model_spec.signature_name or None, method)
            which = request.input.WhichOneof("kind")
            body = getattr(request.input, which) if which else None
            if body is None or not body.examples:
                raise WarmupError(f"{WARMUP_FILE}: record {i} has no examples")
            context = body.context if which == "example_list_with_context" else None
            if sig.serialized_examples:
                import numpy as np

                prefix = context.SerializeToString() if context is not None else b""
                arr = np.empty(len(body.examples), dtype=object)
                arr[:] = [prefix + ex.SerializeToString() for ex in body.examples]
                return sig.name, {next(iter(sig.inputs)): arr}
            return sig.name, features_to_tensors(sig, context, body.examples)
    except TidalError as e:
        raise WarmupError(f"{WARMUP_FILE}: record {i}: {e.message}") from None
    raise WarmupError(f"{WARMUP_FILE}: record {i} is a {kind or 'empty'} log; Tidal replays predict, classify "
                      f"and regress requests")
