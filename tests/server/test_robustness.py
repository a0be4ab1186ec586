"""Robustness: 10,000+ generated bad requests against a running model server, each answered 4xx, no crash."""

from __future__ import annotations

import json
import random
import socket
import time

import httptools
import orjson
import pytest

from tests.server.procs import ServerProcess

pytestmark = pytest.mark.e2e

N_REQUESTS = 10_000
CONNECTIONS = 8
WINDOW = 64  # requests written before reading their answers (pipelining)
MAX_BODY = 64 * 1024

CONTENT_TYPES = [None, "application/json", "text/plain", "application/x-www-form-urlencoded",
                 "application/octet-stream", "multipart/form-data; boundary=x", "garbage/thing", "application/json; charset=latin-1"]
WRONG_VALUES = [None, True, False, "x", {"a": 1}, [], [[1.0]], {"b64": "!!"}, 1e39, 2 ** 40, ""]
BAD_JSON = [b"", b"{", b"}", b"[", b"nul", b"{'instances': [1]}", b'{"instances": [1,]}', b"\xff\xfe",
            b'{"instances": [1.0] "x": 1}', b'{"a":' * 2000, b"NaN", b"[1, 2]", b'"string"', b"42"]


def dumps(doc) -> bytes:
    return json.dumps(doc).encode()  # the stdlib writes integers of any size


def _truncated(rng: random.Random, doc) -> bytes:
    raw = dumps(doc)
    return raw[:rng.randrange(1, len(raw) - 1)]


def generate(rng: random.Random) -> tuple[str, str, dict, bytes]:
    """One request that must be refused with a 4xx (by construction, never a valid one)."""
    kind = rng.randrange(14)
    hpt = "/v1/models/half_plus_two"
    headers: dict[str, str] = {}
    ctype = rng.choice(CONTENT_TYPES)
    if ctype is not None:
        headers["Content-Type"] = ctype
    if kind == 0:  # malformed JSON
        return "POST", hpt + ":predict", headers, rng.choice(BAD_JSON)
    if kind == 1:  # truncated valid requests
        doc = rng.choice([{"instances": [rng.random() for _ in range(rng.randrange(1, 9))]},
                          {"inputs": {"x": [1.0, 2.0]}},
                          {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}])
        path = rng.choice([hpt + ":predict", "/v2/models/half_plus_two/infer"])
        return "POST", path, headers, _truncated(rng, doc)
    if kind == 2:  # wrong element types
        bad = rng.choice(WRONG_VALUES[1:])
        values = [1.0] * rng.randrange(0, 4) + [bad] + [2.0] * rng.randrange(0, 4)
        key = rng.choice(["instances", "inputs"])
        if bad == [[1.0]] or bad == []:
            values = [[1.0, 2.0], bad]
        return "POST", hpt + ":predict", headers, dumps({key: values})
    if kind == 3:  # ragged or too deep
        doc = rng.choice([{"inputs": [[1.0, 2.0], [3.0]]}, {"instances": [[1.0], 2.0]},
                          {"instances": [[[1.0]]]}, {"inputs": [[1.0], [[2.0]]]}])
        return "POST", hpt + ":predict", headers, dumps(doc)
    if kind == 4:  # unknown model, version or label
        path = rng.choice([f"/v1/models/m{rng.randrange(10 ** 6)}:predict", hpt + f"/versions/{rng.randrange(1000, 10 ** 9)}:predict",
                           hpt + f"/labels/l{rng.randrange(10 ** 6)}:predict",
                           f"/v2/models/m{rng.randrange(10 ** 6)}/infer"])
        return "POST", path, headers, dumps({"instances": [1.0]})
    if kind == 5:  # bad routes and methods
        method, path = rng.choice([("POST", hpt), ("GET", hpt + ":predict"), ("POST", hpt + ":explain"),
                                   ("DELETE", hpt), ("PUT", "/v2/models/half_plus_two/infer"),
                                   ("GET", "/v2/models/half_plus_two/infer"), ("GET", "/nothing/here"),
                                   ("GET", "/v1/models"), ("POST", "/v1/models/x/versions/1/labels/y:predict"),
                                   ("GET", f"/v2/models/m{rng.randrange(10 ** 6)}/ready")])
        return method, path, headers, b"{}"
    if kind == 6:  # structure: both keys, neither, wrong containers, bad signature
        doc = rng.choice([{"instances": [1.0], "inputs": [1.0]}, {"foo": 1}, {"instances": 1.0},
                          {"instances": []}, {"signature_name": 5, "instances": [1.0]},
                          {"signature_name": "nope", "instances": [1.0]}, {"inputs": {"y": [1.0]}}])
        return "POST", hpt + ":predict", headers, dumps(doc)
    if kind == 7:  # V2 JSON errors
        inp = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}
        field, value = rng.choice([("datatype", "FP8"), ("datatype", 3), ("shape", [-1]), ("shape", "2"),
                                   ("shape", [3]), ("data", ["a", "b"]), ("data", None), ("name", ""),
                                   ("name", "nope"), ("data", [[1.0], [2.0, 3.0]])])
        inp[field] = value
        doc = rng.choice([{"inputs": [inp]}, {"inputs": [inp], "outputs": [{"name": "zz"}]}, {"inputs": []},
                          {"inputs": "x"}, [inp]])
        return "POST", "/v2/models/half_plus_two/infer", headers, dumps(doc)
    if kind == 8:  # V2 binary extension errors
        n = rng.randrange(1, 5)
        size = n * 4 + rng.choice([-4, -1, 1, 3, 8])
        head = dumps({"inputs": [{"name": "x", "shape": [n], "datatype": "FP32",
                                         "parameters": {"binary_data_size": max(size, 0)}}]})
        tail = bytes(rng.randrange(256) for _ in range(max(n * 4 + rng.choice([-2, 0, 5]), 0)))
        if size >= 0 and len(tail) == size == n * 4:
            tail += b"\0"
        length = rng.choice([str(len(head)), str(len(head) + len(tail) + 10), "-1", "abc", str(len(head) - 1)])
        headers["Inference-Header-Content-Length"] = length
        return "POST", "/v2/models/half_plus_two/infer", headers, head + tail
    if kind == 9:  # sentiment: numbers and malformed base64 for strings
        value = rng.choice([1, 2.5, True, None, {"b64": "%%%"}, {"b64": 5}, {"x": "y"}, [["a"], "b"]])
        return "POST", "/v1/models/sentiment:predict", headers, dumps({"instances": [value]})
    if kind == 10:  # classify/regress misuse
        doc = rng.choice([{"examples": []}, {"examples": {}}, {"context": 1, "examples": [{}]},
                          {"examples": [1]}, {"examples": [{"y": 1.0}]}, {"examples": [{"x": None}]},
                          {"examples": [{"x": "s"}]}, {}])
        return "POST", hpt + rng.choice([":classify", ":regress"]), headers, dumps(doc)
    if kind == 11:  # content encodings that are wrong
        headers["Content-Encoding"] = rng.choice(["gzip", "deflate", "br", "x-unknown"])
        return "POST", "/v2/models/half_plus_two/infer", headers, bytes(rng.randrange(256) for _ in range(20))
    if kind == 12:  # random bytes
        return "POST", rng.choice([hpt + ":predict", "/v2/models/half_plus_two/infer"]), headers, \
            b"\x00" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    # kind 13: number edge cases for float32
    value = rng.choice([16777217, 1e39, -1e300, 2 ** 63, True])
    return "POST", hpt + ":predict", headers, dumps({"inputs": [1.0, value]})


