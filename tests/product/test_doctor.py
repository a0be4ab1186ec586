"""`tidal doctor`: verdicts decided from made-up snapshots, the probes on this machine, and the command's output."""

from __future__ import annotations

import argparse
import json
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tidal.cli import main
from tidal.commands import doctor
from tidal.commands.doctor import Check, ControlPlaneSeen, Probes, Snapshot, Status, diagnose, gpus_seen

SMI_TWO = ("GPU 0: NVIDIA H200 (UUID: GPU-aaaa1111-0000-0000-0000-000000000000)\n"
           "GPU 1: NVIDIA H200 (UUID: GPU-bbbb2222-0000-0000-0000-000000000000)\n")
BASE = Snapshot(
    tidal="1.2.3", python=(3, 11, 7), requires=("numpy", "onnxruntime"),
    extras={"s3": ("s3fs",), "tensorflow": ("tensorflow", "tensorflow-serving-api")},
    dists={"numpy": "2.0", "onnxruntime": "1.20", "s3fs": None, "tensorflow": None, "tensorflow-serving-api": None},
    nvidia_smi=None, cuda_visible_devices=None, ort_providers=("CPUExecutionProvider",),
    ports_free={8470: True, 8501: True, 8500: True}, home="/h", home_writable=True, home_problem="",
    control_plane=ControlPlaneSeen(None))


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


@pytest.mark.parametrize("change,name,status,detail", [
    ({}, "tidal", Status.OK, "1.2.3 on Python 3.11.7"),
    ({"python": (3, 10, 4)}, "tidal", Status.FAIL, "needs Python 3.11+"),
    ({}, "dependencies", Status.OK, "all 2 installed"),
    ({"dists": {**BASE.dists, "numpy": None}}, "dependencies", Status.FAIL, "missing numpy"),
    ({}, "runtime: ONNX", Status.OK, "onnxruntime 1.20"),
    ({"dists": {**BASE.dists, "onnxruntime": None}}, "runtime: ONNX", Status.FAIL, "cannot load models"),
    ({"dists": {**BASE.dists, "onnxruntime": None, "onnxruntime-gpu": "1.20"}}, "runtime: ONNX", Status.OK,
     "onnxruntime 1.20"),
    ({}, "runtime: TensorFlow", Status.INFO, "pip install 'tidal[tensorflow]'"),
    ({"dists": {**BASE.dists, "tensorflow": "2.21"}}, "runtime: TensorFlow", Status.WARN, "gRPC API is off"),
    ({"dists": {**BASE.dists, "tensorflow": "2.21", "tensorflow-serving-api": "2.21"}}, "runtime: TensorFlow",
     Status.OK, "tensorflow 2.21, tensorflow-serving-api 2.21"),
    ({}, "extras", Status.INFO, "installed: none; not installed: s3 (needs s3fs); tensorflow (needs tensorflow, "
                                "tensorflow-serving-api)"),
    ({"dists": {**BASE.dists, "s3fs": "2024.1", "tensorflow": "2.21", "tensorflow-serving-api": "2.21"}}, "extras",
     Status.OK, "installed: s3, tensorflow"),
    ({}, "GPUs", Status.INFO, "none seen (no nvidia-smi); replicas run on the CPU"),
    ({"nvidia_smi": ""}, "GPUs", Status.INFO, "none seen (nvidia-smi found none)"),
    ({"nvidia_smi": SMI_TWO}, "GPUs", Status.WARN, "2 seen: GPU 0: NVIDIA H200"),
    ({"nvidia_smi": SMI_TWO, "ort_providers": ("CUDAExecutionProvider", "CPUExecutionProvider")}, "GPUs", Status.OK,
     "onnxruntime: CUDAExecutionProvider"),
    ({"nvidia_smi": SMI_TWO, "cuda_visible_devices": ""}, "GPUs", Status.INFO, "CUDA_VISIBLE_DEVICES=''"),
    ({}, "port 8501", Status.OK, "free: the gateway's default"),
    ({"ports_free": {8470: True, 8501: False, 8500: True}}, "port 8501", Status.WARN, "in use by another process"),
    ({}, "TIDAL_HOME", Status.OK, "/h writable"),
    ({"home_writable": False, "home_problem": "cannot write in /h: Permission denied"}, "TIDAL_HOME", Status.FAIL,
     "Permission denied"),
    ({}, "control plane", Status.INFO, "not running (start it with `tidal up`)"),
    ({"control_plane": ControlPlaneSeen({"api": "http://127.0.0.1:8470", "gateway": "http://127.0.0.1:8501"}, True)},
     "control plane", Status.OK, "reachable at http://127.0.0.1:8470, gateway http://127.0.0.1:8501"),
    ({"control_plane": ControlPlaneSeen({"api": "http://127.0.0.1:8470"}, False, "cannot reach")},
     "control plane", Status.WARN, "not reachable at http://127.0.0.1:8470: cannot reach"),
])
def test_verdicts(change, name, status, detail):
    check = _by_name(diagnose(replace(BASE, **change)))[name]
    assert check.status is status
    assert detail in check.detail


def test_our_control_plane_holding_its_ports_is_fine():
    snap = replace(BASE, ports_free={8470: False, 8501: False, 8500: True},
                   control_plane=ControlPlaneSeen({"api": "http://127.0.0.1:8470",
                                                   "gateway": "http://127.0.0.1:8501", "pid": 7}, True))
    checks = _by_name(diagnose(snap))
    assert [checks[f"port {p}"].status for p in (8470, 8501, 8500)] == [Status.OK] * 3
    assert "this TIDAL_HOME's control plane" in checks["port 8470"].detail
    # The same ports held while our control plane does not answer: someone else holds them.
    stale = replace(snap, control_plane=ControlPlaneSeen(snap.control_plane.address, False, "refused"))
    assert _by_name(diagnose(stale))["port 8470"].status is Status.WARN


