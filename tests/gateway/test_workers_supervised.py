"""`tidal up --gateway-workers 2` for real: the supervised gateway runs two processes on its port; when its
coordinator is killed the standby takes over with workers of its own, the old worker goes, and `tidal down`
leaves none of them."""

from __future__ import annotations

import http.client
import json
import os
import signal
from pathlib import Path

import pytest

from tests.control.test_e2e import tear_down, tidal, wait_for
from tests.gateway.engines import ENGINES
from tidal.gateway.supervisor import gateway_pids

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(180)]


def _hello(home: Path) -> dict:
    port = json.loads((home / "run" / "gateway.json").read_text())["port"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/-/control/hello",
                     headers={"Authorization": f"Bearer {(home / 'token').read_text().strip()}"})
        resp = conn.getresponse()
        return json.loads(resp.read()) if resp.status == 200 else {}
    except (OSError, ValueError):
        return {}
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def home(tmp_path):
    h = (tmp_path / "tidal-home").resolve()
    yield h
    tear_down(h)


@pytest.mark.parametrize("engine", ENGINES)
def test_workers_under_supervision_take_over_and_go_down(home, engine):
    # With the edge: the coordinator and one edge process (with two threads).
    tidal(home, "up", "--port", "0", "--gateway-port", "0", "--tick", "1", "--gateway-workers", "2",
          "--gateway-engine", engine)
    first = wait_for("the gateway runs two processes", lambda: (h := _hello(home)) and len(h["workers"]) == 2 and h,
                     20, 0.1)
    coordinator, worker = first["workers"]
    # The home's gateway is the coordinator (and its standby); the worker is the coordinator's own.
    assert coordinator in gateway_pids(home) and worker not in gateway_pids(home)

    os.kill(coordinator, signal.SIGKILL)
    second = wait_for("the standby takes over with workers of its own",
                      lambda: (h := _hello(home)) and h["pid"] != coordinator and len(h["workers"]) == 2 and h,
                      20, 0.1)
    wait_for("the old worker exits once its coordinator is gone", lambda: not _alive(worker), 20, 0.1)
    assert worker not in second["workers"]

    assert "control plane stopped" in tidal(home, "down").stdout
    assert gateway_pids(home) == []
    for pid in second["workers"]:
        wait_for(f"process {pid} exits after down", lambda pid=pid: not _alive(pid), 10, 0.1)