def encode(method: str, path: str, headers: dict, body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Responses:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.statuses: list[int] = []

    def on_message_complete(self) -> None:
        self.statuses.append(self.parser.get_status_code())


def pipeline(port: int, requests: list[bytes]) -> list[int]:
    """Send every request on one keep-alive connection, WINDOW at a time; the statuses in order."""
    got = _Responses()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for start in range(0, len(requests), WINDOW):
            chunk = requests[start:start + WINDOW]
            sock.sendall(b"".join(chunk))
            want = start + len(chunk)
            while len(got.statuses) < want:
                data = sock.recv(1 << 16)
                if not data:
                    raise AssertionError(f"server closed the connection after {len(got.statuses)} answers")
                got.parser.feed_data(data)
    return got.statuses


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_base, sentiment_base):
    root = tmp_path_factory.mktemp("robust")
    config = root / "models.config"
    config.write_text(f"model_config_list {{ config {{ name: 'half_plus_two' base_path: '{half_plus_two_base}' }}"
                      f" config {{ name: 'sentiment' base_path: '{sentiment_base}' }} }}")
    proc = ServerProcess(["--model_config_file", str(config), "--rest_api_max_body_bytes", str(MAX_BODY)],
                         root / "server.log").start()
    yield proc
    assert proc.terminate() == 0, proc.log()


def test_ten_thousand_bad_requests_all_4xx(server):
    rng = random.Random(20261125)
    generated = [generate(rng) for _ in range(N_REQUESTS)]
    per_conn = [[encode(*g) for g in generated[i::CONNECTIONS]] for i in range(CONNECTIONS)]
    t0 = time.monotonic()
    statuses: list[int] = []
    order: list[tuple] = []
    for i, reqs in enumerate(per_conn):
        statuses += pipeline(server.port, reqs)
        order += generated[i::CONNECTIONS]
    elapsed = time.monotonic() - t0
    assert len(statuses) == N_REQUESTS
    bad = [(s, g[0], g[1], g[3][:80]) for s, g in zip(statuses, order) if not 400 <= s < 500]
    assert not bad, f"{len(bad)} requests not answered 4xx, e.g. {bad[:5]}"
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()
    print(f"{N_REQUESTS} bad requests in {elapsed:.1f}s")
    status, _, body = server.request("POST", "/v1/models/half_plus_two:predict", b'{"instances": [1.0]}')
    assert status == 200 and orjson.loads(body) == {"predictions": [2.5]}


def _one_shot(port: int, raw: bytes, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        if not read:
            return b""
        chunks = []
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_connection_level_abuse(server):
    # A declared length over the limit is refused before the body is read.
    answer = _one_shot(server.port, b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nContent-Length: "
                       + str(MAX_BODY * 10).encode() + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than the limit" in answer
    # A chunked body that grows past it is cut off; the client may see the 413 or a reset.
    chunk = b"%x\r\n%s\r\n" % (16384, b"1," * 8192)
    raw = (b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunk * (MAX_BODY // 16384 + 2) + b"0\r\n\r\n")
    try:
        answer = _one_shot(server.port, raw)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:60]
    except (ConnectionResetError, BrokenPipeError):
        pass
    for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"POST /v1 HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        answer = _one_shot(server.port, raw)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:60]
    # Clients that go away: mid-body, and right after sending a whole request.
    for _ in range(50):
        _one_shot(server.port, b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
                  read=False)
        _one_shot(server.port, encode("POST", "/v1/models/sentiment:predict", {},
                                      orjson.dumps({"instances": ["fine"] * 50})), read=False)
    status, _, _ = server.request("GET", "/v2/health/ready")
    assert status == 200 and server.proc.poll() is None

