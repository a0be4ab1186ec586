"""Gateway benchmark: one replica reached directly, through the Tidal gateway, and through nginx, with wrk.

The gateway runs with each engine asked for (`--engines python,edge`): the Python gateway, and the
compiled edge in front of it (`--engine edge`, built by scripts/edge.sh; skipped with a note when
its binary is missing). The edge's CPU is read like the others': the gateway process and its children.

Usage (from the repository root, needs `wrk` and `nginx` on PATH):
    .venv/bin/python benchmarks/gateway/run.py [--models tiny,minilm] [--concurrency 1,64]
        [--duration 10] [--rounds 3] [--workers 1,2] [--markdown]

`--workers 1,2`: the gateway with one process and with two sharing its port (the supervised
gateway process, `python -m tidal.gateway.process --workers N`, on a socket bound with
SO_REUSEPORT as its supervisor binds it), each beside nginx with as many worker processes.
One process is pinned like the single proxy below; more than one runs on `--multi-cpus`
(default: unpinned, every core, shared with the replica and wrk on a small machine).

Pinning on a 2-core machine (override with --replica-cpus / --proxy-cpus / --wrk-cpus):
the replica alone on CPU 0; the proxy under test (gateway or nginx, one at a time) and
wrk share CPU 1. Direct runs use the same wrk pinning, so the three columns differ only
in the hop. Each round runs direct, gateway and nginx back to back, and the table gives
the median round, so the ratios are side by side in time. The proxies' CPU per request is read
from /proc (the process and its children: nginx's worker) around each run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

def targets(workers: list[int], engines: list[str]) -> list[str]:
    kinds = [{"python": "gateway", "edge": "edge"}[e] for e in engines] + ["nginx"]
    return ["direct", *(f"{kind}x{n}" for n in workers for kind in kinds)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready within {timeout}s")


def pinned(cpus: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def build_models(work: Path, models: list[str]) -> dict[str, Path]:
    out = {}
    for m in models:
        name = {"tiny": "half_plus_two", "minilm": "minilm"}[m]
        base = work / name
        if not base.exists():
            script = ROOT / "examples" / name / "build.py"
            subprocess.run([PY, str(script), "--out", str(base)], check=True, cwd=ROOT)
        out[m] = base
    return out


def request_body(model: str) -> bytes:
    if model == "tiny":
        return b'{"instances": [1.0, 2.0, 5.0]}'
    sys.path.insert(0, str(ROOT / "examples" / "minilm"))
    from build import sample_request  # the benchmark input the example defines: batch 1, 128 tokens
    req = sample_request(1, 128)
    return json.dumps({"instances": [{k: v[0].tolist() for k, v in req.items()}]}).encode()


NGINX_CONF = """\
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 64m;
    upstream replica {{
        server 127.0.0.1:{replica_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://replica;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering on;
        }}
    }}
}}
"""

def settle(url: str, body: bytes) -> None:
    """Wait until the replica has finished what the previous run left queued.

    When wrk stops, the requests it abandoned stay in the replica's batch queue (seconds of
    work for MiniLM at 64 connections) and would slow the next run down. One request sent
    now is answered only after them, so its answer means the replica is idle again.
    """
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        r.read()


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_wrk(text: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] * 1e3

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(0) if errors else ""}


def run_wrk(url: str, lua: Path, conc: int, duration: int, cpus: str) -> dict:
    # A long --timeout: at 64 connections MiniLM's queue is seconds deep, and wrk's default
    # 2 s would count the slowest requests as errors instead of measuring them.
    argv = pinned(cpus, ["wrk", "-t1", f"-c{conc}", f"-d{duration}s", "--timeout", "60s", "--latency",
                         "-s", str(lua), url])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    res = parse_wrk(out)
    if res["non2xx"] or res["socket_errors"]:
        raise RuntimeError(f"{url}: {res['non2xx']} non-2xx responses, {res['socket_errors']}\n{out}")
    return res


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (nginx's worker, a supervised gateway's child)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], log: Path, **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, **kw)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()


def start_gateway(procs: "Procs", routes: Path, tmp: Path, workers: int, cpus: str,
                  engine: str = "python") -> tuple[subprocess.Popen, int]:
    """The supervised gateway process with `workers` processes (the edge: threads), on a socket bound as its
    supervisor binds it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    token = tmp / "token"
    token.write_text("benchmark-token")
    token.chmod(0o600)
    argv = [PY, "-P", "-m", "tidal.gateway.process", "--listen-fd", str(sock.fileno()), "--token-file", str(token),
            "--routes-file", str(routes), "--workers", str(workers), "--engine", engine]
    try:
        proc = procs.start(pinned(cpus, argv), tmp / f"gateway-{engine}-x{workers}.log", pass_fds=(sock.fileno(),))
        return proc, sock.getsockname()[1]
    finally:
        sock.close()


