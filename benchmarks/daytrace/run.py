"""Day-trace benchmark: one day of requests replayed through the real gateway and replicas, per autoscaling mode.

Each mode runs its own control plane (`tidal up` with a virtual clock `--speed` times
faster than real time), a node pool of spot and on-demand nodes, and half_plus_two
served by real `tidal model-server` processes. An open-loop sender replays
`shape.py`'s day (idle nights, a diurnal shape, bursts) through the gateway at the
same speed: an hour of the day takes 3600/speed real seconds, and the request rate is
per real second. Modes (all 1..8 replicas unless said):

- hpa:         the reference procedure's HPA, 10 QPS per replica, exactly as Kubernetes';
- burst:       the same with burst mode (Knative's panic window);
- concurrency: 1 request in flight per replica (Little's law at the gateway);
- predictive:  the HPA plus a forecast from the service's own history, scaled ahead by the measured
               cold start; its history is the trace's previous day, folded in by the control plane's
               own update rule before the run;
- zero:        the HPA with --min 0 (to zero after 5 minutes of the day without a request).

Reported per mode: replica-seconds (of the day, virtual) by billing, requests answered within 200 ms,
requests lost (any answer but 200, or none), replicas started (cold starts) and scale-from-zero wakes.

The virtual clock compresses every duration the control plane counts (the HPA's 15 s sync, the 5 min
stabilization, a replica's start timeout of 600 s), which is why the replay speed stays modest: at 60x a
replica still has 10 real seconds to become ready. `--quick` replays 07:00-11:00 (the morning ramp and a
burst) at 120x, about two minutes per mode.

`--side-by-side` runs the modes at the same time (one process each, each with its own control plane, gateway
and replicas) instead of one after another: a 60x day then takes about 25 minutes instead of two hours, and
every mode meets the same load on a shared machine (the load average is sampled each minute and kept).

    .venv/bin/python benchmarks/daytrace/run.py [--quick] [--speed 60] [--hours 24] [--modes hpa,zero]
        [--side-by-side] [-o benchmarks/daytrace/result.json] [--plot benchmarks/daytrace/daytrace.png]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tests.conftest import load_example  # noqa: E402  (the sample models' builders)
from tidal.autoscaling import forecast  # noqa: E402
from tidal.control.records import AutoscalerMemory  # noqa: E402
from tidal.control.store import Store  # noqa: E402
from tidal.http.client import HttpClient  # noqa: E402
from shape import arrivals, rate  # noqa: E402

MODEL = "half_plus_two"
BODY = orjson.dumps({"instances": [1.0, 2.0, 5.0]})
MODES = {
    "hpa": ["--target-qps", "10"],
    "burst": ["--target-qps", "10", "--burst"],
    "concurrency": ["--target-concurrency", "1"],
    "predictive": ["--target-qps", "10", "--predictive"],
    "zero": ["--min", "0", "--target-qps", "10", "--idle", "300", "--queue-wait", "60"],
}


def tidal(home: Path, *argv: str, timeout: float = 90) -> str:
    env = dict(os.environ, TIDAL_HOME=str(home))
    env.pop("TIDAL_API", None)
    env.pop("TIDAL_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "tidal", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"tidal {' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def wait(what: str, cond, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting until {what}")


def virtual_now(store: Store) -> float:
    """The control plane's clock now (virtual = anchor_virtual + (real - anchor_real) * speed)."""
    real, virtual = (float(x) for x in store.get_meta("clock_anchors").split(","))
    factor = float(store.get_meta("clock_factor"))
    return virtual + (time.time() - real) / factor


def seed_history(home: Path, start_hour: float, speed: float) -> None:
    """The trace's previous day as the control plane would have learned it (a sample every 15 s of the day),
    aligned so that the control plane's clock reads `start_hour` of the trace when the replay starts."""
    store = Store(home / "state.db")
    day0 = virtual_now(store) - start_hour * 3600.0 - 86400.0  # 00:00 of the trace's previous day
    h = forecast.History()
    for k in range(int(2 * 86400 / 15)):
        t = day0 + k * 15
        if t > virtual_now(store):
            break
        h = forecast.observe(h, t, rate((k * 15 / 3600.0) % 24))
    h = forecast.observe_cold_start(h, 1.5 * speed)  # about 1.5 real seconds, in the day's seconds
    for _ in range(20):
        memory = store.get_autoscaler_state("hpt") or AutoscalerMemory()
        store.set_autoscaler_state("hpt", memory.model_copy(update={"forecast": h}))
        # The control plane reads and writes the record at every pass: ours is kept once a pass has read it.
        time.sleep(2.0)
        kept = store.get_autoscaler_state("hpt")
        if kept is not None and kept.forecast is not None and \
                sum(x is not None for x in kept.forecast.daily) >= len(kept.forecast.daily) - 2:
            return
    raise RuntimeError("could not seed the forecast history")


