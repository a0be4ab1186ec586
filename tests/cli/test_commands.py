"""The command line as people expect it: quiet on a closed pipe, YAML errors with their place, labels as k=v,
ports only where something listens, `logs -f` and `top --watch` against a real HTTP API on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

import orjson
import pytest

from tests.threaded_server import ThreadedServer
from tidal.commands.apply import load_documents
from tidal.commands.common import labels_text
from tidal.commands.logs import new_lines
from tidal.commands.serve import replica_port
from tidal.errors import UserError
from tidal.http.server import Response

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok"


class FakeApi(ThreadedServer):
    """The control plane's API as the commands read it: many events, a log that grows, a changing top."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = [f"line {i}" for i in range(5)]
        self.top_calls = 0

    def handle(self, req):
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return Response(401, b'{"error": "token"}')
        query = {k: v[0] for k, v in parse_qs(req.query).items()}
        if req.path == "/api/v1/events":
            return Response(200, orjson.dumps([{"id": i, "time": 1.7e9 + i, "kind": "ScaledOut", "object": "service/s",
                                                "message": "x" * 60} for i in range(3000)]))
        if req.path == "/api/v1/logs/s":
            tail = int(query.get("tail", 100))
            return Response(200, orjson.dumps({"logs": [{"replica": "s-1", "state": "ready",
                                                         "lines": self.log[-tail:]}]}))
        if req.path == "/api/v1/top":
            self.top_calls += 1
            return Response(200, orjson.dumps({
                "services": [], "nodes": [], "gateway": None,
                "cost": {"total": 0.0, "spot": 0.0, "on_demand": 0.0, "all_on_demand": 0.0,
                         "savings_ratio": 0.0}}))
        return Response(404, b'{"error": "no such path"}')


@pytest.fixture
def api():
    s = FakeApi()
    s.start()
    yield s
    s.stop()


def _env(api: FakeApi, tmp_path: Path) -> dict:
    return {**os.environ, "TIDAL_API": f"http://127.0.0.1:{api.server.port}", "TIDAL_TOKEN": TOKEN,
            "TIDAL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}


# -- a closed pipe

@pytest.mark.parametrize("argv", [["events"], ["events", "--help"], ["serve", "tensorflow", "--help"]])
def test_a_closed_pipe_ends_quietly(api, tmp_path, argv):
    """`tidal events | head`: the reader is gone before the output is; no traceback, no "Exception ignored"."""
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write that reaches the pipe fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "tidal", *argv], stdout=write, stderr=subprocess.PIPE,
                              text=True, env=_env(api, tmp_path), timeout=60)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode in (0, 141)


def test_events_into_head_prints_the_first_line(api, tmp_path):
    done = subprocess.run(f"{sys.executable} -m tidal events | head -1", shell=True, capture_output=True,
                          text=True, env=_env(api, tmp_path), timeout=60)
    assert done.stdout.split() == ["TIME", "KIND", "OBJECT", "MESSAGE"]
    assert done.stderr == ""


# -- apply's YAML

@pytest.mark.parametrize("text,said", [
    ("kind: Volume\nspec:\n  name: a\n   url: b\n", ":4:7: not valid YAML: mapping values are not allowed here"),
    ("kind: Volume\nspec: [1, 2\n", ":3:1: not valid YAML: expected ',' or ']'"),
    ("kind: Volume\n\tspec: {}\n", ":2:1: not valid YAML: found character '\\t'"),
    ("", ": no documents (empty, or only comments): nothing applied"),
    ("# just a comment\n---\n", ": no documents (empty, or only comments): nothing applied"),
    ("- a\n- b\n", ": every document needs a kind"),
])
def test_apply_says_where_the_yaml_is_wrong(tmp_path, text, said):
    path = tmp_path / "doc.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as exc:
        load_documents([str(path)])
    assert str(exc.value).startswith(f"{path}{said}")


def test_apply_reads_a_good_file(tmp_path):
    path = tmp_path / "doc.yaml"
    path.write_text("kind: Volume\nspec: {name: a, url: 'file:///x'}\n", encoding="utf-8")
    assert load_documents([str(path)]) == [{"kind": "Volume", "spec": {"name": "a", "url": "file:///x"}}]


# -- labels and ports

@pytest.mark.parametrize("labels,text", [
    ({"inference": "tensorflow"}, "inference=tensorflow"),
    ({"a": "1", "b": "2"}, "a=1,b=2"),
    ({}, "-"),
    (None, "-"),
])
def test_labels_print_as_key_values(labels, text):
    assert labels_text(labels) == text


@pytest.mark.parametrize("replica,shown", [
    ({"port": 8600, "state": "ready"}, "8600"),
    ({"port": 8600, "state": "notified"}, "8600"),
    ({"port": 8600, "state": "draining"}, "8600"),
    ({"port": 8600, "state": "starting"}, "-"),
    ({"port": None, "state": "pending"}, "-"),
    ({"port": 8600, "state": "stopped"}, "-"),
    ({"port": 8600, "state": "failed"}, "-"),
])
def test_a_port_shows_only_where_something_listens(replica, shown):
    assert replica_port(replica) == shown


# -- logs -f

@pytest.mark.parametrize("seen,now,whole,new", [
    ([], ["a", "b"], False, ["a", "b"]),
    ([], ["a", "b"], True, ["a", "b"]),
    (["a", "b"], ["a", "b"], False, []),
    (["a", "b"], ["a", "b", "c"], False, ["c"]),  # the window grew
    (["a", "b", "c"], ["b", "c", "d"], False, ["d"]),  # the window slid
    (["b", "c"], ["a", "b", "c", "d", "e"], False, ["d", "e"]),  # a short tail, then a long poll
    (["x", "x"], ["x", "x", "x"], False, []),  # repeated lines in full windows: the most overlap
    (["x", "x"], ["x", "x", "x"], True, ["x"]),  # ... but a whole log that grew grew
    (["a", "b"], ["c", "d"], False, ["c", "d"]),  # nothing in common (the replica started over)
    (["a", "b"], ["c", "d"], True, ["c", "d"]),
    (["a", "b"], [], False, []),
])
def test_new_lines(seen, now, whole, new):
    assert new_lines(seen, now, whole=whole) == new


def _read_until(stream, predicate, timeout=20.0) -> list[str]:
    lines, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        line = stream.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if predicate(lines):
            return lines
    raise AssertionError(f"did not see it; got {lines}")


def test_logs_follow_prints_new_lines_once_until_ctrl_c(api, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tidal", "logs", "s", "-f", "--tail", "3", "--interval", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(api, tmp_path))
    try:
        first = _read_until(proc.stdout, lambda ls: len(ls) == 3)
        assert first == ["line 2", "line 3", "line 4"]
        api.log += ["line 5", "line 6"]
        assert _read_until(proc.stdout, lambda ls: len(ls) == 2) == ["line 5", "line 6"]
        api.log += ["line 7"]
        assert _read_until(proc.stdout, lambda ls: len(ls) == 1) == ["line 7"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err
    assert "line" not in out  # nothing printed twice after the last new line


def test_top_watch_redraws_until_ctrl_c(api, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tidal", "top", "--watch", "0.05"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(api, tmp_path))
    try:
        _read_until(proc.stdout, lambda ls: sum(line.startswith("SERVICE") for line in ls) >= 3)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and err == ""
    assert api.top_calls >= 3


def test_top_watch_refuses_a_non_positive_period(api, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tidal", "top", "--watch", "0"], capture_output=True, text=True,
                          env=_env(api, tmp_path), timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "tidal top: error: --watch takes a positive number of seconds"
