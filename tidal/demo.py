"""`tidal demo`: the reference procedure replayed on this machine, step by step, with a summary of what it cost."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tidal.errors import UserError
from tidal.samples import SENTIMENT_VERSION as MODEL_VERSION

# The full run and the short one (--quick); an option given on the command line wins over either.
FULL = {"rate": 70.0, "load_seconds": 40.0, "scale_in_timeout": 90.0}
QUICK = {"rate": 40.0, "load_seconds": 16.0, "scale_in_timeout": 25.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example:\n  tidal demo\n"
                     "  tidal demo --quick   # the same steps with a shorter load (about a minute)\n"
                     "  tidal demo --rate 60 --load-seconds 30 --time-factor 0.05\n"
                     "  tidal demo --keep   # leave the control plane running afterwards")
    parser.add_argument("--home", help="where the demo keeps its state (default: $TIDAL_HOME/demo, wiped first)")
    parser.add_argument("--quick", action="store_true",
                        help=f"every step with a shorter load: {QUICK['rate']:g} requests/s for "
                             f"{QUICK['load_seconds']:g} s, at most {QUICK['scale_in_timeout']:g} s for the scale-in")
    parser.add_argument("--rate", type=float, help=f"requests per second at the peak (default {FULL['rate']:g})")
    parser.add_argument("--load-seconds", type=float,
                        help=f"how long the load lasts (default {FULL['load_seconds']:g})")
    parser.add_argument("--time-factor", type=float, default=0.05,
                        help="real seconds per control-plane second: 0.05 makes the 120 s notice 6 s (default)")
    parser.add_argument("--scale-in-timeout", type=float,
                        help=f"real seconds to wait for the scale-in after the load "
                             f"(default {FULL['scale_in_timeout']:g})")
    parser.add_argument("--runtime", choices=("tensorflow", "onnx"),
                        help="serve the sample as a TensorFlow SavedModel or as ONNX "
                             "(default: tensorflow when it is installed)")
    parser.add_argument("--keep", action="store_true", help="leave the demo's control plane running")


def settings(args: argparse.Namespace) -> argparse.Namespace:
    """The options with --quick's or the full run's values where none was given."""
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rate <= 0 or args.load_seconds <= 0 or args.scale_in_timeout < 0 or not 0 < args.time_factor <= 1:
        raise UserError("--rate and --load-seconds must be positive, --scale-in-timeout not negative, "
                        "--time-factor in (0, 1]")
    return args


class _Demo:
    def __init__(self, args) -> None:
        self.args = settings(args)
        base = Path(os.environ.get("TIDAL_HOME") or Path.home() / ".tidal").expanduser()
        self.home = Path(args.home).expanduser() if args.home else base / "demo"
        self.t0 = time.monotonic()

    # -- printing
    def step(self, n: int | str, text: str) -> None:
        print(f"\n== step {n}: {text}", flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def tidal(self, *argv: str) -> None:
        """Run a tidal command as a user would type it, showing the command and its output."""
        from tidal.cli import main
        print(f"$ tidal {' '.join(argv)}", flush=True)
        rc = main(list(argv))
        sys.stdout.flush()
        if rc != 0:
            raise UserError(f"`tidal {' '.join(argv)}` failed (exit {rc})")

    def api(self):
        from tidal.control.client import ApiClient
        return ApiClient.for_home()

    # -- the procedure
    def run(self) -> int:
        args = self.args
        if self.home.exists():
            from tidal.control.daemon import stop_background
            from tidal.control.home import Home
            stop_background(Home(self.home.resolve()))
            shutil.rmtree(self.home)
        self.home.mkdir(parents=True)
        os.environ["TIDAL_HOME"] = str(self.home.resolve())
        print(f"Tidal demo: the reference procedure (elastic inference on ECS spot instances) on this machine "
              f"(state in {self.home}).")
        print(f"Time runs {1 / args.time_factor:g}x faster in the control plane: a 120 s spot notice lasts "
              f"{120 * args.time_factor:g} s, the HPA's 5 min scale-down window {300 * args.time_factor:g} s.")
        self.tidal("up", "--port", "0", "--gateway-port", "0", "--time-factor", str(args.time_factor),
                   "--tick", "5", "--qps-window", "60")
        from tidal.control.home import Home
        print(f"   watch it live in the console: {Home.from_env().read_address()['api']}/console/")
        try:
            return self._procedure()
        finally:
            if not args.keep:
                print()
                self.tidal("down")

    def _procedure(self) -> int:
        args = self.args
        self.step(1, "an elastic node pool: preemptible, cost-optimized, 30% pay-as-you-go, supplemental pay-as-you-go")
        self.tidal("nodepool", "create", "gpu-pool", "--label", "inference=tensorflow", "--spot",
                   "--on-demand-percentage", "30", "--compensate-with-on-demand", "--spot-remedy",
                   "--multi-zone", "cost-optimized", "--spot-pools", "2",
                   "--instance-types", "ecs.gn6i-c4g1.xlarge,ecs.gn6i-c8g1.2xlarge",
                   "--max", "10", "--scale-in-after", "60", "--notice", "120")

        self.step(2, "upload the trained model to the object store (a local bucket directory here)")
        bucket = self.home / "oss" / "model-bucket"
        from tidal.samples import install_sentiment, sentiment_runtime
        runtime = args.runtime or sentiment_runtime()
        out = install_sentiment(bucket / "tensorflow", runtime, MODEL_VERSION)
        kind = "TensorFlow SavedModel" if runtime == "tensorflow" else "ONNX model"
        self.say(f"copied the sample sentiment classifier ({kind}) to {out.relative_to(self.home)}")

        self.step(3, "the PV and PVC: a volume named model-pvc over the bucket")
        self.tidal("volume", "create", "model-pvc", "--url", f"file://{bucket.resolve()}")
        self.say("(`tidal apply -f pvc.yaml` with the reference procedure's PV and PVC does the same for an OSS "
                 "bucket: oss://<bucket>, keys to the 0600 secret store)")

        self.step(4, "arena serve tensorflow, the reference procedure's flags")
        self.tidal("serve", "tensorflow", "--name=bert-tfserving", "--model-name=chnsenticorp",
                   "--selector=inference=tensorflow", "--gpus=1", "--image=tensorflow/serving:1.15.0-gpu",
                   "--data=model-pvc:/models", "--model-path=/models/tensorflow",
                   f"--version-policy=specific:{MODEL_VERSION}")
        svc = self._wait(lambda s: s["available"] >= 1, "the first replica is ready", 120)

        self.step(5, "the reference procedure's HPA: sls_ingress_qps, 10 per replica, 1 to 10 replicas")
        from tidal.samples import hpa_yaml
        with hpa_yaml() as hpa:
            self.tidal("apply", "-f", str(hpa))

        self.step("6-7", "the endpoint (the Ingress on port 8501 in the reference procedure)")
        endpoint = svc["endpoint"]
        self.say(f"endpoint: {endpoint}")
        reply = _predict(endpoint, "chnsenticorp", ["the service was wonderful", "a terrible, boring film"])
        self.say(f"POST {endpoint}/v1/models/chnsenticorp:predict -> {reply}")

        self.step(8, f"stress test: {args.rate:g} requests/s for {args.load_seconds:g} s, one spot node preempted midway")
        bench = subprocess.Popen(
            [sys.executable, "-m", "tidal", "bench", endpoint, "-m", "chnsenticorp", "--sample", "sentiment",
             "--profile", f"constant:{args.rate:g}", "-d", f"{args.load_seconds:g}s", "-o", "json", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            load, peak, preempted, start = self._load(bench)
        finally:
            if bench.poll() is None:  # interrupted: the load generator goes too
                bench.kill()
                bench.wait()

        self.step(9, "after the load: the HPA scales in (after its stabilization window), empty nodes go")
        deadline = time.monotonic() + args.scale_in_timeout
        while time.monotonic() < deadline:
            top = self.api().get("/top")
            line, mix = _status(top)
            self.say(f"t={time.monotonic() - start:4.0f}s  {line}")
            if mix["replicas"] <= 1 and mix["nodes"] <= 1:
                break
            time.sleep(3.0)
        self.tidal("nodepool", "get", "gpu-pool")

        self._summary(load, peak, preempted)
        return 0

    def _load(self, bench: subprocess.Popen):
        args = self.args
        peak = {"replicas": 0, "nodes": 0, "on_demand": 0, "spot": 0}
        preempted: list[str] = []
        start = time.monotonic()
        while bench.poll() is None:
            time.sleep(2.0)
            top = self.api().get("/top")
            line, mix = _status(top)
            self.say(f"t={time.monotonic() - start:4.0f}s  {line}")
            if mix["replicas"] > peak["replicas"]:
                peak = mix
            if not preempted and mix["spot"] >= 2 and time.monotonic() - start > args.load_seconds * 0.45:
                preempted = self.api().post("/nodepools/gpu-pool/preempt", {"count": 1})["preempted"]
                self.say(f"!! spot reclaim notice for {', '.join(preempted)} (120 s of notice, "
                         f"{120 * args.time_factor:g} s here): its replica is replaced now, drained once the new one serves")
        out, err = bench.communicate()
        try:
            load = json.loads(out)
        except ValueError:
            raise UserError(f"the load generator failed: {err.strip().splitlines()[-1] if err.strip() else out[:200]}")
        return load, peak, preempted, start

    def _wait(self, cond, what: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            svc = self.api().get("/services/bert-tfserving")
            if cond(svc):
                self.say(f"{what} ({time.monotonic() - self.t0:.0f}s into the demo)")
                return svc
            time.sleep(0.5)
        raise UserError(f"timed out waiting until {what}; see `tidal events` and `tidal logs bert-tfserving` "
                        f"with TIDAL_HOME={self.home}")

    def _summary(self, load: dict, peak: dict, preempted: list[str]) -> None:
        from tidal.capacity.policies.ess import EssParams, split
        api = self.api()
        events = api.get("/events", limit=10000)
        kinds: dict[str, int] = {}
        for e in events:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        pool = api.get("/nodepools/gpu-pool")
        cost = pool["cost"]
        want = split(peak["nodes"], EssParams(on_demand_percentage=30))
        ok = sum(v for k, v in load["status"].items() if k.startswith("2"))
        from tidal.bench.report import summary_table
        from tidal.bench.runner import Result
        print("\n== the stress test (tidal bench)")
        print(summary_table(Result.from_json(load)))
        print("\n== summary")
        print(f"   load: {load['requests']} requests sent, {ok} answered 200, {load['errors']} errors; "
              f"p50 {load['latency_ms'].get('p50', 0):.1f} ms, p99 {load['latency_ms'].get('p99', 0):.1f} ms")
        print(f"   scale-out: 1 -> {peak['replicas']} replicas on {peak['nodes']} nodes "
              f"({peak['on_demand']} on-demand, {peak['spot']} spot; the pool's 30% asks for "
              f"{want[0]} on-demand, {want[1]} spot)")
        print(f"   scaling: {kinds.get('SuccessfulRescale', 0)} rescales, {kinds.get('NodeLaunched', 0)} nodes launched, "
              f"{kinds.get('NodeTerminated', 0)} terminated")
        if preempted:
            print(f"   preemption: {', '.join(preempted)} reclaimed under load; "
                  f"{'no request lost' if load['errors'] == 0 else str(load['errors']) + ' requests failed'}")
        print(f"   cost: ${cost['total']:.4f} (spot ${cost['spot']:.4f} over {cost['spot_node_seconds'] / 3600:.2f} "
              f"node-hours, on-demand ${cost['on_demand']:.4f} over {cost['on_demand_node_seconds'] / 3600:.2f}); "
              f"all on-demand: ${cost['all_on_demand']:.4f}; saved {cost['savings_ratio'] * 100:.0f}%")
        from tidal.control.home import Home
        print(f"   console: {Home.from_env().read_address()['api']}/console/"
              + ("" if self.args.keep else " (up until the demo ends; `tidal demo --keep` leaves it running)"))
        print(f"   (control-plane time: {1 / self.args.time_factor:g}x real time; the demo took "
              f"{time.monotonic() - self.t0:.0f} s)")


def _status(top: dict) -> tuple[str, dict]:
    svc = next((s for s in top["services"] if s["name"] == "bert-tfserving"), None)
    nodes = [n for n in top["nodes"] if n["state"] != "terminated"]
    od = sum(1 for n in nodes if n["billing"] == "on-demand" and n["state"] == "ready")
    spot = sum(1 for n in nodes if n["billing"] == "spot" and n["state"] == "ready")
    noticed = sum(1 for n in nodes if n["state"] == "notified")
    qps = "-"
    if svc and svc["traffic"]:
        q = svc["traffic"]["qps"]
        key = min(q, key=lambda k: abs(float(k) - 10.0)) if q else None
        qps = f"{q[key]:5.1f}" if key is not None else "-"
    desired = svc["desired"] if svc else 0
    ready = svc["available"] if svc else 0
    line = (f"QPS {qps}  replicas {ready}/{desired}  nodes: {od} on-demand, {spot} spot"
            + (f", {noticed} under notice" if noticed else "") + f"  cost ${top['cost']['total']:.4f}")
    return line, {"replicas": ready, "nodes": od + spot, "on_demand": od, "spot": spot}


def _predict(endpoint: str, model: str, texts: list[str]) -> str:
    import urllib.request
    req = urllib.request.Request(f"{endpoint}/v1/models/{model}:predict",
                                 data=json.dumps({"instances": texts}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        preds = json.loads(resp.read())["predictions"]
    return ", ".join(f"{t!r}: {p.get('label', p)}" for t, p in zip(texts, preds))


def run(args) -> int:
    return _Demo(args).run()
