"""Compares `tidal bench` with wrk and hey on the same server: throughput and latency percentiles.

Closed loop at a fixed concurrency: tidal bench -c N vs wrk -c N vs hey -c N.
Open loop at a rate the server sustains: tidal bench --rate R vs hey -q (hey's
per-worker rate limit; wrk has no rate mode). Prints a Markdown table.

    .venv/bin/python benchmarks/bench/compare.py [--delay 0.005] [--duration 5] [--concurrency 10] [--rate 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
BODY = b'{"instances": [1.0, 2.0, 5.0]}'
PATH = "/v1/models/half_plus_two:predict"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], cpu: str | None) -> list[str]:
    # Server and load generator on different cores, so neither steals the other's CPU.
    return ["taskset", "-c", cpu, *cmd] if cpu and shutil.which("taskset") else cmd


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, conc: int, duration: int, cpu: str | None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY.decode())}\n'
                'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(pinned(["wrk", "-t1", f"-c{conc}", f"-d{duration}s", "--latency", "-s", f.name, url], cpu),
                         capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    pct = {m.group(1): _ms(m.group(2), m.group(3)) for m in re.finditer(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = sum(int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses|Socket errors:.*?timeout)\s*:?\s*(\d+)", out))
    return {"throughput": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": pct.get("50"), "p90": pct.get("90"), "p99": pct.get("99"), "errors": errors}


def run_hey(url: str, conc: int, duration: int, cpu: str | None, rate: float | None = None) -> dict:
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(BODY)
    cmd = ["hey", "-z", f"{duration}s", "-c", str(conc), "-m", "POST", "-T", "application/json", "-D", f.name]
    if rate:
        cmd += ["-q", f"{rate / conc:g}"]
    out = subprocess.run(pinned(cmd + [url], cpu), capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    pct = {m.group(1): float(m.group(2)) * 1000 for m in re.finditer(r"(50|90|99)%+ in ([\d.]+) secs", out)}
    codes = {m.group(1): int(m.group(2)) for m in re.finditer(r"\[(\d+)\]\s+(\d+) responses", out)}
    return {"throughput": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": pct.get("50"), "p90": pct.get("90"), "p99": pct.get("99"),
            "errors": sum(v for k, v in codes.items() if not k.startswith("2"))}


def run_tidal(url: str, conc: int, duration: int, cpu: str | None, rate: float | None = None) -> dict:
    cmd = [PY, "-m", "tidal", "bench", url, "--body", "-", "-d", f"{duration}s", "-o", "json", "--no-progress",
           "-c", str(conc)]
    if rate:
        cmd += ["--rate", f"{rate:g}"]
    out = subprocess.run(pinned(cmd, cpu), input=BODY, capture_output=True, check=True, cwd=ROOT).stdout
    doc = json.loads(out)
    lat = doc["latency_ms"]
    return {"throughput": doc["throughput"], "p50": lat["p50"], "p90": lat["p90"], "p99": lat["p99"],
            "errors": doc["errors"], "service_p50": doc["service_ms"]["p50"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--delay", type=float, default=0.005, help="server-side wait per request (s)")
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--rate", type=float, default=1000.0, help="open-loop rate, below what the server sustains")
    p.add_argument("--repeat", type=int, default=3, help="rounds over the tools; each figure is the median")
    args = p.parse_args()
    for tool in ("wrk", "hey"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    load_before = f"{os.getloadavg()[0]:.1f}"
    server_cpu, client_cpu = ("0", "1") if (os.cpu_count() or 1) >= 2 else (None, None)
    port = free_port()
    server = subprocess.Popen(pinned([PY, str(Path(__file__).with_name("target.py")), "--port", str(port),
                                      "--delay", str(args.delay)], server_cpu), stdout=subprocess.PIPE, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        server.stdout.readline()
        url = f"http://127.0.0.1:{port}{PATH}"
        c, d = args.concurrency, args.duration

        plan = [
            ("closed", f"c={c}", "wrk", run_wrk, (url, c, d, client_cpu)),
            ("closed", f"c={c}", "hey", run_hey, (url, c, d, client_cpu)),
            ("closed", f"c={c}", "tidal bench", run_tidal, (url, c, d, client_cpu)),
            ("open", f"{args.rate:g}/s", "hey -q", run_hey, (url, c, d, client_cpu, args.rate)),
            ("open", f"{args.rate:g}/s", "tidal bench", run_tidal, (url, c, d, client_cpu, args.rate)),
        ]
        # Round-robin over the tools, so a busy spell on a shared machine hits them all alike; then the
        # median of each figure over the rounds.
        runs: list[list[dict]] = [[] for _ in plan]
        for _ in range(args.repeat):
            for i, (*_, fn, a) in enumerate(plan):
                runs[i].append(fn(*a))
        rows = [(mode, load, tool, {k: statistics.median(r[k] for r in runs[i]) for k in runs[i][0]})
                for i, (mode, load, tool, _, _) in enumerate(plan)]
    finally:
        server.terminate()
        server.wait(10)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"server: tidal HttpServer, {args.delay * 1000:g} ms per answer; {d} s per run, median of "
          f"{args.repeat} rounds; {os.cpu_count()} CPUs ({cpu}); load average before {load_before}, after "
          f"{os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| mode | load | tool | throughput (req/s) | p50 (ms) | p90 (ms) | p99 (ms) | errors | "
          "tidal vs this tool: throughput, p50 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    ours = {mode: r for mode, _, tool, r in rows if tool == "tidal bench"}
    for mode, load, tool, r in rows:
        t = ours[mode]
        vs = "" if tool == "tidal bench" else (f"{(t['throughput'] / r['throughput'] - 1) * 100:+.1f}%, "
                                               f"{(t['p50'] / r['p50'] - 1) * 100:+.1f}%")
        print(f"| {mode} | {load} | {tool} | {r['throughput']:,.0f} | {r['p50']:.2f} | {r['p90']:.2f} | "
              f"{r['p99']:.2f} | {r['errors']} | {vs} |")
    t, h = ours["open"], next(r for mode, _, tool, r in rows if tool == "hey -q")
    print(f"\nopen loop, tidal bench's service time (from the actual send, as hey measures): p50 "
          f"{t['service_p50']:.2f} ms, {(t['service_p50'] / h['p50'] - 1) * 100:+.1f}% vs hey -q")


if __name__ == "__main__":
    main()
