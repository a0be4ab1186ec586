"""Hostile input against the model server, the gateway and the control-plane API, each a real process on 127.0.0.1.

    .venv/bin/python benchmarks/hostile/run.py                       # 10,000 cases per server
    .venv/bin/python benchmarks/hostile/run.py --cases 2000 --targets model-server
    .venv/bin/python benchmarks/hostile/run.py --write               # also replace the section in RESULTS.md

Each server gets the same seeded cases (cases.py) over raw sockets from a few threads while a prober
sends one normal request every 10 ms on a keep-alive connection. Reported: answers by status
(`closed` = the server closed without answering, as for a truncated body), the prober's p99 and
failures, and the server's RSS and open files before and after. Target: 0 5xx, p99 under 50 ms,
RSS within 50 MB of the baseline.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from cases import Case, Target, generate  # noqa: E402

PREDICT = b'{"instances": [1.0, 2.0, 5.0]}'
SECTION = "## Hostile input"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fire(port: int, case: Case, timeout: float = 10.0) -> str:
    """Send one case; the answer's status code, or 'closed' / 'reset' / 'timeout'."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            try:
                s.sendall(case.data)
                if case.half_close:
                    s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused mid-send: the answer may still be there to read
            got = b""
            while b"\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            while got.startswith(b"HTTP/1.1 100 "):  # an interim answer: read on to the real one
                end = got.find(b"\r\n\r\n")
                if end < 0:
                    got += s.recv(4096)
                    continue
                got = got[end + 4:]
                while b"\r\n" not in got:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
    except socket.timeout:
        return "timeout"
    except ConnectionResetError:
        return "reset"
    if not got:
        return "closed"
    parts = got.split(b" ", 2)
    return parts[1].decode("latin-1") if len(parts) > 1 and parts[0].startswith(b"HTTP/") else "garbage"


class Prober:
    """One normal request every `interval` on a keep-alive connection, from a process of its own (the
    sending threads here hold the GIL; the prober must not wait for them): latencies and failures."""

    def __init__(self, port: int, request: bytes, interval: float = 0.01) -> None:
        ctx = multiprocessing.get_context("fork")
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_probe, args=(port, request, interval, self._stop, send), daemon=True)
        self.latencies: list[float] = []
        self.failures: collections.Counter = collections.Counter()

    def start(self) -> None:
        self._proc.start()

    def finish(self) -> None:
        self._stop.set()
        self.latencies, failures = self._recv.recv()
        self.failures = collections.Counter(failures)
        self._proc.join()


def _probe(port: int, request: bytes, interval: float, stop, out) -> None:
    latencies, failures = [], collections.Counter()
    sock = None
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            status, ok = _read_response(sock)
            latencies.append(time.perf_counter() - t0)
            if not 200 <= status < 300:
                failures[str(status)] += 1
            if not ok:
                sock.close()
                sock = None
        except OSError as exc:
            failures[type(exc).__name__] += 1
            if sock is not None:
                sock.close()
            sock = None
        stop.wait(max(0.0, interval - (time.perf_counter() - t0)))
    if sock is not None:
        sock.close()
    out.send((latencies, dict(failures)))


def _read_response(sock: socket.socket) -> tuple[int, bool]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed before an answer")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed mid-answer")
        rest += chunk
    return status, headers.get(b"connection", b"").lower() != b"close"


