"""`tidal bench`: the stress test, from the command line to a summary table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Optional
from urllib.parse import quote, unquote

import orjson

from tidal.bench.config import BenchConfig
from tidal.bench.payload import (encode, inputs_from_metadata, metadata_path, parse_target, read_body, sample_body,
                                 tensors_body)
from tidal.bench.profile import PROFILE_HELP, Constant, natural_duration, parse_duration, parse_profile
from tidal.bench.report import progress_line, summary_table
from tidal.bench.runner import Bench, ReplicasHook, Result
from tidal.bench.samples import SAMPLES, sample_inputs
from tidal.errors import UserError
from tidal.http.client import ClientError, HttpClient

EXAMPLES = """examples:
  tidal bench http://127.0.0.1:8501 -m half_plus_two --rate 200 -d 30s
  tidal bench http://127.0.0.1:8501/v1/models/half_plus_two:predict --body req.json -c 16 -n 10000
  tidal bench http://127.0.0.1:8501 -m half_plus_two --protocol v2 --profile ramp:10..300/1m -o json
  tidal bench http://127.0.0.1:8501 -m sentiment --sample sentiment --batch 8 --rate 50
  tidal bench http://127.0.0.1:8501 -m half_plus_two --profile trace:rates.csv --replicas-url URL

""" + PROFILE_HELP


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EXAMPLES
    p.add_argument("url", help="a :predict or /infer URL, or a service's base endpoint with --model")
    p.add_argument("-m", "--model", help="model name (builds the path from the base endpoint)")
    p.add_argument("--protocol", choices=["tfserving", "v2"], help="API for --model (default: tfserving)")
    p.add_argument("--model-version", help="a specific model version")
    p.add_argument("--signature", default="serving_default", help="signature for a sample body (TF Serving)")
    p.add_argument("--batch", type=int, default=1, help="rows per request in a sample body (default 1)")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", metavar="FILE", help="request body file ('-' for stdin); default: a sample built "
                      "from the model's metadata")
    body.add_argument("--sample", choices=sorted(SAMPLES), help="the inputs of one of Tidal's sample models")
    p.add_argument("-X", "--method", help="HTTP method (default: POST with a body, else GET)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra header")
    load = p.add_mutually_exclusive_group()
    load.add_argument("-r", "--rate", type=float, help="open loop: a constant rate in requests per second")
    load.add_argument("--profile", help="open loop: a load profile (see below)")
    p.add_argument("-c", "--concurrency", type=int, help="closed loop: concurrent requests (default 10); "
                   "open loop: the most connections (default 256)")
    p.add_argument("-d", "--duration", help="how long, e.g. 30s or 2m (default: the profile's length, else 10s)")
    p.add_argument("-n", "--requests", type=int, help="stop after this many requests")
    p.add_argument("--timeout", default="30s", help="per-request timeout (default 30s)")
    p.add_argument("--service", help="show this Tidal service's replicas (from the control plane in TIDAL_HOME); "
                   "default: the service a gateway URL (/services/NAME/...) names")
    p.add_argument("--replicas-url", help="a URL answering a service's JSON (desired/available/replicas) instead")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table", help="summary format")
    p.add_argument("--no-progress", action="store_true", help="no live display (it shows only on a terminal)")


def build_config(args: argparse.Namespace) -> BenchConfig:
    profile = None
    if args.rate is not None:
        if not args.rate > 0:
            raise UserError("--rate must be positive")
        profile = Constant(rate=args.rate)
    elif args.profile:
        profile = parse_profile(args.profile)
    duration = parse_duration(args.duration) if args.duration else None
    if args.requests is not None and args.requests <= 0:
        raise UserError("--requests must be positive")
    if args.concurrency is not None and args.concurrency <= 0:
        raise UserError("--concurrency must be positive")
    if duration is None and args.requests is None:
        duration = (natural_duration(profile) if profile is not None else None) or 10.0
    extra = {}
    if args.concurrency is not None:
        extra["connections" if profile is not None else "concurrency"] = args.concurrency
    return BenchConfig(profile=profile, duration=duration, requests=args.requests,
                       timeout=parse_duration(args.timeout), **extra)


def _headers(raw: list[str]) -> list[tuple[str, str]]:
    out = []
    for h in raw:
        name, colon, value = h.partition(":")
        if not colon or not name.strip():
            raise UserError(f"bad header {h!r}: expected 'Name: value'")
        out.append((name.strip(), value.strip()))
    return out


async def _fetch_json(client: HttpClient, host: str, port: int, path: str) -> object:
    try:
        resp = await client.request("GET", host, port, path, timeout=10.0)
    except ClientError as exc:
        raise UserError(f"cannot reach http://{host}:{port}{path}: {exc}") from None
    if resp.status != 200:
        raise UserError(f"GET http://{host}:{port}{path} answered {resp.status}: {resp.body[:200].decode(errors='replace')}")
    try:
        return resp.json()
    except orjson.JSONDecodeError:
        raise UserError(f"GET http://{host}:{port}{path} did not answer JSON") from None


def replicas_from_url(url: str) -> ReplicasHook:
    """Poll a service's JSON (`tidal serve get -o json` shape) and say 'ready/desired (spot, on-demand)'."""
    target = parse_target(url, None, None)
    client = HttpClient(max_idle_per_host=1)

    async def poll() -> Optional[str]:
        doc = await _fetch_json(client, target.host, target.port, target.path)
        return describe_replicas(doc)
    return poll


