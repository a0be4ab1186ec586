"""Cold start: scale-from-zero to first answer through the real control plane and gateway, side by side with a
plain `tidal model-server` start to first answer on the same model, and a model server's start phase by phase.

    .venv/bin/python benchmarks/coldstart/run.py [--runs 20] [--models half_plus_two,sentiment] [-o result.json]

Three measurements per model, `--runs` each, median and p90:
- phases: a fresh interpreter that builds `tidal model-server`'s ModelServer and asks it
  (`phases.py`): process start (launch to its first line), imports, listen + model load,
  first answer, and a second answer for reference; plus a bare `python -c pass`.
- plain: `tidal model-server` launched, a predict request sent every 5 ms until one answers 200
  (right after each run from zero, so that both see the same load; `ratio_per_run` pairs them).
- from zero: `tidal up` in a temporary home (time factor 0.1, so a 10 s idle period is 1 real
  second and a drain 1 s), the model served with `tidal autoscale --min 0`; each run waits until
  the service is at zero with no replica process left, sends one predict request to the gateway
  and times its answer; the control plane's events split it into request -> the gateway's wake
  (ScaleFromZero), -> replica started (ReplicaScheduled), -> ready (ReplicaReady), -> answered.
  With the warm pool (`--warm-pool on`, the default, as `tidal up` has it) each run also waits until
  the pool has a warm process for every runtime in use (run/warm-pool.json), as the service's idle
  period (300 s by default, 1 s here) leaves it; each run records whether its replica came from the
  pool, and the pool processes' memory (resident and proportional) is sampled.
Models are built from examples/ into a temporary directory (already on local disk when timed);
the `_tf` ones (TensorFlow SavedModels) need `tidal[tensorflow]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.conftest import load_example  # noqa: E402  (the sample models' builders)

PY = sys.executable
BODIES = {"half_plus_two": {"instances": [1.0, 2.0, 5.0]}, "sentiment": {"instances": ["what a great film"]},
          "half_plus_two_tf": {"instances": [1.0, 2.0, 5.0]}, "sentiment_tf": {"instances": ["what a great film"]}}
FACTOR = 0.1


def stats(xs: list[float]) -> dict:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return {"median": statistics.median(xs), "p90": p90, "min": xs[0], "max": xs[-1], "n": len(xs)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, timeout: float = 60.0) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def interpreter(runs: int) -> dict:
    out = []
    for _ in range(runs):
        t = time.time()
        subprocess.run([PY, "-P", "-c", "pass"], check=True)
        out.append(time.time() - t)
    return stats(out)


def phases(base: Path, name: str, runs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parts: dict[str, list[float]] = {k: [] for k in ("process_start", "imports", "model_load", "first_inference",
                                                        "second_inference", "total_to_first_answer")}
    for _ in range(runs):
        launched = time.time()
        out = subprocess.run([PY, str(REPO / "benchmarks" / "coldstart" / "phases.py"), str(base), name,
                              json.dumps(BODIES[name])], env=env, capture_output=True, text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        assert m["statuses"] == [200, 200], m
        parts["process_start"].append(m["main"] - launched)
        parts["imports"].append(m["imports"] - m["main"])
        parts["model_load"].append(m["model_load"] - m["imports"])
        parts["first_inference"].append(m["first_inference"] - m["model_load"])
        parts["second_inference"].append(m["second_inference"] - m["first_inference"])
        parts["total_to_first_answer"].append(m["first_inference"] - launched)
    return {k: stats(v) for k, v in parts.items()}


def warm_phases(base: Path, name: str, runs: int) -> dict:
    """What a replica from the warm pool still does once assigned: listen + model load, first answer."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runtimes = "onnx,tensorflow" if name.endswith("_tf") else "onnx"
    parts: dict[str, list[float]] = {k: [] for k in ("preload", "model_load", "first_inference",
                                                        "assigned_to_first_answer")}
    for _ in range(runs):
        out = subprocess.run([PY, str(REPO / "benchmarks" / "coldstart" / "phases.py"), str(base), name,
                              json.dumps(BODIES[name]), f"warm:{runtimes}"], env=env, capture_output=True, text=True,
                             check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        assert m["statuses"] == [200, 200], m
        parts["preload"].append(m["preloaded"] - m["main"])
        # The ModelServer's construction (settings, no imports left) counts as assignment work.
        parts["model_load"].append(m["model_load"] - m["preloaded"])
        parts["first_inference"].append(m["first_inference"] - m["model_load"])
        parts["assigned_to_first_answer"].append(m["first_inference"] - m["preloaded"])
    return {k: stats(v) for k, v in parts.items()}


def plain_once(base: Path, name: str) -> float:
    """`tidal model-server` launched -> its first 200 to a predict request (sent every 5 ms)."""
    body = json.dumps(BODIES[name]).encode()
    port = free_port()
    t0 = time.time()
    proc = subprocess.Popen([PY, "-P", "-m", "tidal", "model-server", "--port", "0", "--rest_api_host", "127.0.0.1",
                             "--rest_api_port", str(port), "--model_name", name, "--model_base_path", str(base)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/{name}:predict"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"model server exited with {proc.returncode}")
            try:
                if post(url, body, 5) == 200:
                    return time.time() - t0
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


class ControlPlane:
    def __init__(self, home: Path, warm_pool: str) -> None:
        self.home = home
        self.env = dict(os.environ, TIDAL_HOME=str(home), TIDAL_WARM_POOL=warm_pool)
        self.env.pop("TIDAL_API", None)
        self.env.pop("TIDAL_TOKEN", None)

    def tidal(self, *argv: str) -> str:
        p = subprocess.run([PY, "-m", "tidal", *argv], env=self.env, cwd=REPO, capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"tidal {' '.join(argv)}: {p.stderr}{p.stdout}")
        return p.stdout

    def api(self, path: str):
        addr = json.loads((self.home / "address.json").read_text())
        token = (self.home / "token").read_text().strip()
        req = urllib.request.Request(addr["api"] + "/api/v1" + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def service(self, name: str) -> dict:
        return next(s for s in self.api("/top")["services"] if s["name"] == name)

    def pool(self) -> dict:
        try:
            return json.loads((self.home / "run" / "warm-pool.json").read_text())
        except (OSError, ValueError):
            return {"flavours": [], "processes": []}

    def pool_warm(self) -> bool:
        doc = self.pool()
        warm = {p["flavour"] for p in doc["processes"] if p["state"] == "warm"}
        return bool(doc["flavours"]) and set(doc["flavours"]) <= warm

    def pool_memory(self) -> dict[str, dict[str, int]]:
        """Each warm pool process's resident and proportional set size, by runtime."""
        from tidal.backends.warmpool import memory
        return {p["flavour"]: memory(p["pid"]) for p in self.pool()["processes"] if p["state"] == "warm"}

    def replica_from_pool(self, name: str) -> bool:
        from tidal.backends.local import proc_environ
        from tidal.backends.warmpool import WARM_HOME_ENV
        pids = [r["pid"] for r in self.api(f"/services/{name}")["replicas"] if r["state"] == "ready" and r["pid"]]
        return bool(pids) and proc_environ(pids[0]).get(WARM_HOME_ENV) == str(self.home)

    def processes(self, name: str) -> int:
        return sum(1 for r in self.api(f"/services/{name}")["replicas"] if r["state"] != "stopped"
                   and r["state"] != "failed")


def from_zero(models: dict[str, Path], runs: int, tmp: Path, warm_pool: str) -> dict:
    """Each run from zero is followed by a plain start of the same model, so both see the same load."""
    home = tmp / "home"
    cp = ControlPlane(home, warm_pool)
    bucket = tmp / "bucket"
    bucket.mkdir()
    for name, base in models.items():
        (bucket / name).symlink_to(base)
    cp.tidal("up", "--port", "0", "--gateway-port", "0", "--time-factor", str(FACTOR), "--tick", "5")
    out: dict[str, dict] = {}
    try:
        cp.tidal("nodepool", "create", "cpu-pool", "--label", "tier=cpu", "--instance-types", "ecs.c6.large",
                 "--max", "4")
        cp.tidal("volume", "create", "models", "--url", f"file://{bucket}")
        for name in models:
            svc = name.replace("_", "-")
            cp.tidal("serve", "tensorflow", f"--name={svc}", f"--model-name={name}", "--selector=tier=cpu",
                     "--data=models:/models", f"--model-path=/models/{name}", "--replicas", "1")
            cp.tidal("autoscale", svc, "--min", "0", "--max", "1", "--target-qps", "1000", "--idle", "10")
        gateway = json.loads((home / "address.json").read_text())["gateway"]
        for name in models:
            svc = name.replace("_", "-")
            body = json.dumps(BODIES[name]).encode()
            parts: dict[str, list[float]] = {k: [] for k in ("to_wake", "wake_to_started", "started_to_ready",
                                                             "ready_to_answer", "total")}
            plain: list[float] = []
            from_pool = 0
            memory: dict[str, dict[str, list[int]]] = {}
            for _ in range(runs):
                deadline = time.time() + 120
                while not (cp.service(svc)["scaled_to_zero"] and cp.processes(svc) == 0
                           and (warm_pool == "off" or cp.pool_warm())):
                    if time.time() > deadline:
                        raise RuntimeError(f"{svc} did not go to zero (or its warm pool did not warm up)")
                    time.sleep(0.2)
                for flavour, m in cp.pool_memory().items():
                    for k, v in m.items():
                        memory.setdefault(flavour, {}).setdefault(k, []).append(v)
                since = max([e["id"] for e in cp.api("/events?limit=1")] or [0])
                t0 = time.time()
                status = post(f"{gateway}/services/{svc}/v1/models/{name}:predict", body, 120)
                t1 = time.time()
                if status != 200:
                    raise RuntimeError(f"{svc}: the request after a cold start answered {status}")
                from_pool += cp.replica_from_pool(svc)
                # Events carry the control plane's (virtual) time: map it back to real time.
                r0 = time.time()
                virtual_now = cp.api("/top")["time"]
                r1 = time.time()
                real_of = lambda v: (r0 + r1) / 2 - (virtual_now - v) * FACTOR  # noqa: E731
                events = cp.api(f"/events?since={since}&limit=200")
                first = {}
                for e in sorted(events, key=lambda e: e["time"]):
                    first.setdefault(e["kind"], real_of(e["time"]))
                wake, started, ready = first["ScaleFromZero"], first["ReplicaScheduled"], first["ReplicaReady"]
                parts["to_wake"].append(wake - t0)
                parts["wake_to_started"].append(started - wake)
                parts["started_to_ready"].append(ready - started)
                parts["ready_to_answer"].append(t1 - ready)
                parts["total"].append(t1 - t0)
                plain.append(plain_once(models[name], name))
                print(f"  {name} from zero: {t1 - t0:.3f}s, plain start: {plain[-1]:.3f}s", file=sys.stderr,
                      flush=True)
            out[name] = {"from_zero": {k: stats(v) for k, v in parts.items()}, "plain": stats(plain),
                         "ratio_per_run": stats([z / p for z, p in zip(parts["total"], plain)]),
                         "replicas_from_the_warm_pool": from_pool,
                         "warm_pool_memory_median_bytes": {f: {k: int(statistics.median(v)) for k, v in m.items()}
                                                           for f, m in memory.items()}}
    finally:
        try:
            cp.tidal("down")
        except Exception as exc:  # report, keep the numbers
            print(f"tidal down: {exc}", file=sys.stderr)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--models", default="half_plus_two,sentiment")
    p.add_argument("--warm-pool", choices=("on", "off"), default="on",
                   help="the control plane's warm pool of model servers (TIDAL_WARM_POOL; default on, as in tidal up)")
    p.add_argument("--skip-phases", action="store_true", help="only the runs from zero and the plain starts")
    p.add_argument("--skip-from-zero", action="store_true", help="only the phases (no control plane)")
    p.add_argument("-o", "--output", help="write the result as JSON here too")
    args = p.parse_args()
    names = [m for m in args.models.split(",") if m]
    with tempfile.TemporaryDirectory(prefix="tidal-coldstart-") as tmp:
        tmp = Path(tmp)
        models = {}
        for name in names:
            base = tmp / "models" / name
            base.mkdir(parents=True)
            load_example(name).build(base)
            models[name] = base
        result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                              "platform": platform.platform(), "load_average": os.getloadavg()},
                  "runs": args.runs, "warm_pool": args.warm_pool, "interpreter": interpreter(args.runs),
                  "models": {name: {} for name in models}}
        for name, base in models.items():
            if not args.skip_phases:
                print(f"{name}: phases", file=sys.stderr, flush=True)
                result["models"][name] = {"phases": phases(base, name, args.runs),
                                          "warm_phases": warm_phases(base, name, args.runs)}
        for name, measured in ({} if args.skip_from_zero else from_zero(models, args.runs, tmp,
                                                                          args.warm_pool)).items():
            result["models"][name].update(measured)
            result["models"][name]["ratio_from_zero_to_plain"] = (
                measured["from_zero"]["total"]["median"] / measured["plain"]["median"])
        result["machine"]["load_average_after"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