def wait_workers(port: int, workers: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/-/control/hello",
                                         headers={"Authorization": "Bearer benchmark-token"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if len(json.loads(r.read()).get("workers", [])) == workers:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the gateway did not start {workers} processes within {timeout}s")


def bench_model(model: str, base: Path, args, tmp: Path) -> list[dict]:
    name = base.name
    rport = free_port()
    procs = Procs()
    names = targets(args.workers, args.engines)
    try:
        server = [PY, "-m", "tidal", "model-server", "--rest_api_port", str(rport), "--rest_api_host", "127.0.0.1",
                  "--port", "0", "--model_name", name, "--model_base_path", str(base),
                  # one core for the replica: one onnxruntime thread
                  "--tensorflow_intra_op_parallelism", "1"]
        if model == "minilm":
            # Batches of at most 8, one at a time: with the default (up to 1000) all 64 waiting
            # requests finish together every ~10 s, and a 30 s run counts 64, 128 or 192 of them
            # depending on phase; in eights the count is within a few percent.
            params = tmp / "minilm-batching.txt"
            params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 0 }\n"
                              "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 64 }\n")
            server += ["--enable_batching", "true", "--batching_parameters_file", str(params)]
        procs.start(pinned(args.replica_cpus, server), tmp / f"replica-{model}.log")
        wait_http(f"http://127.0.0.1:{rport}/v2/health/ready")
        routes = tmp / f"routes-{model}.json"
        routes.write_text(json.dumps({"host": "127.0.0.1", "port": 0, "services": [
            {"name": name, "models": [name], "replicas": [{"id": "r0", "port": rport}]}]}))
        proxies = {"direct": None}
        path = f"/v1/models/{name}:predict"
        urls = {"direct": f"http://127.0.0.1:{rport}{path}"}
        for n in args.workers:
            cpus = args.proxy_cpus if n == 1 else args.multi_cpus
            for engine in args.engines:
                kind = {"python": "gateway", "edge": "edge"}[engine]
                proxies[f"{kind}x{n}"], gport = start_gateway(procs, routes, tmp, n, cpus, engine)
                wait_workers(gport, n if engine == "python" else 2)  # the edge: its coordinator and the edge
                urls[f"{kind}x{n}"] = f"http://127.0.0.1:{gport}{path}"
            nport = free_port()
            ntmp = tmp / f"nginx-{model}-x{n}"
            ntmp.mkdir(exist_ok=True)
            (ntmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=ntmp, replica_port=rport, port=nport, workers=n))
            proxies[f"nginxx{n}"] = procs.start(pinned(cpus, [args.nginx, "-c", str(ntmp / "nginx.conf"), "-p",
                                                              str(ntmp)]), tmp / f"nginx-{model}-x{n}.log")
            wait_http(f"http://127.0.0.1:{nport}/v2/health/ready")
            urls[f"nginxx{n}"] = f"http://127.0.0.1:{nport}{path}"

        lua = tmp / f"{model}.lua"
        body_file = tmp / f"{model}.json"
        body_file.write_bytes(request_body(model))
        lua.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                       f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
        rows = []
        for conc in args.concurrency:
            body = body_file.read_bytes()
            for t in names:  # warm pools, caches and the model's first runs
                settle(urls["direct"], body)
                run_wrk(urls[t], lua, conc, 1, args.wrk_cpus)
            rounds = {t: [] for t in names}
            # MiniLM answers ~10/s on one core: at 64 connections a request waits seconds, so a
            # run must be long enough for many of them to finish.
            if model == "tiny":
                duration = args.duration
            elif conc == 1:  # ~10 answers a second: a short run holds too few to compare
                duration = max(args.duration, args.minilm_c1_duration)
            else:
                duration = max(args.duration, args.minilm_duration)
            for _ in range(args.rounds):
                for t in names:
                    settle(urls["direct"], body)
                    proxy = proxies[t]
                    cpu0 = tree_cpu_seconds(proxy.pid) if proxy is not None else 0.0
                    res = run_wrk(urls[t], lua, conc, duration, args.wrk_cpus)
                    if proxy is not None:  # the proxy's own CPU per request (what the replica spends is not in it)
                        res["cpu_us"] = 1e6 * (tree_cpu_seconds(proxy.pid) - cpu0) / max(1.0, res["rps"] * duration)
                    rounds[t].append(res)
            row = {"model": model, "concurrency": conc}
            for t in names:
                rs = rounds[t]
                row[t] = {"rps": statistics.median(r["rps"] for r in rs),
                          "cpu_us": statistics.median(r.get("cpu_us", 0.0) for r in rs),
                          "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                          "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                          "rounds": rs}
            paired(row, names)
            print(json.dumps({k: v if not isinstance(v, dict) else {a: b for a, b in v.items() if a != "rounds"}
                              for k, v in row.items()}), flush=True)
            rows.append(row)
        return rows
    finally:
        procs.stop_all()


