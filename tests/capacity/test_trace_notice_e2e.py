"""A replayed spot trace on the local backend, with real processes on 127.0.0.1: when the trace takes a zone's
capacity away, the pool's node there gets the provider's notice, `tidal-notice` starts the replacement at once
and it is ready before the node goes: the replica count never drops under the target and no request is lost."""

from __future__ import annotations

import json
import time

import pytest

from tests.capacity.test_notice_e2e import MODEL, TIME_FACTOR, Load
from tests.control.test_e2e import home_with_bucket, tidal, tidal_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

GAP = 20.0          # virtual seconds per trace point: 1 real second at TIME_FACTOR 0.05
OPENS_B = 10        # us-east-1b holds nothing for the first 10 points, so the nodes start in us-east-1a
RECLAIMS_A = 22     # then us-east-1a's capacity goes to 0 at point 22 (22 real seconds after the pool is made)


def _series(before: int, after: int, at: int, length: int = 600) -> list[int]:
    return [before] * at + [after] * (length - at)


@pytest.fixture
def home(tmp_path, half_plus_two_base):
    trace = tmp_path / "trace"
    trace.mkdir()
    # The pool's zones take the trace's files in sorted order: a.json is us-east-1a, b.json us-east-1b.
    for name, data in (("a", _series(4, 0, RECLAIMS_A)), ("b", _series(0, 4, OPENS_B))):
        (trace / f"{name}.json").write_text(json.dumps({"metadata": {"gap_seconds": GAP}, "data": data}))
    with home_with_bucket(tmp_path, half_plus_two_base, MODEL) as (home, bucket):
        yield home, bucket, trace


def test_a_trace_reclaim_is_replaced_before_the_node_goes(home):
    home, bucket, trace = home
    tidal(home, "up", "--port", "0", "--gateway-port", "0", "--time-factor", str(TIME_FACTOR), "--tick", "1")
    made = time.monotonic()
    tidal(home, "nodepool", "create", "traced", "--label", "tier=cpu", "--spot", "--policy", "tidal-notice",
          "--region", "us-east-1", "--instance-types", "m5.large", "--zones", "us-east-1a,us-east-1b",
          "--max", "6", "--scale-in-after", "60", "--spot-trace", str(trace))
    tidal(home, "volume", "create", "models", "--url", f"file://{bucket}")
    tidal(home, "serve", "tensorflow", "--name=hpt", f"--model-name={MODEL}", "--selector=tier=cpu",
          "--data=models:/models", f"--model-path=/models/{MODEL}", "--replicas", "2")
    wait_for("two replicas are available", lambda: tidal_json(home, "serve", "get", "hpt")["available"] == 2, 25)
    nodes = [n for n in tidal_json(home, "nodepool", "get", "traced")["nodes"] if n["state"] != "terminated"]
    busy = {r["node"] for r in tidal_json(home, "serve", "get", "hpt")["replicas"] if r["state"] == "ready"}
    in_a = {n["name"] for n in nodes if n["zone"] == "us-east-1a" and n["billing"] == "spot"}
    assert busy and busy <= in_a, (busy, nodes)
    assert time.monotonic() - made < RECLAIMS_A * GAP * TIME_FACTOR - 3, "the replicas were ready too late"

    gateway = json.loads((home / "address.json").read_text())["gateway"]
    load = Load(f"{gateway}/services/hpt/v1/models/{MODEL}:predict")
    load.start()
    noticed: set[str] = set()
    replaced_in_time = False
    lowest = 2
    try:
        deadline = made + (RECLAIMS_A * GAP + 400) * TIME_FACTOR + 20
        while time.monotonic() < deadline:
            svc = tidal_json(home, "serve", "get", "hpt")
            lowest = min(lowest, svc["available"])
            shown = {n["name"]: n for n in tidal_json(home, "nodepool", "get", "traced")["nodes"]}
            noticed |= {name for name in busy if shown.get(name, {}).get("state") == "notified"}
            live = {name for name in busy if shown.get(name, {}).get("state") in ("ready", "notified")}
            ready_elsewhere = [r for r in svc["replicas"] if r["state"] == "ready" and r["node"] not in busy]
            replaced_in_time |= bool(noticed) and len(ready_elsewhere) >= 2 and bool(live)
            if noticed and not live:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the trace's reclaim of {sorted(busy)} did not happen (noticed: {sorted(noticed)})")
        time.sleep(1.0)
        lowest = min(lowest, tidal_json(home, "serve", "get", "hpt")["available"])
    finally:
        load.stop.set()
        load.join(timeout=40)
    assert noticed == busy, f"only {sorted(noticed)} of {sorted(busy)} got a notice"
    assert replaced_in_time, "no replacement was ready before the reclaimed nodes went"
    assert lowest >= 2, f"the service fell to {lowest} available replicas"
    assert set(load.status) == {200} and load.status[200] > 20, load.status
    events = tidal_json(home, "events", "--limit", "300")
    assert any(e["kind"] == "PreemptionNotice" and "spot trace drops us-east-1a to 0" in e["message"]
               for e in events), [e["message"] for e in events if e["kind"] == "PreemptionNotice"]
