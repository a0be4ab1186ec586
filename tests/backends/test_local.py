"""The local backend with real processes (a stand-in executable for the model server): pinning, identity, orphans, stop."""

import json
import os
import time
from pathlib import Path

import pytest

from tidal.backends.base import CapacityUnavailable, NodeLaunch, ReplicaLaunch
from tidal.backends.local import LocalBackend, SpotTraceReplay, proc_environ


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
    config = (tmp_path / "run" / "r0.models.config").read_text()
    assert 'name: "m"' in config and "specific { versions: 1623831335 }" in config

    h = handles["r0"]
    assert backend.replica_alive("r0", h)
    assert not backend.replica_alive("r1", h)  # the process is not that replica
    assert not backend.replica_alive("r0", h.__class__(h.pid, h.proc_start + 1, h.port, h.grpc_port))  # pid reused
    assert proc_environ(h.pid)["TIDAL_HOME"] == str(tmp_path)

    known = {rid: hd.pid for rid, hd in handles.items()}
    assert backend.orphans(known) == [("cpu", cpu.pid)]
    backend.kill(cpu.pid)
    assert wait(lambda: not backend.replica_alive("cpu", cpu))

    backend.stop_replica("r0", h, grace_seconds=5.0)
    assert wait(lambda: not backend.replica_alive("r0", h))


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
    import asyncio
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
        h = backend.start_replica(launch("r0", "n0"))  # a process that never listens
        foreign = h.__class__(h.pid, h.proc_start, port, h.grpc_port)
        assert not asyncio.run(backend.replica_ready(foreign))
        # The same answer from the process that listens there does count.
        own = h.__class__(os.getpid(), h.proc_start, port, h.grpc_port)
        assert asyncio.run(backend.replica_ready(own))
    finally:
        server.shutdown()
        server.server_close()