def proc_stats(pid: int) -> tuple[float, int]:
    """(RSS in MB, open file descriptors) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def huge_header(port: int, host: str, mib: int = 64) -> tuple[str, float]:
    """Stream a `mib` MiB header that never ends: (the answer's status, seconds until the connection ended)."""
    t = time.monotonic()
    case = Case("huge header", f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: ".encode() + b"h" * (mib << 20))
    status = fire(port, case, timeout=60)
    return status, round(time.monotonic() - t, 2)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def attack(port: int, pid: int, target: Target, n: int, workers: int = 8, seed: int = 0, warmup: int = 200) -> dict:
    """Run `n` cases against a server already up; the report as a dict."""
    normal = target.normal()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as warm:
        for _ in range(warmup):
            warm.sendall(normal)
            _read_response(warm)
    rss0, fds0 = proc_stats(pid)
    prober = Prober(port, normal)
    prober.start()
    counts: collections.Counter = collections.Counter()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    t0 = time.monotonic()
    cases = list(generate(target, n, seed))
    with ThreadPoolExecutor(workers) as pool:
        for case, status in zip(cases, pool.map(lambda c: fire(port, c), cases)):
            counts[status] += 1
            by_kind[case.kind][status] += 1
    elapsed = time.monotonic() - t0
    big = huge_header(port, target.host)
    prober.finish()
    time.sleep(1.0)  # let the server close what the last cases left
    rss1, fds1 = proc_stats(pid)
    five = sum(v for k, v in counts.items() if k.startswith("5"))
    return {"target": target.name, "cases": n, "seconds": round(elapsed, 1), "status": dict(sorted(counts.items())),
            "5xx": five, "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(by_kind.items())},
            "normal_requests": len(prober.latencies), "normal_failures": dict(prober.failures),
            "normal_p50_ms": round(percentile(prober.latencies, 50) * 1000, 2),
            "normal_p99_ms": round(percentile(prober.latencies, 99) * 1000, 2),
            "rss_mb": [round(rss0, 1), round(rss1, 1)], "open_files": [fds0, fds1], "huge_header": big}


# -- the processes

def build_model(base: Path) -> Path:
    spec = importlib.util.spec_from_file_location("hpt_build", REPO / "examples" / "half_plus_two" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(base)
    return base


def wait_http(port: int, path: str, proc: subprocess.Popen, timeout: float = 60.0, headers: str = "") -> None:
    deadline = time.monotonic() + timeout
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[3:5]} exited with {proc.returncode}")
        try:
            if fire(port, Case("probe", req), timeout=2) == "200":
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered 200 on port {port}{path} in {timeout:.0f} s")


def start(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tidal", *argv], cwd=REPO, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))


def model_server_target(host: str = "127.0.0.1") -> Target:
    return Target("model server", host, ("/v1/models/half_plus_two:predict", "/v2/models/half_plus_two/infer",
                                         "/v1/models/half_plus_two:classify"),
                  ("/v1/models/half_plus_two", "/v2/models/half_plus_two", "/metrics", "/v2/health/ready"),
                  v2_infer="/v2/models/half_plus_two/infer", normal_path="/v1/models/half_plus_two:predict",
                  normal_body=PREDICT)


def start_model_server(work: Path) -> tuple[subprocess.Popen, int]:
    base = build_model(work / "half_plus_two")
    port = free_port()
    p = start(["model-server", "--port", "0", "--rest_api_host", "127.0.0.1", "--rest_api_port", str(port),
               "--model_name", "half_plus_two", "--model_base_path", str(base)], work / "model-server.log")
    wait_http(port, "/v2/health/ready", p)
    return p, port


def start_gateway(work: Path, ms_port: int) -> tuple[subprocess.Popen, int]:
    routes = work / "routes.json"
    routes.write_text(json.dumps({"services": [{"name": "half-plus-two", "models": ["half_plus_two"], "replicas": [
        {"id": "r0", "host": "127.0.0.1", "port": ms_port}]}]}))
    port = free_port()
    p = start(["gateway", "--routes", str(routes), "--port", str(port), "--host", "127.0.0.1"], work / "gateway.log")
    wait_http(port, "/-/healthz", p)
    return p, port


def start_control_plane(work: Path) -> tuple[subprocess.Popen, int, str]:
    home = work / "home"
    port = free_port()
    p = start(["up", "--foreground", "--port", str(port), "--gateway-port", "0"], work / "control-plane.log",
              env={"TIDAL_HOME": str(home)})
    deadline = time.monotonic() + 60
    while not (home / "token").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    token = (home / "token").read_text().strip()
    wait_http(port, "/api/v1/healthz", p, headers=f"Authorization: Bearer {token}\r\n")
    return p, port, token


def stop(p: subprocess.Popen) -> float:
    t = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(90)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return round(time.monotonic() - t, 2)


def run(names: list[str], n: int, workers: int, seed: int) -> tuple[list[dict], dict]:
    """Start the servers named, attack each; (reports, {"stop_s": ..., "log_bytes": ...})."""
    work = Path(tempfile.mkdtemp(prefix="tidal-hostile-"))
    reports, procs = [], []
    extra: dict = {}
    try:
        ms, ms_port = start_model_server(work)
        procs.append(("model server", ms))
        if "model-server" in names:
            reports.append(attack(ms_port, ms.pid, model_server_target(), n, workers, seed))
        if "gateway" in names:
            gw, gw_port = start_gateway(work, ms_port)
            procs.append(("gateway", gw))
            t = model_server_target()
            target = Target("gateway", t.host, t.json_paths, t.get_paths + ("/-/metrics", "/-/healthz"), t.v2_infer,
                            normal_path=t.normal_path, normal_body=t.normal_body)
            reports.append(attack(gw_port, gw.pid, target, n, workers, seed))
        if "api" in names:
            cp, cp_port, token = start_control_plane(work)
            procs.append(("control plane", cp))
            target = Target("control-plane API", "127.0.0.1",
                            ("/api/v1/services", "/api/v1/nodepools", "/api/v1/volumes", "/api/v1/autoscalers"),
                            ("/api/v1/services", "/api/v1/events", "/api/v1/top", "/api/v1/healthz", "/"),
                            headers=f"Authorization: Bearer {token}\r\n", normal_path="/api/v1/services")
            reports.append(attack(cp_port, cp.pid, target, n, workers, seed))
    finally:
        extra["stop_s"] = {name: stop(p) for name, p in reversed(procs)}
        extra["log_bytes"] = {f.name: f.stat().st_size for f in sorted(work.glob("*.log"))}
        shutil.rmtree(work, ignore_errors=True)
    return reports, extra


def verdict(r: dict) -> str:
    ok = r["5xx"] == 0 and r["normal_p99_ms"] < 50 and r["rss_mb"][1] - r["rss_mb"][0] <= 50 \
        and not r["normal_failures"] and "timeout" not in r["status"]
    return "met" if ok else "MISSED"


def markdown(reports: list[dict], extra: dict, argv: list[str], wall: float) -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown CPU")
    out = [SECTION, "",
           f"The same seeded hostile cases (`benchmarks/hostile/cases.py`: huge or garbled request lines and headers, "
           f"bad methods, conflicting Content-Length/Transfer-Encoding, truncated bodies, invalid JSON, deep nesting, "
           f"wrong types, huge numbers, bad V2 shapes and datatypes, path traversal, unicode, foreign Host names) "
           f"over raw sockets from {reports[0]['workers'] if reports else '?'} threads against each real process on "
           f"127.0.0.1, with a prober sending one normal request every 10 ms on a keep-alive connection. Machine: "
           f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}; {wall:.0f} s wall.",
           "", "```", " ".join(["python", "benchmarks/hostile/run.py", *argv]), "```", "",
           "| server | cases | seconds | answers by status | 5xx | normal p50 / p99 | normal failures | "
           "RSS MB before -> after | open files before -> after | a 64 MiB header | target |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        status = ", ".join(f"{k}: {v:,}" for k, v in r["status"].items())
        fails = ", ".join(f"{k}: {v}" for k, v in r["normal_failures"].items()) or "0"
        out.append(f"| {r['target']} | {r['cases']:,} | {r['seconds']} | {status} | {r['5xx']} | "
                   f"{r['normal_p50_ms']} / {r['normal_p99_ms']} ms ({r['normal_requests']:,} requests) | {fails} | "
                   f"{r['rss_mb'][0]} -> {r['rss_mb'][1]} | {r['open_files'][0]} -> {r['open_files'][1]} | "
                   f"{r['huge_header'][0]} in {r['huge_header'][1]} s | {verdict(r)} |")
    out += ["", "By kind of case (statuses summed over the servers):", "", "| kind | answers |", "|---|---|"]
    kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in reports:
        for k, v in r["by_kind"].items():
            kinds[k].update(v)
    for k, v in sorted(kinds.items()):
        out.append(f"| {k} | {', '.join(f'{s}: {c:,}' for s, c in sorted(v.items()))} |")
    stops = ", ".join(f"{k} {v} s" for k, v in extra.get("stop_s", {}).items())
    logs = ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in extra.get("log_bytes", {}).items())
    out += ["", f"SIGTERM to exit afterwards: {stops}. Log written during the whole run: {logs}. `closed` is a "
            f"connection the server closed without an answer (a truncated body: the client half-closed); "
            f"target: 0 5xx, normal p99 under 50 ms, RSS within 50 MB of the baseline, no failed normal request.", ""]
    return "\n".join(out)


def write_section(path: Path, text: str) -> None:
    doc = path.read_text()
    start = doc.find(SECTION + "\n")
    if start >= 0:
        end = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text.rstrip("\n") + ("\n" + doc[end:] if end >= 0 else "\n")
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000, help="cases per server (default 10,000)")
    ap.add_argument("--workers", type=int, default=8, help="threads sending cases (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default="model-server,gateway,api", help="comma-separated: model-server,gateway,api")
    ap.add_argument("--write", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    ap.add_argument("--json", help="also write the reports here")
    args = ap.parse_args(argv)
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    t0 = time.monotonic()
    reports, extra = run(names, args.cases, args.workers, args.seed)
    for r in reports:
        r["workers"] = args.workers
    shown = [f"--{k.replace('_', '-')} {v}" for k, v in (("cases", args.cases), ("workers", args.workers),
                                                         ("seed", args.seed), ("targets", args.targets))]
    text = markdown(reports, extra, shown, time.monotonic() - t0)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"reports": reports, **extra}, indent=2))
    if args.write:
        write_section(REPO / "benchmarks" / "RESULTS.md", text)
    return 0 if all(verdict(r) == "met" for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
