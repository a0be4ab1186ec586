"""`tidal gateway --routes FILE`: serves the file's services; a bad file is one clear line and exit 2."""

import json
import select
import signal
import subprocess
import sys

import pytest

from tests.gateway.conftest import ROOT
from tests.gateway.engines import ENGINES

pytestmark = pytest.mark.e2e


def _tidal(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "tidal", "gateway", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("content, message", [
    ("services: [{name: a, replicas: [{id: r0, port: 99999}]}]", "services.0.replicas.0.port"),
    ("services: [{name: 'bad name'}]", "services.0.name"),
    ("port: [", "not valid YAML"),
    ("services: [{name: a, models: [m]}, {name: b, models: [m]}]", "model 'm' is already served by service 'a'"),
])
def test_bad_routes_file_is_one_line_and_exit_2(tmp_path, content, message):
    f = tmp_path / "routes.yaml"
    f.write_text(content)
    p = _tidal("--routes", str(f), "--port", "0")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2, err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_routes_file(tmp_path):
    p = _tidal("--routes", str(tmp_path / "nope.yaml"))
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2 and "cannot read routes file" in err


@pytest.mark.parametrize("engine", ENGINES)
def test_serves_the_routes_file_and_stops_on_sigterm(tmp_path, replicas, engine):
    (r0,) = replicas("r0")
    f = tmp_path / "routes.json"
    f.write_text(json.dumps({"services": [{"name": "hpt", "models": ["half_plus_two"],
                                            "replicas": [{"id": "r0", "port": r0.port}]}]}))
    p = _tidal("--routes", str(f), "--port", "0", "--engine", engine)
    try:
        assert select.select([p.stdout], [], [], 20)[0], "the gateway did not start"
        line = p.stdout.readline()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        import urllib.request
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/half_plus_two:predict",
                                     data=b'{"instances": [4.0]}', method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["predictions"] == [4.0]
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
