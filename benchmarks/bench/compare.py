"""Compares `tidal bench` with wrk and hey on the same server: throughput and latency percentiles.

Closed loop at a fixed concurrency: tidal bench -c N vs wrk -c N vs hey -c N.
`--together` runs each other tool at the same time as tidal bench, each with half the concurrency
(or rate), so both see the same server at the same moment: on a shared machine whose load drifts
from run to run, that is the fair comparison.
Two servers: `--server echo` (a tidal HttpServer answering after --delay) or `--server model`
(`tidal model-server` with the half_plus_two sample, CPU-bound, no timers).
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
from concurrent.futures import ThreadPoolExecutor
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


def wait_ready(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1.0) as s:
                s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"the server on port {port} did not become ready")


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


def medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def one_at_a_time(url: str, c: int, d: int, cpu: str | None, rate: float, repeat: int) -> list[tuple]:
    plan = [
        ("closed", f"c={c}", "wrk", run_wrk, (url, c, d, cpu)),
        ("closed", f"c={c}", "hey", run_hey, (url, c, d, cpu)),
        ("closed", f"c={c}", "tidal bench", run_tidal, (url, c, d, cpu)),
        ("open", f"{rate:g}/s", "hey -q", run_hey, (url, c, d, cpu, rate)),
        ("open", f"{rate:g}/s", "tidal bench", run_tidal, (url, c, d, cpu, rate)),
    ]
    # Round-robin over the tools, so a busy spell on a shared machine hits them all alike; then the
    # median of each figure over the rounds.
    runs: list[list[dict]] = [[] for _ in plan]
    for _ in range(repeat):
        for i, (*_, fn, a) in enumerate(plan):
            runs[i].append(fn(*a))
    return [(mode, load, tool, medians(runs[i])) for i, (mode, load, tool, _, _) in enumerate(plan)]


def together(url: str, c: int, d: int, cpu: str | None, rate: float, repeat: int) -> list[tuple]:
    """Pairs run at once, each with half the load; tidal bench starts first (its Python start-up takes
    about half a second) so the two measured windows overlap."""
    half_c, half_r = max(1, c // 2), rate / 2
    pairs = [
        ("closed", f"c={half_c} each", "wrk", lambda: run_wrk(url, half_c, d, cpu),
         lambda: run_tidal(url, half_c, d, cpu)),
        ("closed", f"c={half_c} each", "hey", lambda: run_hey(url, half_c, d, cpu),
         lambda: run_tidal(url, half_c, d, cpu)),
        ("open", f"{half_r:g}/s each", "hey -q", lambda: run_hey(url, half_c, d, cpu, half_r),
         lambda: run_tidal(url, half_c, d, cpu, half_r)),
    ]
    rows = []
    with ThreadPoolExecutor(2) as pool:
        for mode, load, tool, theirs, ours in pairs:
            a, b = [], []
            for _ in range(repeat):
                fut_ours = pool.submit(ours)
                time.sleep(0.6)
                a.append(theirs())
                b.append(fut_ours.result())
            rows.append((mode, load, tool, medians(a)))
            rows.append((mode, load, f"tidal bench (beside {tool})", medians(b)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--delay", type=float, default=0.005, help="server-side wait per request (s)")
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--rate", type=float, default=1000.0, help="open-loop rate, below what the server sustains")
    p.add_argument("--repeat", type=int, default=3, help="rounds over the tools; each figure is the median")
    p.add_argument("--server", choices=["echo", "model"], default="echo")
    p.add_argument("--together", action="store_true", help="run each tool beside tidal bench, sharing the load")
    args = p.parse_args()
    for tool in ("wrk", "hey"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    load_before = f"{os.getloadavg()[0]:.1f}"
    server_cpu, client_cpu = ("0", "1") if (os.cpu_count() or 1) >= 2 else (None, None)
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="tidal-bench-")
    if args.server == "model":
        sys.path.insert(0, str(ROOT / "examples" / "half_plus_two"))
        from build import build  # examples/half_plus_two/build.py
        base = Path(tmp) / "half_plus_two"
        build(base)
        cmd = [PY, "-m", "tidal", "model-server", "--rest_api_host", "127.0.0.1", "--rest_api_port", str(port),
               "--model_name", "half_plus_two", "--model_base_path", str(base)]
        what = "tidal model-server, half_plus_two (ONNX Runtime)"
    else:
        cmd = [PY, str(Path(__file__).with_name("target.py")), "--port", str(port), "--delay", str(args.delay)]
        what = f"tidal HttpServer, {args.delay * 1000:g} ms per answer"
    server = subprocess.Popen(pinned(cmd, server_cpu), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        url = f"http://127.0.0.1:{port}{PATH}"
        wait_ready(port)
        c, d = args.concurrency, args.duration
        run_wrk(url, c, 1, client_cpu)  # warm-up, not counted

        if args.together:
            rows = together(url, c, d, client_cpu, args.rate, args.repeat)
        else:
            rows = one_at_a_time(url, c, d, client_cpu, args.rate, args.repeat)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"server: {what}; {d} s per run, median of "
          f"{args.repeat} rounds; {os.cpu_count()} CPUs ({cpu}); load average before {load_before}, after "
          f"{os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M')}\n")
    print("| mode | load | tool | throughput (req/s) | p50 (ms) | p90 (ms) | p99 (ms) | errors | "
          "tidal vs this tool: throughput, p50 |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for i, (mode, load, tool, r) in enumerate(rows):
        if tool.startswith("tidal bench"):
            vs = ""
        else:
            t = next(x for m, _, name, x in rows[i:] if m == mode and name.startswith("tidal bench"))
            vs = f"{(t['throughput'] / r['throughput'] - 1) * 100:+.1f}%, {(t['p50'] / r['p50'] - 1) * 100:+.1f}%"
        print(f"| {mode} | {load} | {tool} | {r['throughput']:,.0f} | {r['p50']:.2f} | {r['p90']:.2f} | "
              f"{r['p99']:.2f} | {r['errors']} | {vs} |")
    t, h = next(r for mode, _, tool, r in rows if mode == "open" and tool.startswith("tidal")), \
        next(r for mode, _, tool, r in rows if tool == "hey -q")
    print(f"\nopen loop, tidal bench's service time (from the actual send, as hey measures): p50 "
          f"{t['service_p50']:.2f} ms, {(t['service_p50'] / h['p50'] - 1) * 100:+.1f}% vs hey -q")


if __name__ == "__main__":
    main()
