"""Scale to zero end to end with real processes on 127.0.0.1: control plane, gateway process, model servers.

A service autoscaled with `--min 0 --idle 3` goes to zero replicas once idle; then 20
concurrent requests wait in the gateway's queue while one replica starts (the gateway
wakes the control plane at once), and all 20 answer 200: none lost. `tidal top -o json`
shows the zero state before and the queue while they wait.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from .test_e2e import home_with_bucket, our_processes, tidal, tidal_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

MODEL = "half_plus_two"
BODY = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()


def _service(home):
    return next(s for s in tidal_json(home, "top")["services"] if s["name"] == "hpt")


def _predict(url: str) -> tuple[int, object, float]:
    t0 = time.monotonic()
    req = urllib.request.Request(url, data=BODY, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=90) as resp:
            return resp.status, json.loads(resp.read())["predictions"], time.monotonic() - t0
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), time.monotonic() - t0


@pytest.fixture
def home(tmp_path, half_plus_two_base):
    with home_with_bucket(tmp_path, half_plus_two_base, MODEL) as found:
        yield found


def test_to_zero_and_back_without_losing_a_request(home, monkeypatch):
    home, bucket = home
    # A replica from the warm pool is ready before `tidal top` can look: a cold start shows the queue.
    monkeypatch.setenv("TIDAL_WARM_POOL", "off")
    tidal(home, "up", "--port", "0", "--gateway-port", "0", "--tick", "1")
    tidal(home, "nodepool", "create", "cpu-pool", "--label", "tier=cpu", "--instance-types", "ecs.c6.large",
          "--max", "2")
    tidal(home, "volume", "create", "models", "--url", f"file://{bucket}")
    tidal(home, "serve", "tensorflow", "--name=hpt", f"--model-name={MODEL}", "--selector=tier=cpu",
          "--data=models:/models", f"--model-path=/models/{MODEL}", "--replicas", "1")
    wait_for("one replica is available", lambda: tidal_json(home, "serve", "get", "hpt")["available"] == 1, 90)
    out = tidal(home, "autoscale", "hpt", "--min", "0", "--max", "2", "--target-qps", "100", "--idle", "3",
                "--queue-size", "50", "--queue-wait", "60").stdout
    assert "to zero after 3s without a request" in out

    # Idle: zero replicas, and `tidal top` says so.
    wait_for("the service is scaled to zero", lambda: (lambda s: s["scaled_to_zero"] and s["available"] == 0
                                                       and s["desired"] == 0)(_service(home)), 60)
    wait_for("its replica process is gone", lambda: not our_processes(home), 30)
    events = {e["kind"] for e in tidal_json(home, "events")}
    assert "ScaledToZero" in events

    gateway = json.loads((home / "address.json").read_text())["gateway"]
    url = f"{gateway}/services/hpt/v1/models/{MODEL}:predict"
    seen_queued = 0
    with ThreadPoolExecutor(20) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(_predict, url) for _ in range(20)]
        # While they wait: `tidal top -o json` shows the queue.
        while not all(f.done() for f in futures):
            traffic = _service(home)["traffic"] or {}
            seen_queued = max(seen_queued, traffic.get("queued") or 0)
            if seen_queued:
                break
        answers = [f.result() for f in futures]
        cold = time.monotonic() - t0
    assert [a[0] for a in answers] == [200] * 20, answers
    assert all(a[1] == [2.5, 3.0, 4.5] for a in answers)
    assert seen_queued > 0, "tidal top never showed the queue while requests waited"
    s = _service(home)
    assert (s["desired"], s["available"], s["scaled_to_zero"], s["traffic"]["queued"]) == (1, 1, False, 0)
    kinds = [e["kind"] for e in tidal_json(home, "events")]
    assert "ScaleFromZero" in kinds
    print(f"cold start through the gateway: {cold:.2f}s for 20 requests; top saw {seen_queued} queued")
