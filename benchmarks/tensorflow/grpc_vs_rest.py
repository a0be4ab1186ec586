"""gRPC against REST on the same `tidal model-server`, side by side: requests per second and server CPU per request.

    .venv/bin/python benchmarks/tensorflow/grpc_vs_rest.py [--duration 5] [--rounds 3] [--profile PY_SPY]
        [--grpc-load auto|ghz|python]
        [-- extra model-server flags, e.g. --grpc_max_threads 8]

Same setup as run.py (server pinned to core 0, TensorFlow threads 1/1, load generators on core 1,
concurrency 64, one row per request): per model and round, Predict from ghz (a compiled gRPC load
generator that scripts/ghz.sh builds; a grpc.aio client when it is missing or with --grpc-load python)
and wrk's REST predict back to back, so load from other work on the machine hits both alike; prints each
round's gRPC/REST ratio and the median. With --profile, py-spy (its path given) samples the
server's threads holding the GIL during a further gRPC run and prints where that time goes.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import run as bench  # noqa: E402

MODELS = ("half_plus_two", "sentiment")
CONCURRENCY = 64


def measure(server, model: str, duration: float) -> dict:
    address = f"127.0.0.1:{server.grpc_port}"
    c0 = server.cpu_seconds()
    g = bench.grpc_load(address, model, CONCURRENCY, duration)
    c1 = server.cpu_seconds()
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/{model}:predict"
    r = bench.wrk(url, bench.rest_body(model), CONCURRENCY, duration)
    c2 = server.cpu_seconds()
    return {"grpc_rps": g["rps"], "rest_rps": r["rps"],
            "grpc_cpu_ms": (c1 - c0) / (g["rps"] * duration) * 1e3,
            "rest_cpu_ms": (c2 - c1) / (r["rps"] * duration) * 1e3}


def profile(server, py_spy: str, seconds: float = 5.0) -> None:
    out = bench.OUT / "grpc_profile.txt"
    load = threading.Thread(target=bench.grpc_load,
                            args=(f"127.0.0.1:{server.grpc_port}", "half_plus_two", CONCURRENCY, seconds + 3))
    load.start()
    time.sleep(1.5)
    subprocess.run([py_spy, "record", "-p", str(server.proc.pid), "-d", str(round(seconds)), "-r", "200", "-f", "raw",
                    "-o", str(out), "--nonblocking", "--gil"], capture_output=True, check=True)
    load.join()
    own = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack:
            own[stack.split(";")[-1]] += int(n)
            total += int(n)
    print(f"server threads holding the GIL: {total / (seconds * 200):.0%} of the time; where (self):")
    for frame, n in own.most_common(15):
        print(f"  {n / total:6.1%}  {frame}")


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", metavar="PY_SPY", help="path of a py-spy binary: profile the server under gRPC")
    ap.add_argument("--grpc-load", choices=("auto", "ghz", "python"), default="auto",
                    help="the gRPC load generator: ghz (scripts/ghz.sh builds it) when found, or the Python client")
    args = ap.parse_args(argv)
    if args.grpc_load != "python":
        from benchmarks import ghz
        bench.GRPC_LOAD["ghz"] = ghz.find()
        if args.grpc_load == "ghz" and bench.GRPC_LOAD["ghz"] is None:
            ap.error("ghz not found: build it with scripts/ghz.sh (or set TIDAL_GHZ)")
    print(f"gRPC load: {bench.GRPC_LOAD['ghz'] or 'the Python grpc.aio client'}", flush=True)
    bench.ensure_models()
    bench.OUT.mkdir(parents=True, exist_ok=True)
    server = bench.Server(bench.OUT / "grpc_vs_rest.log", tuple(extra))
    try:
        server.wait_ready()
        for model in MODELS:  # warm both paths
            measure(server, model, 1.0)
        ratios: dict[str, list[float]] = {m: [] for m in MODELS}
        for i in range(args.rounds):
            for model in MODELS:
                m = measure(server, model, args.duration)
                ratios[model].append(m["grpc_rps"] / m["rest_rps"])
                print(f"round {i + 1} {model}: gRPC {m['grpc_rps']:,.0f} rps ({m['grpc_cpu_ms']:.2f} ms CPU/request), "
                      f"REST {m['rest_rps']:,.0f} rps ({m['rest_cpu_ms']:.2f} ms CPU/request), "
                      f"gRPC/REST {ratios[model][-1]:.2f}", flush=True)
        for model in MODELS:
            print(f"{model}: median gRPC/REST rps {statistics.median(ratios[model]):.2f}")
        if args.profile:
            profile(server, args.profile)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
