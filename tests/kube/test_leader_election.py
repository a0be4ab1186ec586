"""Leader election on a real API server: two candidates for one Lease, then two `tidal up --leader-elect` processes.

Only one acts at a time; the other takes over at once when the first releases the Lease, and only after the
lease duration when the first stops renewing without a word (killed)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tidal.backends.kubernetes.lease import LeaderElection, LeaseElector, LeaseError

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEASE = 3.0  # seconds: short, so expiry is tested in seconds (renew deadline 2 s, a try every 0.4 s)
# For whole control planes, a little longer: three processes starting at once on a small, busy machine must still
# renew in time (a leader that cannot stops acting, which is right, but not what these tests look at).
PROCESS_LEASE = 5.0


def elector(kube_cluster, namespace: str, identity: str, clock=None, **changes) -> LeaseElector:
    from kubernetes import config
    api = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    return LeaseElector(api, namespace, LeaderElection(lease_seconds=LEASE, identity=identity, **changes), clock)


def read_lease(kube_cluster, namespace: str, name: str = "tidal-control-plane"):
    from kubernetes import client
    return client.CoordinationV1Api(kube_cluster.api).read_namespaced_lease(name, namespace)


def take_lease(kube_cluster, namespace: str, holder: str, lease_seconds: int | None = None) -> None:
    """Write another holder into the Lease, as a candidate that took it over would (again if the leader's renewal
    came in between the read and the write)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    api = client.CoordinationV1Api(kube_cluster.api)
    for _ in range(20):
        lease = api.read_namespaced_lease("tidal-control-plane", namespace)
        lease.spec.holder_identity = holder
        if lease_seconds is not None:
            lease.spec.lease_duration_seconds = lease_seconds
        try:
            api.replace_namespaced_lease("tidal-control-plane", namespace, lease)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
    pytest.fail("the Lease kept changing under 20 writes")


def test_two_candidates_one_leader(kube_cluster, namespace):
    """Each candidate counts on its own clock (fake here, stepped by hand): expiry is seen, not computed from
    timestamps another machine wrote."""
    from tidal.clock import FakeClock
    clock_a, clock_b = FakeClock(), FakeClock(start=5_000.0)
    a, b = elector(kube_cluster, namespace, "a", clock_a), elector(kube_cluster, namespace, "b", clock_b)
    try:
        assert a.try_once() is True            # no Lease yet: a creates it
        assert b.try_once() is False           # a's, just renewed: b waits
        assert a.try_once() is True            # a renews
        lease = read_lease(kube_cluster, namespace)
        assert (lease.spec.holder_identity, lease.spec.lease_transitions, lease.spec.lease_duration_seconds) == (
            "a", 0, 3)

        # a stops on purpose: it releases, and b takes over on its next try, without waiting for expiry
        assert a.release() is True
        assert read_lease(kube_cluster, namespace).spec.holder_identity is None
        assert b.try_once() is True
        assert a.try_once() is False
        assert read_lease(kube_cluster, namespace).spec.lease_transitions == 1

        # b stops renewing without a word (killed): a waits the whole lease, counted from when it saw b's write
        assert a.try_once() is False           # a sees b's write now
        clock_a.advance(LEASE - 0.1)
        assert a.try_once() is False           # 2.9 s unchanged: b might still renew
        clock_b.advance(1.0)
        assert b.try_once() is True            # b renews: a's count starts again
        clock_a.advance(0.1)
        assert a.try_once() is False           # 3 s since a first saw b's write, but only 0 s since the renewal
        clock_a.advance(LEASE - 0.1)
        assert a.try_once() is False
        clock_a.advance(0.1)
        assert a.try_once() is True            # 3 s without a change: expired, a takes over
        lease = read_lease(kube_cluster, namespace)
        assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("a", 2)
        assert b.try_once() is False           # b is back, and a holds it now (b just saw a's write)
        assert b.release() is False            # not b's to release
    finally:
        a.close()
        b.close()


