"""The local backend with real processes (a stand-in executable for the model server): pinning, identity, orphans, stop."""

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from tidal.backends.base import CapacityUnavailable, NodeLaunch, ReplicaLaunch, ReplicaPhase
from tidal.backends.local import LocalBackend, SpotTraceReplay, free_port, proc_environ


@pytest.fixture
def backend(tmp_path):
    fake = tmp_path / "fake-python"
    # Records its environment and arguments, then waits like a server; SIGTERM ends it.
    fake.write_text('#!/bin/sh\nenv > "$TIDAL_HOME/env-$TIDAL_REPLICA_ID"\necho "$@" > "$TIDAL_HOME/argv-$TIDAL_REPLICA_ID"\n'
                    'exec sleep 60\n')
    fake.chmod(0o755)
    b = LocalBackend(tmp_path, python=str(fake), gpus=2)
    yield b
    for pid, proc in list(b._children.items()):
        proc.kill()
        proc.wait()


def launch(rid, node, gpus=1, policy="specific:1623831335"):
    return ReplicaLaunch(replica=rid, service="s", node=node, model_name="m", model_base_path="/models/m",
                         version_policy=policy, gpus=gpus, env={"OSS_ACCESS_KEY_SECRET": "shh"})


def wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def read_env(tmp_path: Path, rid: str) -> dict:
    path = tmp_path / f"env-{rid}"
    assert wait(path.exists)
    time.sleep(0.05)
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_gpu_pinning_identity_orphans_and_stop(backend, tmp_path):
    for i in range(3):
        backend.launch_node(NodeLaunch(f"n{i}", "p", "z", "gpu.small", "spot", gpus=1), 0, 0.0)
    handles = {f"r{i}": backend.start_replica(launch(f"r{i}", f"n{i}")) for i in range(3)}
    # Two GPUs on the machine: the nodes' GPUs map round robin onto them.
    assert [read_env(tmp_path, f"r{i}")["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0", "1", "0"]
    cpu = backend.start_replica(launch("cpu", "n0", gpus=0))
    assert read_env(tmp_path, "cpu")["CUDA_VISIBLE_DEVICES"] == ""  # a CPU replica keeps off the GPUs
    # Credentials reach the process's environment, never its command line.
    argv = (tmp_path / "argv-r0").read_text()
    assert "shh" not in argv and "--rest_api_port" in argv and "--model_config_file" in argv
    assert argv.split()[:3] == ["-P", "-m", "tidal"]  # safe path: never a tidal/ folder from the cwd
    config = (tmp_path / "run" / "r0.models.config").read_text()
    assert 'name: "m"' in config and "specific { versions: 1623831335 }" in config

    ref = handles["r0"].ref
    assert backend._alive("r0", ref)
    assert not backend._alive("r1", ref)  # the process is not that replica
    assert not backend._alive("r0", {**ref, "proc_start": ref["proc_start"] + 1})  # pid reused
    assert proc_environ(ref["pid"])["TIDAL_HOME"] == str(tmp_path)
    assert handles["r0"].endpoint == f"127.0.0.1:{ref['port']}"

    # After a restart: the recorded replicas still run; "cpu" was started but never recorded: killed.
    adoption = backend.adopt({rid: st.ref for rid, st in handles.items()})
    assert adoption.running == set(handles)
    assert [rid for rid, _ in adoption.removed] == ["cpu"] and str(cpu.ref["pid"]) in adoption.removed[0][1]
    assert wait(lambda: not backend._alive("cpu", cpu.ref))

    statuses = asyncio.run(backend.observe_replicas({"r0": ref}, known_ready=frozenset({"r0"})))
    assert statuses["r0"].phase is ReplicaPhase.READY  # known ready: only checked to run
    backend.stop_replica("r0", ref, grace_seconds=5.0)
    assert wait(lambda: not backend._alive("r0", ref))
    assert asyncio.run(backend.observe_replicas({"r0": ref}))["r0"].phase is ReplicaPhase.EXITED


def test_a_model_that_cannot_load_is_reported_with_the_servers_reason(tmp_path):
    """The model server keeps running when its base path does not exist (it polls for it): the backend reads
    its reason and reports the replica failed rather than starting forever."""
    b = LocalBackend(tmp_path / "home", ready_timeout=0.5)
    try:
        st = b.start_replica(ReplicaLaunch(replica="r0", service="s", node="n0", model_name="m",
                                           model_base_path=str(tmp_path / "no-such-model"), version_policy="latest",
                                           gpus=0))
        async def until_failed():
            try:
                for _ in range(240):
                    status = (await b.observe_replicas({"r0": st.ref}))["r0"]
                    if status.phase is not ReplicaPhase.STARTING:
                        return status
                    await asyncio.sleep(0.25)
            finally:
                b.close()  # its pooled connections belong to this loop

        status = asyncio.run(until_failed())
        assert status.phase is ReplicaPhase.FAILED and "no-such-model does not exist" in status.reason
        assert "does not exist" in b.logs("r0", tail=50)
        # The model server writes (and rotates) its own log; only what it prints outside logging goes beside it.
        log = tmp_path / "home" / "logs" / "replicas" / "r0.log"
        assert proc_environ(st.ref["pid"])["TIDAL_LOG_FILE"] == str(log)
        assert "does not exist" in log.read_text() and log.with_suffix(".out").exists()
        b.stop_replica("r0", st.ref, grace_seconds=5.0)
        assert wait(lambda: not b._alive("r0", st.ref), timeout=10)
    finally:
        for proc in list(b._children.values()):
            proc.kill()
            proc.wait()


def test_a_replica_ignores_a_tidal_folder_in_the_working_directory(tmp_path, monkeypatch):
    """`tidal up` works from any folder: a bogus tidal/ package in the cwd is not what the model server imports."""
    bogus = tmp_path / "cwd" / "tidal"
    bogus.mkdir(parents=True)
    (bogus / "__init__.py").write_text("raise SystemExit('imported the bogus tidal package')\n")
    (bogus / "__main__.py").write_text("raise SystemExit('imported the bogus tidal package')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    b = LocalBackend(tmp_path / "home", ready_timeout=0.5)
    try:
        st = b.start_replica(ReplicaLaunch(replica="r0", service="s", node="n0", model_name="m",
                                           model_base_path=str(tmp_path / "none"), version_policy="latest", gpus=0))
        # The real model server runs: it logs its REST API (the bogus package would have exited at import).
        assert wait(lambda: "REST API on" in b.logs("r0"), timeout=60), b.logs("r0")
        assert "bogus" not in b.logs("r0")
        b.stop_replica("r0", st.ref, grace_seconds=5.0)
    finally:
        for proc in list(b._children.values()):
            proc.kill()
            proc.wait()
        b.close()


def test_spot_launch_refused_where_the_trace_has_no_room(backend, tmp_path):
    traces = tmp_path / "trace"
    traces.mkdir()
    for zone, data in (("a", [0, 2]), ("b", [1, 1])):
        (traces / f"{zone}.json").write_text(json.dumps({"metadata": {"gap_seconds": 300}, "data": data}))
    backend.set_trace("p", str(traces), ["z2", "z1"], start=1000.0)  # zones and files pair in sorted order
    assert backend.spot_capacity("p", "z1", 1000.0) == 0 and backend.spot_capacity("p", "z1", 1300.0) == 2
    assert backend.spot_capacity("p", "z1", 1600.0) == 0  # the trace wraps around
    assert backend.spot_capacity("p", "z3", 1000.0) is None  # a zone without a trace has no limit
    with pytest.raises(CapacityUnavailable):
        backend.launch_node(NodeLaunch("n", "p", "z1", "t", "spot", 0), 0, 1000.0)
    backend.launch_node(NodeLaunch("n", "p", "z1", "t", "on-demand", 0), 0, 1000.0)  # on-demand is not limited
    backend.launch_node(NodeLaunch("n2", "p", "z2", "t", "spot", 0), 0, 1000.0)
    with pytest.raises(CapacityUnavailable):
        backend.launch_node(NodeLaunch("n3", "p", "z2", "t", "spot", 0), 1, 1000.0)
    assert isinstance(SpotTraceReplay(str(traces), ["z1"], 0.0).capacity("z1", 0.0), int)


def test_ready_only_when_the_replica_itself_answers(backend):
    """A port picked for a replica can be taken by another process before the replica binds it:
    that process's 200 on the health path must not make the replica ready."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Healthy)  # someone else's server, in this test's process
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        backend.launch_node(NodeLaunch("n0", "p", "z", "gpu.small", "spot", gpus=1), 0, 0.0)
        st = backend.start_replica(launch("r0", "n0"))  # a process that never listens
        foreign = {**st.ref, "port": port}
        assert not asyncio.run(backend._ready(foreign))
        assert asyncio.run(backend.observe_replicas({"r0": foreign}))["r0"].phase is ReplicaPhase.STARTING
        # The same answer from the process that listens there does count.
        own = {**st.ref, "pid": os.getpid(), "port": port}
        assert asyncio.run(backend._ready(own))
    finally:
        server.shutdown()
        server.server_close()


def test_a_ready_replica_says_which_engine_serves_its_model(tmp_path):
    """The console's runtime column: the real model server's V2 metadata names the engine (ONNX Runtime here)."""
    import shutil
    base = tmp_path / "models" / "sentiment"
    (base / "1").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "tidal" / "samples" / "sentiment" / "model.onnx", base / "1")
    b = LocalBackend(tmp_path / "home", ready_timeout=2.0)
    try:
        st = b.start_replica(ReplicaLaunch(replica="r0", service="s", node="n0", model_name="sentiment",
                                           model_base_path=str(base), version_policy="latest", gpus=0))

        async def until_ready():
            try:
                for _ in range(240):
                    status = (await b.observe_replicas({"r0": st.ref}))["r0"]
                    if status.phase is not ReplicaPhase.STARTING:
                        return status
                    await asyncio.sleep(0.25)
            finally:
                b.close()

        status = asyncio.run(until_ready())
        assert status.phase is ReplicaPhase.READY and status.runtime == "onnxruntime", (status, b.logs("r0"))
        b.stop_replica("r0", st.ref, grace_seconds=5.0)
    finally:
        for proc in list(b._children.values()):
            proc.kill()
            proc.wait()


def test_replica_ports_are_drawn_below_the_ephemeral_range():
    """Between the draw and the replica's bind, another process's outgoing connection or bind to port 0 can take a
    port of the ephemeral range, never one below it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(50)}
    if low <= 21024:
        pytest.skip(f"this machine's ephemeral range starts at {low}: no room below it")
    assert all(20000 <= p < low for p in ports) and len(ports) > 40
    import socket
    with socket.socket() as s:  # free when drawn
        s.bind(("127.0.0.1", ports.pop()))
