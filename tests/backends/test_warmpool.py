"""The warm pool with real processes: a replica from the pool serves its model (and only it), a pool process that
dies is replaced, and none outlives the control plane (stopped, or killed)."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tidal.backends.base import ReplicaLaunch, ReplicaPhase
from tidal.backends.local import LocalBackend, proc_environ
from tidal.backends.warmpool import WARM_HOME_ENV, WarmPoolSettings

REPO = Path(__file__).resolve().parents[2]


def pool_processes(home: Path) -> list[int]:
    """Pool processes of this home not (yet) assigned a replica."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            env = proc_environ(int(entry))
            if env.get(WARM_HOME_ENV) == str(home) and "TIDAL_REPLICA_ID" not in env:
                out.append(int(entry))
    return out


def _ended(pid: int) -> bool:
    """Gone, or a zombie (its parent, killed, cannot reap it; nothing runs)."""
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait(cond, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or cond}")


def warm_pids(b: LocalBackend) -> list[int]:
    return [p["pid"] for p in b.warm_pool_status()["processes"] if p["state"] == "warm"]


def predict(endpoint: str, model: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{endpoint}/v1/models/{model}:predict", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def until_ready(b: LocalBackend, refs: dict) -> dict:
    async def go():
        try:
            for _ in range(600):
                statuses = await b.observe_replicas(refs)
                if all(s.phase is not ReplicaPhase.STARTING for s in statuses.values()):
                    return statuses
                await asyncio.sleep(0.05)
            return statuses
        finally:
            b._client.close()  # its pooled connections belong to this loop
    return asyncio.run(go())


def test_a_replica_from_the_pool_serves_its_model_only(tmp_path, half_plus_two_base):
    sentiment = tmp_path / "models" / "sentiment"
    (sentiment / "1").mkdir(parents=True)
    shutil.copy(REPO / "tidal" / "samples" / "sentiment" / "model.onnx", sentiment / "1")
    home = tmp_path / "home"
    b = LocalBackend(home, gpus=0, ready_timeout=2.0, warm_pool=WarmPoolSettings(refill_delay_seconds=0))
    started = []
    try:
        b.adopt({})  # a control plane's start: the pool starts ahead of any replica
        first = wait(lambda: warm_pids(b), what="a warm pool process")[0]
        status = b.warm_pool_status()
        assert status["enabled"] and status["rss_bytes"] > 0 and status["runtimes_in_use"] == ["onnx"]
        published = home / "run" / "warm-pool.json"
        wait(lambda: json.loads(published.read_text())["processes"] == [
            {"pid": first, "flavour": "onnx", "state": "warm"}], timeout=5, what="the pool in run/warm-pool.json")

        a = b.start_replica(ReplicaLaunch("hp-1", "hp", "n0", "half_plus_two", f"file://{half_plus_two_base}",
                                          "latest", 0, env={"OSS_ACCESS_KEY_SECRET": "shh"}))
        started.append(("hp-1", a.ref))
        # The pool's process took it, and carries the replica's marker as a replica started cold does.
        assert a.ref["pid"] == first and a.ref.get("warm") is True
        env = proc_environ(first)
        assert env["TIDAL_REPLICA_ID"] == "hp-1" and env["TIDAL_HOME"] == str(home)
        assert b._alive("hp-1", a.ref) and not b._alive("other", a.ref)
        assert "shh" not in (home / "logs" / "warm-pool.out").read_text()
        assert until_ready(b, {"hp-1": a.ref})["hp-1"].phase is ReplicaPhase.READY, b.logs("hp-1")
        assert predict(a.endpoint, "half_plus_two", {"instances": [1.0, 2.0, 5.0]}) == (
            200, {"predictions": [2.5, 3.0, 4.5]})
        # It logs where a cold replica logs.
        assert "REST API on" in b.logs("hp-1")

        # A replacement starts; the next replica, another model, comes from it and serves that model alone.
        second = wait(lambda: [p for p in warm_pids(b) if p != first], what="the replacement")[0]
        s = b.start_replica(ReplicaLaunch("st-1", "st", "n0", "sentiment", str(sentiment), "latest", 0))
        started.append(("st-1", s.ref))
        assert s.ref["pid"] == second
        assert until_ready(b, {"st-1": s.ref})["st-1"].phase is ReplicaPhase.READY, b.logs("st-1")
        code, body = predict(s.endpoint, "sentiment", {"instances": ["what a great film"]})
        assert code == 200 and body["predictions"][0]["label"] == "positive"
        assert predict(s.endpoint, "half_plus_two", {"instances": [1.0]})[0] == 404
        assert predict(a.endpoint, "sentiment", {"instances": ["what a great film"]})[0] == 404

        # A pool process that dies is replaced.
        third = wait(lambda: [p for p in warm_pids(b) if p not in (first, second)], what="another replacement")[0]
        os.kill(third, signal.SIGKILL)
        wait(lambda: [p for p in warm_pids(b) if p not in (first, second, third)], what="the dead one replaced")

        # The backend closes: the idle processes go, the replicas stay (they are stopped as replicas).
        b.close()
        wait(lambda: not pool_processes(home), timeout=10, what="no pool process left")
        assert b._alive("hp-1", a.ref) and b._alive("st-1", s.ref)
    finally:
        for rid, ref in started:
            b.stop_replica(rid, ref, grace_seconds=5.0)
        for rid, ref in started:
            wait(lambda: not b._alive(rid, ref), timeout=15, what=f"{rid} stopped")
        b.close()


def test_a_replica_that_must_start_cold_does(tmp_path, half_plus_two_base):
    """A replica that sets a variable its runtime reads at import starts as a fresh process, pool or not."""
    b = LocalBackend(tmp_path / "home", gpus=0, warm_pool=WarmPoolSettings())
    try:
        b.adopt({})
        pid = wait(lambda: warm_pids(b))[0]
        st = b.start_replica(ReplicaLaunch("hp-1", "hp", "n0", "half_plus_two", str(half_plus_two_base), "latest",
                                           0, env={"OMP_NUM_THREADS": "1"}))
        assert st.ref["pid"] != pid and "warm" not in st.ref and warm_pids(b) == [pid]
        env = wait(lambda: (e := proc_environ(st.ref["pid"])).get("TIDAL_REPLICA_ID") and e)  # once it has exec'd
        assert env["OMP_NUM_THREADS"] == "1"
        b.stop_replica("hp-1", st.ref, grace_seconds=5.0)
        wait(lambda: not b._alive("hp-1", st.ref), timeout=15)
    finally:
        b.close()


def _tidal(home: Path, *argv: str) -> str:
    env = dict(os.environ, TIDAL_HOME=str(home))
    env.pop("TIDAL_WARM_POOL", None)
    p = subprocess.run([sys.executable, "-m", "tidal", *argv], env=env, capture_output=True, text=True, timeout=90,
                       cwd=REPO)
    assert p.returncode == 0, p.stderr + p.stdout
    return p.stdout


@pytest.mark.parametrize("how", ["down", "SIGKILL"])
def test_no_pool_process_outlives_the_control_plane(tmp_path, how):
    from tidal.gateway.supervisor import GatewayFiles, stop_orphan

    home = (tmp_path / "home").resolve()
    _tidal(home, "up", "--port", "0", "--gateway-port", "0")
    try:
        pids = wait(lambda: pool_processes(home), what="the control plane's pool")  # on by default
        if how == "down":
            _tidal(home, "down")
        else:
            os.kill(json.loads((home / "address.json").read_text())["pid"], signal.SIGKILL)
        # Killed, the control plane cannot end them: each sees its channel close and exits by itself. A process
        # on its way out no longer shows its environment, so each one's end is waited for by its pid.
        wait(lambda: not pool_processes(home) and all(_ended(p) for p in pids), timeout=20,
             what="no pool process left")
    finally:
        if how != "down":
            stop_orphan(GatewayFiles.in_home(home), timeout=5)
        for pid in pool_processes(home):
            os.kill(pid, signal.SIGKILL)