def test_a_leader_steps_down_when_the_lease_is_taken(kube_cluster, namespace):
    a, b = elector(kube_cluster, namespace, "a"), elector(kube_cluster, namespace, "b")

    async def scenario() -> float:
        assert await a.acquire()
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(1.0)
        assert not holding.done()              # renewing every 0.4 s
        # Another writer takes the Lease over (e.g. a's renewals did not reach the server for a lease):
        take_lease(kube_cluster, namespace, "b")
        started = time.monotonic()
        await asyncio.wait_for(holding, 5)     # hold() returns: a stops acting
        return time.monotonic() - started

    try:
        took = asyncio.run(scenario())
        assert took < 1.5, f"a noticed after {took:.1f} s; it tries every 0.4 s"
        assert a.try_once() is False
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("api", ["refused", "silent"])
def test_a_leader_that_cannot_renew_stops_before_its_lease_expires(kube_cluster, namespace, api):
    """The API out of reach (refusing connections, or accepting them and never answering): the leader stops
    acting at its renew deadline (2 s), before the 3 s lease expires and another may take over."""
    import socket
    a = elector(kube_cluster, namespace, "a")
    silent = socket.create_server(("127.0.0.1", 0))  # accepts into its backlog, never answers
    address = "https://127.0.0.1:9" if api == "refused" else f"https://127.0.0.1:{silent.getsockname()[1]}"

    async def scenario() -> float:
        assert await a.acquire()
        renewed = time.monotonic()
        configuration = a.leases.api_client.configuration
        configuration.refresh_api_key_hook = None  # the kubeconfig loader's hook would set the host back
        configuration.host = address
        await asyncio.wait_for(a.hold(), 10)
        return time.monotonic() - renewed

    try:
        took = asyncio.run(scenario())
        settings = a.settings
        assert settings.renew_deadline - settings.retry <= took < settings.lease_seconds, took
    finally:
        silent.close()
        a.close()


def test_no_rights_is_one_clear_line(kube_cluster, namespace):
    """A candidate whose credentials may not touch Leases gets LeaseError with why, not endless retries."""
    from tests.kube.accounts import service_account_client
    api = service_account_client(kube_cluster, namespace, "nobody")
    candidate = LeaseElector(api, namespace, LeaderElection(lease_seconds=LEASE))
    try:
        with pytest.raises(LeaseError, match=r"no rights .*leases"):
            candidate.try_once()
    finally:
        candidate.close()


# -- two control planes: `tidal up --foreground --leader-elect` ------------------------------------------------

