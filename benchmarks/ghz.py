"""ghz, a compiled gRPC load generator (Go), as the gRPC side of the benchmarks: what wrk is to their REST side.

A Python gRPC client tops out near 10,000 calls a second on one core, about what the model server answers, so
a side-by-side run against wrk (C) would measure the clients as much as the server. ghz is built from its Go
module by `scripts/ghz.sh` into the tool cache (no network at run time); without it the benchmarks keep their
Python client and say so in their results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

MODULE = "github.com/bojand/ghz/cmd/ghz@v0.93.0"


# What a call still in flight gets when ghz closes its connection at the end of the run.
_CUT_AT_END = ("rpc error: code = Unavailable desc = transport is closing",
               "rpc error: code = Canceled desc = grpc: the client connection is closing")


def find() -> str | None:
    """ghz from TIDAL_GHZ, the PATH, or the tool cache `scripts/ghz.sh` builds into."""
    given = os.environ.get("TIDAL_GHZ")
    if given:
        return given if os.access(given, os.X_OK) else None
    cached = Path(os.environ.get("TIDAL_TOOLS", Path.home() / ".cache" / "tidal" / "bin")) / "ghz"
    return shutil.which("ghz") or (str(cached) if os.access(cached, os.X_OK) else None)


def version(binary: str) -> str:
    """The ghz module version the binary was built from (its build info), e.g. "ghz v0.93.0"."""
    try:
        out = subprocess.run(["go", "version", "-m", binary], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "ghz"
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "mod" and parts[1] == "github.com/bojand/ghz":
            return f"ghz {parts[2]}"
    return "ghz"


def protoset(file_descriptor, path: Path) -> Path:
    """The service's .proto file and its imports as a FileDescriptorSet, from the Python descriptors the server
    itself uses, so ghz encodes nothing by guesswork (the requests are sent as given bytes anyway)."""
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        fd.CopyToProto(files.file.add())

    add(file_descriptor)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(files.SerializeToString())
    return path


def load(binary: str, address: str, method: str, body: bytes, concurrency: int, duration: float,
         protoset_path: Path, core: str, work: Path) -> dict:
    """`concurrency` callers of one unary method (one HTTP/2 connection, as a gRPC channel is) for `duration`
    seconds, pinned to `core`: requests per second, p50/p99 in ms, errors. Calls still in flight when the time is
    up are cut by ghz closing its connection (at most `concurrency` of them); those are counted apart, not as errors."""
    work.mkdir(parents=True, exist_ok=True)
    request = work / "request.bin"
    request.write_bytes(body)
    # An empty message (ServerLive's request) as JSON: ghz cannot read an empty binary file.
    data = ["--binary-file", str(request)] if body else ["--data", "{}"]
    argv = ["taskset", "-c", core, binary, "--insecure", "--protoset", str(protoset_path),
            "--call", method.lstrip("/"), *data, "-c", str(concurrency),
            "--connections", "1", "-z", f"{duration:g}s", "-O", "json", address]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if not out.stdout.strip():
        raise RuntimeError(f"ghz: {out.stderr.strip()[-500:]}")
    report = json.loads(out.stdout)
    errors = dict(report.get("errorDistribution") or {})
    cut = sum(errors.pop(m, 0) for m in _CUT_AT_END)
    if cut > concurrency:  # more than were in flight at the end: the rest were real failures
        errors["transport is closing, before the end"] = cut - concurrency
        cut = concurrency
    latency = {p["percentage"]: p["latency"] / 1e6 for p in report.get("latencyDistribution") or ()}
    ok = report.get("statusCodeDistribution", {}).get("OK", 0)
    return {"rps": ok / (report["total"] / 1e9), "p50_ms": latency.get(50, 0.0), "p99_ms": latency.get(99, 0.0),
            "errors": sum(errors.values()), "error_kinds": errors, "cut_at_end": cut, "client": "ghz"}