async def replay(url_port: int, path: str, sends: list[float], end: float) -> list[tuple[float, float, int]]:
    """Open loop: (send time, latency, status) per request; status 0 when no answer came. Lasts until `end`
    (real seconds from the start) even when the trace's last request came earlier (an idle evening)."""
    client = HttpClient()
    loop = asyncio.get_running_loop()
    out: list[tuple[float, float, int]] = []
    start = loop.time()

    async def one(at: float) -> None:
        t0 = loop.time()
        try:
            resp = await client.request("POST", "127.0.0.1", url_port, path, BODY, timeout=90.0)
            status = resp.status
        except Exception:  # noqa: BLE001 - counted as lost
            status = 0
        out.append((at, loop.time() - t0, status))

    tasks = []
    for at in sends:
        delay = start + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(at)))
    await asyncio.gather(*tasks)
    await asyncio.sleep(max(0.0, start + end - loop.time()))
    client.close()
    return out


def replicas_over_time(db: Path) -> tuple[dict[str, float], list[tuple[float, float, str]]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    billing = {r["name"]: r["billing"] for r in con.execute("SELECT name, billing FROM nodes")}
    rows = [(r["created_at"], r["stopped_at"], billing.get(r["node"], "none"))
            for r in con.execute("SELECT created_at, stopped_at, node FROM replicas WHERE node IS NOT NULL")]
    con.close()
    return billing, rows


def run_mode(mode: str, base: Path, start_hour: float, hours: float, speed: float) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"daytrace-{mode}-"))
    bucket = home.parent / f"{home.name}-bucket"
    bucket.mkdir()
    (bucket / MODEL).symlink_to(base)
    try:
        tidal(home, "up", "--port", "0", "--gateway-port", "0", "--tick", "0.5", "--time-factor", f"{1 / speed:.8f}")
        tidal(home, "nodepool", "create", "pool", "--label", "tier=cpu", "--spot", "--instance-types",
              "ecs.c6.large", "--on-demand-base", "1", "--on-demand-percentage", "30", "--max", "8")
        tidal(home, "volume", "create", "models", "--url", f"file://{bucket}")
        tidal(home, "serve", "tensorflow", "--name=hpt", f"--model-name={MODEL}", "--selector=tier=cpu",
              "--data=models:/models", f"--model-path=/models/{MODEL}", "--replicas", "1")
        wait("a replica is ready", lambda: json.loads(tidal(home, "serve", "get", "hpt", "-o", "json"))["available"]
             >= 1, 120)
        tidal(home, "autoscale", "hpt", "--max", "8", *MODES[mode])
        gateway = json.loads((home / "address.json").read_text())["gateway"]
        port = int(gateway.rsplit(":", 1)[1])
        if mode == "predictive":
            seed_history(home, start_hour, speed)
        store = Store(home / "state.db")
        wall0, v_start = time.time(), virtual_now(store)
        results = asyncio.run(replay(port, f"/services/hpt/v1/models/{MODEL}:predict", arrivals(start_hour, hours, speed),
                                    hours * 3600.0 / speed))
        wall, v_end = time.time() - wall0, virtual_now(store)
        events = json.loads(tidal(home, "events", "-o", "json"))
        _, rows = replicas_over_time(home / "state.db")
    finally:
        try:
            tidal(home, "down", timeout=120)
        except Exception as exc:  # noqa: BLE001 - report, the numbers are in
            print(f"{mode}: tidal down: {exc}", file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(bucket, ignore_errors=True)
    # Replica-seconds of the replay only (the control plane's clock, in the day's seconds), by node billing.
    by_billing: dict[str, float] = {}
    for created, stopped, bill in rows:
        span = min(stopped if stopped is not None else v_end, v_end) - max(created, v_start)
        if span > 0:
            by_billing[bill] = by_billing.get(bill, 0.0) + span
    # Replicas held (pending to draining), every 5 minutes of the day.
    held = [(start_hour + (t - v_start) / 3600.0,
             sum(1 for created, stopped, _ in rows if created <= t and (stopped is None or stopped > t)))
            for t in [v_start + k * 300.0 for k in range(int((v_end - v_start) / 300.0) + 1)]]
    ok = sum(1 for _, _, s in results if s == 200)
    fast = sum(1 for _, lat, s in results if s == 200 and lat <= 0.2)
    kinds = [e["kind"] for e in events if v_start <= e["time"] <= v_end]  # what happened during the replay
    return {"mode": mode, "requests": len(results), "answered": ok, "lost": len(results) - ok,
            "within_200ms": fast, "within_200ms_pct": round(100.0 * fast / max(1, len(results)), 2),
            "replica_seconds": {k: round(v) for k, v in sorted(by_billing.items())},
            "replica_seconds_total": round(sum(by_billing.values())), "cold_starts": kinds.count("ReplicaReady"),
            "wakes_from_zero": kinds.count("ScaleFromZero"), "wall_s": round(wall, 1),
            "replayed_day_seconds": round(v_end - v_start),
            "replicas_over_time": [(round(h, 3), n) for h, n in held],
            "latency_by_hour": _by_hour(results, start_hour, speed)}


def _by_hour(results, start_hour: float, speed: float) -> list[dict]:
    hours: dict[int, list[tuple[float, int]]] = {}
    for at, lat, status in results:
        hours.setdefault(int(start_hour + at * speed / 3600.0), []).append((lat, status))
    out = []
    for h in sorted(hours):
        lats = sorted(lat for lat, s in hours[h] if s == 200)
        p90 = lats[int(0.9 * (len(lats) - 1))] if lats else None
        out.append({"hour": h, "requests": len(hours[h]), "p90_ms": round(p90 * 1000, 1) if p90 else None})
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, c, b) = plt.subplots(3, 1, figsize=(9, 10), sharex=False)
    hs = [result["start_hour"] + i / 20 for i in range(int(result["hours"] * 20))]
    a.plot(hs, [rate(h) for h in hs], color="black")
    a.set_ylabel("requests/s")
    a.set_title(f"the day's trace, replayed at {result['speed']:g}x through the gateway and real replicas")
    for m in result["modes"]:
        pts = m["replicas_over_time"]
        c.step([h for h, _ in pts], [n for _, n in pts], where="post", label=m["mode"])
    c.set_ylabel("replicas held")
    c.set_xlabel("hour of the day")
    c.legend(ncol=5, fontsize=8)
    modes = [m["mode"] for m in result["modes"]]
    x = range(len(modes))
    bills = sorted({k for m in result["modes"] for k in m["replica_seconds"]})
    bottom = [0.0] * len(modes)
    for bill in bills:
        vals = [m["replica_seconds"].get(bill, 0) / 3600 for m in result["modes"]]
        b.bar(x, vals, bottom=bottom, label=bill)
        bottom = [p + v for p, v in zip(bottom, vals)]
    for i, m in enumerate(result["modes"]):
        b.text(i, bottom[i], f"{m['within_200ms_pct']:.2f}% <200ms\nlost {m['lost']}", ha="center", va="bottom",
               fontsize=8)
    b.set_xticks(list(x), modes)
    b.set_ylabel("replica-hours")
    b.set_ylim(0, max(bottom + [1]) * 1.3)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def table(result: dict) -> str:
    """The RESULTS.md table, from the data."""
    rows = ["| mode | replica-hours (on-demand + spot) | answered within 200 ms | lost | cold starts | wakes from zero |",
            "|---|---|---|---|---|---|"]
    for m in result["modes"]:
        rs = m["replica_seconds"]
        rows.append(f"| {m['mode']} | {m['replica_seconds_total'] / 3600:.1f} ({rs.get('on-demand', 0) / 3600:.1f} + "
                    f"{rs.get('spot', 0) / 3600:.1f}) | {m['within_200ms_pct']:.2f}% of {m['requests']} | {m['lost']} | "
                    f"{m['cold_starts']} | {m['wakes_from_zero']} |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="07:00-11:00 at 120x (two minutes of replay per mode)")
    p.add_argument("--speed", type=float, default=60.0)
    p.add_argument("--start-hour", type=float, default=0.0)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--side-by-side", action="store_true",
                   help="run the modes at the same time, one process each, rather than one after another")
    p.add_argument("-o", "--output", default=str(Path(__file__).with_name("result.json")))
    p.add_argument("--plot", default=str(Path(__file__).with_name("daytrace.png")))
    p.add_argument("--table", metavar="RESULT_JSON", help="print the Markdown table of a result file and exit")
    args = p.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    speed, start_hour, hours = (120.0, 7.0, 4.0) if args.quick else (args.speed, args.start_hour, args.hours)
    modes = args.modes.split(",")
    loads: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample_load() -> None:
        t0 = time.monotonic()
        while not stop.wait(0 if not loads else 60.0):
            loads.append((round(time.monotonic() - t0), os.getloadavg()[0]))

    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / MODEL
        load_example(MODEL).build(base)
        out = {"speed": speed, "start_hour": start_hour, "hours": hours, "cpus": os.cpu_count(),
               "side_by_side": args.side_by_side, "modes": []}
        if args.side_by_side:
            with ProcessPoolExecutor(max_workers=len(modes)) as pool:
                runs = [pool.submit(run_mode, mode, base, start_hour, hours, speed) for mode in modes]
                out["modes"] = [r.result() for r in runs]
        else:
            out["modes"] = [run_mode(mode, base, start_hour, hours, speed) for mode in modes]
    stop.set()
    out["load_average_1m"] = loads
    for r in out["modes"]:
        print(json.dumps({k: v for k, v in r.items() if k not in ("latency_by_hour", "replicas_over_time")}), flush=True)
    Path(args.output).write_text(json.dumps(out, indent=1))
    plot(out, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