class Process:
    """A `tidal up --foreground --leader-elect` with a home of its own; its output lines are read as they come."""

    def __init__(self, name: str, tmp_path: Path, kubeconfig: Path, namespace: str) -> None:
        from tests.kube.cluster import REPO_ROOT
        self.name = name
        self.home = tmp_path / name
        self.env = {**os.environ, "TIDAL_HOME": str(self.home), "HOSTNAME": name}
        self.env.pop("TIDAL_CONTEXT", None)
        # the context `tidal context add cluster --kubernetes ... && tidal context use cluster` writes
        self.home.mkdir(parents=True)
        (self.home / "contexts.json").write_text(json.dumps({"current": "cluster", "contexts": [{
            "name": "cluster", "kind": "kubernetes", "kubeconfig": str(kubeconfig), "namespace": namespace}]}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidal", "up", "--foreground", "--port", "0", "--gateway-port", "0",
             "--leader-elect", "--lease-seconds", str(PROCESS_LEASE)],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
            start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds until a line containing `text` came (fails with the output after `timeout`)."""
        started = time.monotonic()
        while True:
            left = timeout - (time.monotonic() - started)
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                pytest.fail(f"{self.name}: no {text!r} in {timeout:.0f} s; output:\n" + "\n".join(self.output))
            self.output.append(line)
            if text in line:
                return time.monotonic() - started

    def poll_for(self, text: str) -> bool:
        """Whether a line containing `text` came, reading what has arrived without waiting."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return False
            self.output.append(line)
            if text in line:
                return True

    def acting(self) -> bool:
        """Whether its control plane runs: it writes its API's address when it starts and removes it on stop."""
        return (self.home / "address.json").exists()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def test_two_control_planes_only_one_acts(kube_cluster, namespace, tmp_path):
    """Three candidates start together: one leads. SIGTERM hands over at once; SIGKILL only after the lease."""
    procs = [Process(f"cp-{i}", tmp_path, kube_cluster.kubeconfig, namespace) for i in (1, 2, 3)]
    try:
        for p in procs:
            p.wait_for("candidate cp-", timeout=60)
        leader = _the_leader(procs, kube_cluster, namespace)
        time.sleep(PROCESS_LEASE + 1)  # longer than a lease: the others still wait, since the leader renews
        assert [p.acting() for p in procs] == [p is leader for p in procs]
        assert read_lease(kube_cluster, namespace).spec.holder_identity.startswith(f"{leader.name}_")

        # SIGTERM: the leader stops acting, then releases; another leads at once (no lease to wait out)
        assert leader.stop() == 0
        assert not leader.acting()
        took = _taken_over(kube_cluster, namespace, leader)
        assert took < PROCESS_LEASE - 1, f"the Lease was taken {took:.1f} s after its release"
        procs.remove(leader)
        second = _the_leader(procs, kube_cluster, namespace)
        assert read_lease(kube_cluster, namespace).spec.holder_identity.startswith(f"{second.name}_")

        # SIGKILL: no release; the last candidate waits out the lease the killed one can no longer renew
        second.stop(signal.SIGKILL)
        _stop_gateway(second.home)  # a session of its own: it outlives its control plane
        waited = _taken_over(kube_cluster, namespace, second)
        assert waited >= PROCESS_LEASE - 1.0, f"the Lease was taken {waited:.1f} s after the kill, before it expired"
        procs.remove(second)
        third = _the_leader(procs, kube_cluster, namespace)
        lease = read_lease(kube_cluster, namespace)
        assert lease.spec.holder_identity.startswith(f"{third.name}_") and lease.spec.lease_transitions == 2
    finally:
        for p in procs:
            p.stop()


def _taken_over(kube_cluster, namespace: str, old: Process) -> float:
    """Seconds until another candidate holds the Lease (polled every 50 ms; fails after 30 s)."""
    started = time.monotonic()
    while time.monotonic() - started < 30:
        holder = read_lease(kube_cluster, namespace).spec.holder_identity
        if holder and not holder.startswith(f"{old.name}_"):
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"nobody took the Lease over from {old.name} in 30 s")


def _the_leader(procs: list[Process], kube_cluster, namespace: str) -> Process:
    """The one of `procs` that says it leads (within 30 s); the others must not act meanwhile."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll_for("leading"):
                assert [q.acting() for q in procs if q is not p] == [False] * (len(procs) - 1)
                return p
        time.sleep(0.05)
    pytest.fail("no candidate led within 30 s:\n" + "\n".join(f"{p.name}: {p.output}" for p in procs))


def test_lost_lease_stops_acting(kube_cluster, namespace, tmp_path):
    """A leader whose Lease another takes stops its control plane and exits with one clear line."""
    from kubernetes import client
    leader = Process("cp-1", tmp_path, kube_cluster.kubeconfig, namespace)
    try:
        leader.wait_for("leading", timeout=60)
        take_lease(kube_cluster, namespace, "someone-else", lease_seconds=600)
        api = client.CoordinationV1Api(kube_cluster.api)
        assert leader.proc.wait(timeout=30) != 0
        leader.wait_for("stopped acting", timeout=5)
        assert "error: lost the Lease" in leader.output[-1] and "someone-else" in leader.output[-1]
        assert not leader.acting()
        # it did not release a Lease that is not its own
        assert api.read_namespaced_lease("tidal-control-plane", namespace).spec.holder_identity == "someone-else"
    finally:
        leader.stop()


def _stop_gateway(home: Path) -> None:
    try:
        pid = json.loads((home / "run" / "gateway.json").read_text())["pid"]
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        pass