def replicas_from_control_plane(service: str) -> Optional[ReplicasHook]:
    """Poll the control plane's API for `service`; None when no control plane is known (nothing to show)."""
    from tidal.control.client import ApiClient
    try:
        api = ApiClient.for_home()
    except Exception:  # not a Tidal service, or no control plane running: the display just has no replicas
        return None
    client = HttpClient(max_idle_per_host=1)
    headers = [("Authorization", f"Bearer {api.token}")] if api.token else None
    path = f"/api/v1/services/{quote(service, safe='')}"

    async def poll() -> Optional[str]:
        resp = await client.request("GET", api.host, api.port, path, headers=headers, timeout=2.0)
        return describe_replicas(resp.json()) if resp.status == 200 else None
    return poll


def service_of(path: str) -> Optional[str]:
    """The service a gateway path names (`/services/NAME/v1/...`)."""
    parts = path.split("/")
    return unquote(parts[2]) if len(parts) > 3 and parts[1] == "services" and parts[2] else None


def describe_replicas(doc: object) -> Optional[str]:
    if not isinstance(doc, dict):
        return None
    desired = doc.get("desired")
    ready = doc.get("available", doc.get("ready"))
    replicas = doc.get("replicas") or []
    billing: dict[str, int] = {}
    for r in replicas if isinstance(replicas, list) else []:
        if isinstance(r, dict) and r.get("billing"):
            billing[r["billing"]] = billing.get(r["billing"], 0) + 1
    text = f"{ready if ready is not None else '?'}/{desired if desired is not None else '?'}"
    if billing:
        text += " (" + ", ".join(f"{n} {b}" for b, n in sorted(billing.items())) + ")"
    return text


async def prepare(args: argparse.Namespace) -> tuple[str, int, bytes, str, Optional[str]]:
    """Resolve the target and encode the request once: (host, port, request bytes, target URL, service)."""
    if args.batch <= 0:
        raise UserError("--batch must be positive")
    target = parse_target(args.url, args.model, args.protocol, args.model_version)
    headers = _headers(args.header)
    if args.body:
        body = read_body(args.body)
    elif args.sample:
        if target.protocol is None:
            raise UserError("--sample needs a model: pass --model NAME or a :predict / /infer URL")
        body = tensors_body(sample_inputs(args.sample, args.batch), target.protocol, args.signature)
    elif target.protocol is None or (args.method and args.method.upper() in ("GET", "HEAD", "DELETE")):
        body = b""
    else:
        client = HttpClient(max_idle_per_host=1)
        try:
            doc = await _fetch_json(client, target.host, target.port, metadata_path(target))
        finally:
            client.close()
        inputs = inputs_from_metadata(doc, target.protocol, args.signature)
        body = sample_body(inputs, target.protocol, args.batch, args.signature)
    method = (args.method or ("POST" if body else "GET")).upper()
    return (target.host, target.port, encode(target, method, body, headers), f"{method} {target.base}{target.path}",
            args.service or service_of(target.path))


async def _main(args: argparse.Namespace) -> tuple[Result, bool]:
    """Run the bench; (its result, whether Ctrl-C stopped it early)."""
    config = build_config(args)
    host, port, request, shown, service = await prepare(args)
    live = sys.stderr.isatty() and not args.no_progress

    def show(snap) -> None:
        sys.stderr.write("\r\x1b[K" + progress_line(snap))
        sys.stderr.flush()
    if args.replicas_url:
        replicas = replicas_from_url(args.replicas_url)
    else:
        replicas = replicas_from_control_plane(service) if service else None
    bench = Bench(config, host, port, request, on_progress=show if live else None, replicas=replicas)

    def on_sigint() -> None:  # the first Ctrl-C ends the run with its summary so far; a second one aborts
        if bench.stopped:
            raise KeyboardInterrupt
        bench.stop()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        handled = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        handled = False
    try:
        result = await bench.run()
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)
        if live:
            sys.stderr.write("\n")
    result.target = shown
    return result, bench.stopped


def _loop_factory():
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform; asyncio's loop is slower but right
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(args: argparse.Namespace) -> int:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        result, stopped = runner.run(_main(args))
    if args.output == "json":
        sys.stdout.write(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(summary_table(result))
    if stopped:
        print(f"tidal bench: interrupted after {result.duration:.1f} s: the summary covers what completed",
              file=sys.stderr)
        return 130
    ok = sum(v for k, v in result.status.items() if 200 <= k < 300)
    if result.sent and not ok:
        print("tidal bench: error: no request succeeded", file=sys.stderr)
        return 1
    return 0