@pytest.mark.parametrize("smi,visible,seen", [
    (None, None, []),
    (SMI_TWO, None, ["GPU 0: NVIDIA H200", "GPU 1: NVIDIA H200"]),
    (SMI_TWO, "1", ["GPU 1: NVIDIA H200"]),
    (SMI_TWO, "0,1", ["GPU 0: NVIDIA H200", "GPU 1: NVIDIA H200"]),
    (SMI_TWO, "", []),
    (SMI_TWO, "-1", []),
    (SMI_TWO, "GPU-bbbb2222", ["GPU 1: NVIDIA H200"]),
    (SMI_TWO, "5", []),
    (None, "0", ["GPU 0 (from CUDA_VISIBLE_DEVICES)"]),  # a container may hide nvidia-smi but pass a device
])
def test_gpus_seen(smi, visible, seen):
    got = gpus_seen(replace(BASE, nvidia_smi=smi, cuda_visible_devices=visible))
    assert [g.split(" (UUID")[0] for g in got] == seen


def _fake_probes(**over) -> Probes:
    probes = Probes(dist_version=lambda name: {"onnxruntime": "1.20"}.get(name, "1.0"),
                    nvidia_smi=lambda: None, ort_providers=lambda: ("CPUExecutionProvider",),
                    port_free=lambda port: True, writable=lambda home: (True, ""),
                    control_plane=lambda home, env: ControlPlaneSeen(None))
    return replace(probes, **over)


def test_the_command_exits_1_on_a_failure_and_says_why_in_json(capsys, tmp_path):
    args = argparse.Namespace(output="json")
    assert doctor.run(args, _fake_probes(), {"TIDAL_HOME": str(tmp_path)}) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and {c["name"] for c in doc["checks"]} >= {"tidal", "GPUs", "TIDAL_HOME"}
    broken = _fake_probes(writable=lambda home: (False, f"cannot write in {home}"))
    assert doctor.run(args, broken, {"TIDAL_HOME": str(tmp_path)}) == 1
    doc = json.loads(capsys.readouterr().out)
    home = next(c for c in doc["checks"] if c["name"] == "TIDAL_HOME")
    assert doc["ok"] is False and home["status"] == "fail" and home["data"]["writable"] is False


# -- the real probes ----------------------------------------------------------------------------------------------

def test_port_probe_sees_a_listening_socket():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert doctor._port_free(port) is False
    assert doctor._port_free(port) is True


def test_writable_probe(tmp_path):
    assert doctor._writable(tmp_path) == (True, "")
    assert doctor._writable(tmp_path / "new" / "home") == (True, "does not exist yet; `tidal up` creates it")
    assert list(tmp_path.iterdir()) == []  # the probe creates nothing
    (tmp_path / "file").write_text("x")
    ok, why = doctor._writable(tmp_path / "file")
    assert not ok and "not a directory" in why


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        good = self.path == "/api/v1/healthz" and self.headers.get("Authorization") == "Bearer right"
        body = b'{"ok": true}' if good else b'{"error": "missing or wrong API token"}'
        self.send_response(200 if good else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def health_server():
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_control_plane_probe(tmp_path, health_server):
    from tidal.control.home import Home
    home = Home(tmp_path).ensure()
    assert doctor._control_plane(tmp_path, {}) == ControlPlaneSeen(None)
    home.write_address({"api": health_server, "gateway": "http://127.0.0.1:1"})
    (tmp_path / "token").write_text("right")
    seen = doctor._control_plane(tmp_path, {"TIDAL_TOKEN": "right"})
    assert seen.reachable and seen.address["api"] == health_server
    refused = doctor._control_plane(tmp_path, {"TIDAL_TOKEN": "wrong"})
    assert not refused.reachable and "token" in refused.detail
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    home.write_address({"api": dead})
    gone = doctor._control_plane(tmp_path, {"TIDAL_TOKEN": "right"})
    assert not gone.reachable and "cannot reach" in gone.detail


def test_doctor_on_this_machine(capsys, tmp_path, monkeypatch):
    from tidal.control.home import Home
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    for name in ("TIDAL_API", "TIDAL_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    rc = main(["doctor", "-o", "json"])
    doc = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in doc["checks"]}
    assert rc == (0 if doc["ok"] else 1)
    assert checks["runtime: ONNX"]["status"] == "ok" and checks["TIDAL_HOME"]["status"] == "ok"
    assert checks["control plane"]["detail"].startswith("not running")
    # A control plane that has gone away, leaving its address and token: reported, the token never shown.
    home = Home(tmp_path / "home").ensure()
    home.write_address({"api": "http://127.0.0.1:9", "gateway": "http://127.0.0.1:9"})
    home.token_file.write_text("sekrit-token-123")
    assert main(["doctor"]) == rc
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL"] and "GPUs" in out
    assert "not reachable at http://127.0.0.1:9" in out and "sekrit-token-123" not in out


def test_tidal_home_is_read_from_the_environment(tmp_path):
    seen = {}

    def writable(home: Path):
        seen["home"] = home
        return True, ""
    doctor.run(argparse.Namespace(output="json"), _fake_probes(writable=writable), {"TIDAL_HOME": str(tmp_path)})
    assert seen["home"] == tmp_path
