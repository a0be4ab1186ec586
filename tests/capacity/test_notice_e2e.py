"""The live path of a reclaim notice with real processes on 127.0.0.1: `tidal nodepool preempt --notice` on an
AWS pool run by `tidal-notice` starts the replacement at once, so it is ready before the node goes: the replica
count never drops under the target, no request is lost, and the console's API shows the notice on the node and
the replacement replica."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.control.test_e2e import home_with_bucket, tidal, tidal_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

MODEL = "half_plus_two"
BODY = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()
TIME_FACTOR = 0.05  # the 120 s notice lasts 6 s


@pytest.fixture
def home(tmp_path, half_plus_two_base):
    with home_with_bucket(tmp_path, half_plus_two_base, MODEL) as found:
        yield found


class Load(threading.Thread):
    """Requests one after another until stopped: every status counted."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.status = url, threading.Event(), {}

    def run(self) -> None:
        while not self.stop.is_set():
            req = urllib.request.Request(self.url, data=BODY, headers={"Content-Type": "application/json"},
                                         method="POST")
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    code = resp.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            except OSError as exc:
                code = type(exc).__name__
            self.status[code] = self.status.get(code, 0) + 1
            time.sleep(0.02)


def _console(home, route: str):
    addr = json.loads((home / "address.json").read_text())
    token = (home / "token").read_text().strip()
    req = urllib.request.Request(f"{addr['api']}/console/api/{route}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_a_noticed_node_is_replaced_before_it_goes(home):
    home, bucket = home
    tidal(home, "up", "--port", "0", "--gateway-port", "0", "--time-factor", str(TIME_FACTOR), "--tick", "1")
    created = tidal(home, "nodepool", "create", "aws-pool", "--label", "tier=cpu", "--spot", "--policy",
                    "tidal-notice", "--region", "us-east-1", "--instance-types", "m5.large,c5.xlarge", "--max", "6",
                    "--scale-in-after", "60").stdout
    assert "aws us-east-1" in created
    # The reference procedure's ACK pool: the catalog's first region; a pool that would mix clouds: one line.
    ack = tidal(home, "nodepool", "create", "ack-pool", "--label", "tier=gpu", "--spot").stdout
    assert "alibaba cn-hangzhou" in ack
    assert tidal_json(home, "nodepool", "get", "ack-pool")["spec"]["notice_seconds"] == 300
    mixed = tidal(home, "nodepool", "create", "mixed", "--spot", "--instance-types",
                  "g4dn.xlarge,ecs.gn6i-c4g1.xlarge", check=False)
    assert mixed.returncode != 0 and mixed.stderr.count("\n") == 1 and "Traceback" not in mixed.stderr
    assert mixed.stderr.startswith("tidal nodepool: error: instance type ecs.gn6i-c4g1.xlarge is in alibaba "
                                   "cn-hangzhou, not aws us-east-1: a node pool lives in one provider and region"), \
        mixed.stderr
    assert "region: aws us-east-1, reclaim notice 120 s" in tidal(home, "nodepool", "get", "aws-pool").stdout
    pool = tidal_json(home, "nodepool", "get", "aws-pool")
    assert pool["spec"]["notice_seconds"] == 120 and pool["spec"]["spot_remedy"] is True
    tidal(home, "volume", "create", "models", "--url", f"file://{bucket}")
    tidal(home, "serve", "tensorflow", "--name=hpt", f"--model-name={MODEL}", "--selector=tier=cpu",
          "--data=models:/models", f"--model-path=/models/{MODEL}", "--replicas", "2")
    wait_for("two replicas are available", lambda: tidal_json(home, "serve", "get", "hpt")["available"] == 2, 90)
    nodes = tidal_json(home, "nodepool", "get", "aws-pool")["nodes"]
    assert {n["instance_type"] for n in nodes} <= {"m5.large", "c5.xlarge"}
    assert all(n["billing"] == "spot" and n["zone"].startswith("us-east-1") for n in nodes)

    gateway = json.loads((home / "address.json").read_text())["gateway"]
    load = Load(f"{gateway}/services/hpt/v1/models/{MODEL}:predict")
    load.start()
    try:
        out = tidal(home, "nodepool", "preempt", "aws-pool", "--count", "1", "--notice", "120").stdout
        victim = out.strip().rsplit(" ", 1)[-1]
        seen_notice = seen_replacement = False
        lowest = 2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            svc = tidal_json(home, "serve", "get", "hpt")
            lowest = min(lowest, svc["available"])
            pools = _console(home, "nodepools")
            shown = {n["name"]: n for p in pools["pools"] for n in p["nodes"]}
            if victim in shown:
                seen_notice |= shown[victim]["state"] == "notified"
            ready_elsewhere = [r for r in svc["replicas"] if r["state"] == "ready" and r["node"] != victim]
            seen_replacement |= len(ready_elsewhere) >= 2 and victim in shown
            if victim not in shown or shown[victim]["state"] == "terminated":
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"{victim} was not reclaimed within 60 s")
        time.sleep(1.0)
    finally:
        load.stop.set()
        load.join(timeout=40)
    assert seen_notice, "the console never showed the node under notice"
    assert seen_replacement, "no replacement was ready before the noticed node went"
    assert lowest >= 2, f"the service fell to {lowest} available replicas"
    assert set(load.status) == {200} and load.status[200] > 20, load.status
    kinds = [e["kind"] for e in tidal_json(home, "events", "--limit", "200")]
    assert "PreemptionNotice" in kinds