def markdown(rows: list[dict]) -> str:
    lines = ["| model | conc | proxy | processes | req/s | /direct | /nginx | p50 ms | added p50 ms | p99 ms "
             "| CPU us/request | CPU /nginx |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for t in (k for k in r if k == "direct" or k.startswith(("gatewayx", "edgex", "nginxx"))):
            v = r[t]
            kind, _, n = t.rpartition("x")
            vs_nginx = f"{r['over_nginx'][t]:.0%}" if t in r.get("over_nginx", {}) else ""
            cpu_nginx = f"{r['cpu_over_nginx'][t]:.2f}" if t in r.get("cpu_over_nginx", {}) else ""
            lines.append(f"| {r['model']} | {r['concurrency']} | {kind} | {n or '-'} | {v['rps']:.0f} "
                         f"| {r['over_direct'].get(t, 1.0):.0%} | {vs_nginx} | {v['p50_ms']:.3f} "
                         f"| {r['added_p50_ms'].get(t, 0.0):+.3f} | {v['p99_ms']:.2f} "
                         f"| {v['cpu_us']:.0f} | {cpu_nginx} |" if t != "direct" else
                         f"| {r['model']} | {r['concurrency']} | direct | - | {v['rps']:.0f} | 100% | | "
                         f"{v['p50_ms']:.3f} | | {v['p99_ms']:.2f} | | |")
    return "\n".join(lines)


def paired(row: dict, names: list[str]) -> None:
    """Ratios and differences taken within each round (runs seconds apart), then the median.

    On a shared machine the load drifts over minutes; comparing runs of the same round
    cancels most of that drift, which medians of each column alone would not.
    """
    d = row["direct"]["rounds"]
    row["over_direct"], row["over_nginx"], row["added_p50_ms"] = {}, {}, {}
    for t in names[1:]:
        rs = row[t]["rounds"]
        row["over_direct"][t] = statistics.median(b["rps"] / a["rps"] for a, b in zip(d, rs))
        row["added_p50_ms"][t] = statistics.median(b["p50_ms"] - a["p50_ms"] for a, b in zip(d, rs))
        if t.startswith(("gateway", "edge")):
            n = row["nginx" + t[t.index("x"):]]["rounds"]
            row["over_nginx"][t] = statistics.median(b["rps"] / a["rps"] for a, b in zip(n, rs))
            row.setdefault("cpu_over_nginx", {})[t] = statistics.median(
                b["cpu_us"] / a["cpu_us"] for a, b in zip(n, rs) if a.get("cpu_us"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,minilm")
    p.add_argument("--concurrency", default="1,64")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--minilm-duration", type=int, default=30, help="seconds per wrk run for MiniLM with queueing")
    p.add_argument("--minilm-c1-duration", type=int, default=15, help="seconds per wrk run for MiniLM at concurrency 1")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--replica-cpus", default="0")
    p.add_argument("--proxy-cpus", default="1")
    p.add_argument("--wrk-cpus", default="1")
    p.add_argument("--workers", default="1", help="gateway (and nginx) processes to compare, e.g. 1,2")
    p.add_argument("--engines", default="python,edge", help="gateway engines to compare: python, edge or both")
    p.add_argument("--multi-cpus", default="", help="CPUs for a proxy of more than one process (default: all)")
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--work", help="where models are built and kept (default: a temporary directory)")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    args = p.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.workers = [int(n) for n in args.workers.split(",")]
    args.engines = [e for e in args.engines.split(",") if e]
    if "edge" in args.engines:
        from tidal.gateway.edge import find_edge
        if find_edge() is None:
            print("note: the tidal-edge binary is not built (scripts/edge.sh); benchmarking the Python gateway only",
                  file=sys.stderr)
            args.engines.remove("edge")
    for tool in ("wrk", args.nginx):
        if not shutil.which(tool):
            print(f"error: {tool} not found (apt-get install wrk nginx)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="tidal-gwbench-") as tmp_s:
        tmp = Path(tmp_s)
        work = Path(args.work) if args.work else tmp / "models"
        work.mkdir(parents=True, exist_ok=True)
        models = build_models(work, args.models.split(","))
        rows = []
        load_before = os.getloadavg()
        for m, base in models.items():
            rows += bench_model(m, base, args, tmp)
        load_after = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.markdown:
        print(markdown(rows))
        print(f"\nload average (1, 5, 15 min) before: {' '.join(f'{x:.2f}' for x in load_before)}, "
              f"after: {' '.join(f'{x:.2f}' for x in load_after)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
