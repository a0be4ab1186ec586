"""Micro-benchmark of the model data path in process: onnxruntime alone vs Servable.predict (no HTTP)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_tiny(path: Path) -> Path:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"])],
        "half_plus_two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        initializer=[helper.make_tensor("a", TensorProto.FLOAT, [], [0.5]),
                     helper.make_tensor("b", TensorProto.FLOAT, [], [2.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def per_call(fn, n: int) -> tuple[float, float]:
    """(mean, median) seconds per call; the median resists other processes taking the core."""
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sum(times) / n, statistics.median(times)


async def bench_servable(servable, feed, n: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, median latency in microseconds) with `concurrency` requests in flight."""
    lat: list[float] = []

    async def worker(k: int) -> None:
        for _ in range(k):
            await asyncio.sleep(0)  # one loop turn, as a request read from a socket would take
            t0 = time.perf_counter()
            await servable.predict("serving_default", feed)
            lat.append(time.perf_counter() - t0)

    for _ in range(200):
        await servable.predict("serving_default", feed)
    t0 = time.perf_counter()
    await asyncio.gather(*[worker(n // concurrency) for _ in range(concurrency)])
    elapsed = time.perf_counter() - t0
    return len(lat) / elapsed, statistics.median(lat) * 1e6


async def main(args) -> None:
    import onnxruntime as ort

    from tidal.clock import RealClock
    from tidal.models.config import BatchingOptions, RuntimeOptions
    from tidal.models.runtimes import load_runtime
    from tidal.models.servable import Servable

    model_dir = Path(args.model_dir) if args.model_dir else Path(tempfile.mkdtemp()) / "1"
    if not args.model_dir:
        build_tiny(model_dir / "model.onnx")
    opts = RuntimeOptions(intra_op_threads=args.threads, inter_op_threads=1)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    model_file = next(model_dir.glob("*.onnx"))
    sess = ort.InferenceSession(str(model_file), so, providers=["CPUExecutionProvider"])
    runtime = load_runtime(str(model_dir), opts)
    sig = runtime.signatures["serving_default"]
    feed = {}
    for name, spec in sig.inputs.items():
        shape = tuple(args.batch if i == 0 else (d if d > 0 else args.seq) for i, d in enumerate(spec.shape))
        feed[name] = (np.ones(shape, spec.dtype) if spec.datatype != "BYTES" else np.full(shape, "x", object))
    print(f"model {model_file}  inputs {[(k, v.shape) for k, v in feed.items()]}  intra_op_threads={args.threads}")
    n = args.n
    for label, fn in (("onnxruntime sess.run", lambda: sess.run(None, feed)),
                      ("runtime.run", lambda: runtime.run("serving_default", feed))):
        mean, p50 = per_call(fn, n)
        print(f"{label:<38s}{1 / mean:10.0f} calls/s  p50 {p50 * 1e6:9.1f} us")
    for batching in (False, True):
        s = Servable("m", 1, runtime, batching=BatchingOptions(enabled=batching), runtime_options=opts,
                     clock=RealClock())
        for c in args.concurrency:
            rps, p50 = await bench_servable(s, feed, n, c)
            mode = "inline" if s.executor.inline else "thread"
            print(f"Servable.predict batching={'on ' if batching else 'off'} c={c:<3d}"
                  f"{rps:10.0f} req/s    p50 {p50:9.1f} us  ({mode})")
        s.executor.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-dir", help="a version directory with a .onnx file (default: a tiny y = 0.5x + 2)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=16, help="size for variable non-batch dimensions")
    p.add_argument("-n", type=int, default=20000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args))
    sys.exit(0)
