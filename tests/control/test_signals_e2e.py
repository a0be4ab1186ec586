"""A concurrency target end to end with real processes on 127.0.0.1: control plane, gateway process, model servers.

Six clients keep one request each in flight (closed loop, bodies large enough that the
model server's time dominates), so the gateway measures about six requests in flight;
at a target of two per replica the HPA's rule asks for three, and the service scales out.
"""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from .test_e2e import home_with_bucket, tidal, tidal_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

MODEL = "half_plus_two"
BODY = json.dumps({"instances": [float(i % 7) for i in range(20000)]}).encode()


@pytest.fixture
def home(tmp_path, half_plus_two_base):
    with home_with_bucket(tmp_path, half_plus_two_base, MODEL) as found:
        yield found


def test_concurrency_target_scales_out(home):
    home, bucket = home
    tidal(home, "up", "--port", "0", "--gateway-port", "0", "--tick", "1")
    tidal(home, "nodepool", "create", "cpu-pool", "--label", "tier=cpu", "--instance-types", "ecs.c6.large",
          "--max", "3")
    tidal(home, "volume", "create", "models", "--url", f"file://{bucket}")
    tidal(home, "serve", "tensorflow", "--name=hpt", f"--model-name={MODEL}", "--selector=tier=cpu",
          "--data=models:/models", f"--model-path=/models/{MODEL}", "--replicas", "1")
    wait_for("one replica is available", lambda: tidal_json(home, "serve", "get", "hpt")["available"] == 1, 90)
    out = tidal(home, "autoscale", "hpt", "--max", "3", "--target-concurrency", "2").stdout
    assert "2 in flight" in out

    gateway = json.loads((home / "address.json").read_text())["gateway"]
    url = f"{gateway}/services/hpt/v1/models/{MODEL}:predict"
    stop = threading.Event()
    answers: list[int] = []

    def client():
        while not stop.is_set():
            req = urllib.request.Request(url, data=BODY, headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
                answers.append(resp.status)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_for("the HPA scales out on concurrency",
                 lambda: tidal_json(home, "serve", "get", "hpt")["desired"] >= 2, 120)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    events = [e for e in tidal_json(home, "events") if e["kind"] == "SuccessfulRescale"]
    assert any("pods metric tidal_concurrency above target" in e["message"] for e in events), events
    assert answers and set(answers) == {200}
