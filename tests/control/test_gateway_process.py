"""The gateway as its own supervised process, with real processes on 127.0.0.1.

- SIGKILL the control plane under 50 req/s through the gateway, keep the load on for the
  outage, `tidal up` again: no request fails, the same replicas (ids and pids) are adopted,
  none doubled, and the gateway takes route updates again (a scale-in reaches it).
- SIGKILL the gateway: it answers again within 2 s with its last routes, and `tidal top`
  says what happened.
The outage lasts TIDAL_TEST_OUTAGE_SECONDS (default 8 s; TIDAL_TEST_OUTAGE_SECONDS=30 for a full
30 s).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tidal.gateway.supervisor import gateway_pids

from .test_e2e import our_processes, tear_down, tidal, tidal_json, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

OUTAGE_SECONDS = float(os.environ.get("TIDAL_TEST_OUTAGE_SECONDS", "8"))
RATE = 50.0
MODEL = "half_plus_two"
BODY = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()


class OpenLoop:
    """Sends `rate` predict requests a second on schedule, whatever the answers' latency; counts failures."""

    def __init__(self, port: int, path: str, rate: float) -> None:
        self.port, self.path, self.rate = port, path, rate
        self.sent = 0
        self.ok = 0
        self.failures: list[tuple[float, str]] = []  # (seconds since start, what went wrong)
        self._stop = threading.Event()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(64)
        self._thread = threading.Thread(target=self._schedule, daemon=True)

    def __enter__(self) -> "OpenLoop":
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _schedule(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            due += 1.0 / self.rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            self.sent += 1
            self._pool.submit(self._one)

    def _one(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        t = time.monotonic() - self._t0
        try:
            conn.request("POST", self.path, body=BODY, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status == 200 and json.loads(data)["predictions"] == [2.5, 3.0, 4.5]:
                with self._lock:
                    self.ok += 1
                return
            problem = f"HTTP {resp.status}: {data[:200]!r}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            conn.close()
            self._local.conn = None
        with self._lock:
            self.failures.append((round(t, 2), problem))


def _gateway_port(home: Path) -> int:
    return json.loads((home / "run" / "gateway.json").read_text())["port"]


def _routed(port: int, service: str) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/-/stats")
        stats = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return next((s["replicas"] for s in stats if s["name"] == service), [])


def _replicas(home: Path) -> dict[str, int]:
    return {r["name"]: r["pid"] for r in tidal_json(home, "serve", "get", "hpt")["replicas"]
            if r["state"] in ("ready", "starting")}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, half_plus_two_base):
    """A control plane serving half_plus_two with two replicas; everything it started is gone afterwards."""
    tmp = tmp_path_factory.mktemp("gateway-process")
    home = (tmp / "tidal-home").resolve()
    bucket = tmp / "bucket"
    bucket.mkdir()
    (bucket / MODEL).symlink_to(half_plus_two_base)
    try:
        tidal(home, "up", "--port", "0", "--gateway-port", "0", "--tick", "1")
        tidal(home, "nodepool", "create", "cpu-pool", "--label", "tier=cpu", "--instance-types", "ecs.c6.large",
              "--max", "4")
        tidal(home, "volume", "create", "models", "--url", f"file://{bucket}")
        tidal(home, "serve", "tensorflow", "--name=hpt", f"--model-name={MODEL}", "--selector=tier=cpu",
              "--data=models:/models", f"--model-path=/models/{MODEL}", "--replicas", "2")
        wait_for("two replicas are available",
                 lambda: tidal_json(home, "serve", "get", "hpt")["available"] == 2, 90)
        wait_for("the gateway routes to both", lambda: len(_routed(_gateway_port(home), "hpt")) == 2, 10, 0.2)
        yield home
    finally:
        tear_down(home)


def test_gateway_serves_through_a_control_plane_crash(deployment):
    home = deployment
    addr = json.loads((home / "address.json").read_text())
    port = _gateway_port(home)
    gateway_pid = json.loads((home / "run" / "gateway.json").read_text())["pid"]
    before = _replicas(home)
    processes = our_processes(home)
    assert len(before) == 2 and sorted(processes.values()) == sorted(before)

    with OpenLoop(port, f"/services/hpt/v1/models/{MODEL}:predict", RATE) as load:
        time.sleep(1.0)
        os.kill(addr["pid"], signal.SIGKILL)
        wait_for("the killed control plane is gone", lambda: not Path(f"/proc/{addr['pid']}").exists()
                 or "Z" in Path(f"/proc/{addr['pid']}/stat").read_text().split(")")[-1][:3], 10, 0.1)
        time.sleep(OUTAGE_SECONDS)
        # The gateway served the whole outage on its own: same process, nothing failed so far.
        assert gateway_pid in gateway_pids(home)
        assert not load.failures, load.failures[:5]
        tidal(home, "up")
        # The same replicas, adopted (same pids), none doubled; the same gateway, adopted too.
        assert _replicas(home) == before
        assert our_processes(home) == processes
        g = tidal_json(home, "top")["gateway"]
        assert (g["pid"], g["restarts"]) == (gateway_pid, 0) and gateway_pid in gateway_pids(home)
        assert len(gateway_pids(home)) <= 2  # the gateway and, at most, its idle standby
        kinds = [(e["kind"], e["object"]) for e in tidal_json(home, "events", "--limit", "50")]
        assert ("GatewayAdopted", "gateway") in kinds
        assert kinds.count(("ReplicaAdopted", "replica/" + next(iter(before)))) == 1
        # Route updates flow again: a scale-in drains one replica out of the gateway, under load.
        tidal(home, "serve", "update", "hpt", "--replicas", "1")
        wait_for("the gateway routes to one ready replica",
                 lambda: [r["state"] for r in _routed(port, "hpt")] == ["ready"], 20, 0.2)
        time.sleep(1.0)
    assert load.sent >= RATE * (OUTAGE_SECONDS + 2) * 0.9
    assert load.failures == [] and load.ok == load.sent, (load.sent, load.ok, load.failures[:10])


def _kill_gateway_and_time_it(home: Path, pid: int, port: int) -> float:
    """SIGKILL the gateway; seconds until a predict through it answers 200 again."""
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 10:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", f"/v1/models/{MODEL}:predict", body=BODY)
            resp = conn.getresponse()
            if resp.status == 200 and json.loads(resp.read())["predictions"] == [2.5, 3.0, 4.5]:
                return time.monotonic() - killed
        except (OSError, http.client.HTTPException):
            pass  # refused, or a connection the killed process had accepted
        finally:
            conn.close()
        time.sleep(0.02)
    raise AssertionError("the gateway did not answer within 10 s of its SIGKILL")


def _restarted(home: Path, old: dict) -> dict:
    now = wait_for("top shows the restarted gateway",
                   lambda: (g := tidal_json(home, "top")["gateway"])["pid"] != old["pid"] and g["reachable"] and g, 5,
                   0.2)
    assert now["pid"] in gateway_pids(home) and now["restarts"] == old["restarts"] + 1
    assert now["last_restart"]["reason"].startswith(f"process {old['pid']} was killed ")
    return now


def test_a_killed_gateway_is_back_within_two_seconds(deployment):
    home = deployment
    port = _gateway_port(home)
    first = tidal_json(home, "top")["gateway"]
    assert first["mode"] == "process" and first["pid"] in gateway_pids(home)

    # Whether it outlived an earlier control plane (adopted, not a child: no exit status) or not, it comes back.
    took = _kill_gateway_and_time_it(home, first["pid"], port)
    assert took < 2.0, took
    second = _restarted(home, first)
    took = _kill_gateway_and_time_it(home, second["pid"], port)
    assert took < 2.0, took
    third = _restarted(home, second)
    # Its own child: the control plane knows the signal exactly, and `tidal top` says so.
    assert third["last_restart"]["reason"].startswith(f"process {second['pid']} was killed by SIGKILL")
    text = tidal(home, "top").stdout
    assert f"gateway: pid {third['pid']}" in text and "restarts" in text and "was killed by SIGKILL" in text
    assert f"engine {third['engine']}" in text and third["engine"] in ("python", "edge")
    events = [e["message"] for e in tidal_json(home, "events", "--limit", "50") if e["kind"] == "GatewayRestarted"]
    assert len(events) >= 2 and f"process {second['pid']} was killed by SIGKILL" in events[-1]


def test_down_stops_the_gateway_with_or_without_a_control_plane(deployment):
    home = deployment
    # With one: the gateway drains and goes, then the replicas; nothing of either is left.
    assert "control plane stopped" in tidal(home, "down").stdout
    assert gateway_pids(home) == []  # `down` returns once the gateway has exited
    wait_for("the replicas exit after down", lambda: not our_processes(home), 30)
    assert not (home / "run" / "gateway.json").exists()
    tidal(home, "up")

    def gateway_events() -> list[str]:
        return [e["kind"] for e in tidal_json(home, "events", "--limit", "50") if e["kind"].startswith("Gateway")]

    before = len(gateway_events())
    wait_for("the new control plane records its gateway", lambda: len(gateway_events()) > before or
             gateway_events()[-1:] == ["GatewayStarted"], 30)
    assert gateway_events()[-1] == "GatewayStarted"  # a fresh start after `down`, not a restart
    # Without one (killed outright): `down` still stops the gateway it left serving.
    addr = json.loads((home / "address.json").read_text())
    gateway_pid = tidal_json(home, "top")["gateway"]["pid"]
    os.kill(addr["pid"], signal.SIGKILL)
    wait_for("the killed control plane is gone", lambda: not Path(f"/proc/{addr['pid']}").exists()
             or "Z" in Path(f"/proc/{addr['pid']}/stat").read_text().split(")")[-1][:3], 10, 0.1)
    out = tidal(home, "down").stdout
    assert "no control plane is running" in out and f"gateway stopped (process {gateway_pid})" in out
    assert gateway_pids(home) == []


def test_in_process_mode_stays_for_tests_that_build_a_control_plane(tmp_path):
    import asyncio

    from tidal.control.daemon import ControlPlane, DaemonOptions, GatewayMode
    from tidal.control.home import Home
    from tidal.gateway import Gateway

    async def run() -> None:
        cp = ControlPlane(Home(tmp_path / "home"), DaemonOptions(api_port=0, gateway_port=0,
                                                                 gateway_mode=GatewayMode.IN_PROCESS))
        await cp.start()
        try:
            assert isinstance(cp.gateway, Gateway) and cp.gateway_supervisor is None
            reader, writer = await asyncio.open_connection("127.0.0.1", cp.gateway.port)
            writer.write(b"GET /-/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            await cp.stop()
    old = os.umask(0o022)  # the control plane sets its own; give the test's back
    try:
        asyncio.run(run())
    finally:
        os.umask(old)
    assert not gateway_pids((tmp_path / "home").resolve())
