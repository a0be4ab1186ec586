"""The hostile-input generator: seeded, raw HTTP/1.1 byte strings that attack parsing, framing and JSON handling."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass(frozen=True)
class Target:
    """What the generator aims at: the Host to send, extra header lines (a token), and the paths that take JSON."""

    name: str
    host: str
    json_paths: tuple[str, ...]
    get_paths: tuple[str, ...]
    v2_infer: str | None = None
    headers: str = ""  # "Name: value\r\n" lines sent with every case (authorization for the API)
    normal_path: str = "/"
    normal_body: bytes | None = None

    def normal(self) -> bytes:
        """One well-formed keep-alive request, what the prober sends."""
        if self.normal_body is None:
            return f"GET {self.normal_path} HTTP/1.1\r\nHost: {self.host}\r\n{self.headers}\r\n".encode()
        return (f"POST {self.normal_path} HTTP/1.1\r\nHost: {self.host}\r\n{self.headers}Content-Type: application/json"
                f"\r\nContent-Length: {len(self.normal_body)}\r\n\r\n").encode() + self.normal_body


@dataclass(frozen=True)
class Case:
    kind: str
    data: bytes
    # Half-close after sending: for truncated bodies, so the server sees the end of the stream.
    half_close: bool = False
    extra: dict = field(default_factory=dict)


def _req(t: Target, method: str, path: str, body: bytes | None = None, headers: str = "", *,
         length: int | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {t.host}\r\n{t.headers}{headers}Connection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body) if length is None else length}\r\n"
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + (body or b"")


def _json_path(rng: random.Random, t: Target) -> str:
    return rng.choice(t.json_paths)


def huge_request_line(rng, t):
    n = rng.choice([8 * 1024 + 1, 16 * 1024, 64 * 1024, 300 * 1024])
    return Case("huge request line", f"GET /{'a' * n} HTTP/1.1\r\nHost: {t.host}\r\n\r\n".encode())


def huge_header(rng, t):
    n = rng.choice([8 * 1024 + 1, 20 * 1024, 64 * 1024, 256 * 1024, 2 * 1024 * 1024])
    return Case("huge header", _req(t, "GET", rng.choice(t.get_paths), headers=f"X-Big: {'b' * n}\r\n"))


def many_headers(rng, t):
    n = rng.choice([101, 300, 2000])
    return Case("many headers", _req(t, "GET", rng.choice(t.get_paths),
                                     headers="".join(f"X-H{i}: v\r\n" for i in range(n))))


def big_header_block(rng, t):
    lines = "".join(f"X-C{i}: {'c' * 8000}\r\n" for i in range(rng.choice([5, 8, 40])))
    return Case("header block over 32 KiB", _req(t, "GET", rng.choice(t.get_paths), headers=lines))


GARBLED = [
    b"\x00\x01\x02\x03\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET  /  HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    b"GET / HTTP/1.1\r\n: empty\r\n\r\n", b"GET / HTTP/1.1\r\nX:\x00y\r\n\r\n", b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\n Folded: yes\r\n\r\n", b"\r\n\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n", b"GET /\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n\xff", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nHost: x\r\n\r\n",
]


def garbled(rng, t):
    # Half-closed: some of these are a request still to come (blank lines), which a server rightly waits for.
    if rng.random() < 0.5:
        return Case("garbled request", rng.choice(GARBLED), half_close=True)
    return Case("garbled request", bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))) + b"\r\n\r\n",
                half_close=True)


def bad_method(rng, t):
    m = rng.choice(["FOO", "BREW", "PROPFIND", "TRACE", "OPTIONS", "PATCH", "DELETE", "PUT", "HEAD", "M" * 100,
                    "CONNECT"])
    path = f"{t.host}:443" if m == "CONNECT" else rng.choice(t.get_paths + t.json_paths)
    return Case("bad method", _req(t, m, path, b"{}" if rng.random() < 0.5 and m != "CONNECT" else None))


def bad_framing(rng, t):
    p = _json_path(rng, t)
    b = b'{"instances": [1.0]}'
    variants = [
        f"Content-Length: {len(b)}\r\nTransfer-Encoding: chunked\r\n",
        f"Content-Length: {len(b)}\r\nContent-Length: {len(b) + 5}\r\n",
        "Content-Length: -1\r\n", "Content-Length: 1e3\r\n", "Content-Length: 99999999999999999999999\r\n",
        "Content-Length: 0x10\r\n", "Transfer-Encoding: gzip\r\n", "Transfer-Encoding: chunked, identity\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "Content-Length:  20 \r\n",
    ]
    head = (f"POST {p} HTTP/1.1\r\nHost: {t.host}\r\n{t.headers}Connection: close\r\n{rng.choice(variants)}\r\n")
    tail = rng.choice([b, b"zz\r\n" + b + b"\r\n0\r\n\r\n", b"14\r\n" + b + b"\r\n0\r\n\r\n", b"-5\r\nx\r\n"])
    # Half-closed: a body shorter than its framing says is one a server rightly waits for.
    return Case("bad framing", head.encode() + tail, half_close=True)


def truncated_body(rng, t):
    body = json.dumps({"instances": [1.0] * rng.randint(1, 100)}).encode()
    cut = rng.randint(0, len(body) - 1)
    data = _req(t, "POST", _json_path(rng, t), body, length=len(body))
    return Case("truncated body", data[:len(data) - len(body) + cut], half_close=True)


def _nested(depth: int, obj: bool) -> bytes:
    if obj:
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"1" + b"]" * depth


INVALID_JSON = [b"", b"{", b"}", b"[", b"nul", b"{\"instances\": [1.0,]}", b"{'instances': [1]}", b"NaN",
                b"\xef\xbb\xbf{\"instances\": [1.0]}", b"{\"instances\": [1.0]} trailing", b"\xff\xfe\x00",
                b"{\"instances\": [NaN, Infinity]}", b"{\"a\": \"\\ud800\"}", b"\"just a string\"", b"12",
                b"{\"instances\": [1.0]" + b" " * 10000]


def invalid_json(rng, t):
    body = rng.choice(INVALID_JSON) if rng.random() < 0.7 else bytes(rng.getrandbits(8) for _ in range(64))
    return Case("invalid JSON", _req(t, "POST", _json_path(rng, t), body))


def deep_nesting(rng, t):
    depth = rng.choice([200, 1000, 5000, 100_000])
    inner = _nested(depth, rng.random() < 0.5)
    body = rng.choice([inner, b'{"instances": ' + inner + b"}", b'{"inputs": ' + inner + b"}"])
    return Case("deep nesting", _req(t, "POST", _json_path(rng, t), body))


WRONG_TYPES = [
    {"instances": "x"}, {"instances": {"a": 1}}, {"instances": [True, None, "s"]}, {"instances": [[1], 2]},
    {"inputs": {"x": {"y": 1}}}, {"inputs": 5}, {"signature_name": 5, "instances": [1.0]}, {"instances": []},
    {"instances": [[]]}, {"instances": [{"b64": 5}]}, {"instances": [{"b64": "!!!not base64"}]}, [1, 2, 3],
    {"instances": [1.0], "inputs": [1.0]}, {"name": 5}, {"name": ["x"], "spot": "maybe"}, {"replicas": -1},
    {"inputs": [{"name": 1, "shape": "x", "datatype": 2, "data": {}}]}, None, {"instances": [[1.0] * 3, [1.0]]},
]


def wrong_types(rng, t):
    return Case("wrong types", _req(t, "POST", _json_path(rng, t), json.dumps(rng.choice(WRONG_TYPES)).encode()))


def huge_numbers(rng, t):
    num = rng.choice(["1e999", "-1e999", "123456789012345678901234567890", "9" * 5000, "1e-999", "-0",
                      "0." + "1" * 3000, "1E400", "18446744073709551616"])
    body = rng.choice([f'{{"instances": [{num}]}}', f'{{"inputs": [{num}]}}',
                       f'{{"inputs": [{{"name": "x", "shape": [{num}], "datatype": "FP32", "data": [1]}}]}}',
                       f'{{"name": "s", "replicas": {num}}}'])
    return Case("huge numbers", _req(t, "POST", _json_path(rng, t), body.encode()))


V2_SHAPES = [
    ([2], "FP32", [1.0]), ([1], "FP99", [1.0]), ([-1], "FP32", [1.0]), ([10**12], "FP32", [1.0]),
    ([1], "BYTES", [1.0]), ([1], "BOOL", ["yes"]), ([2, 3], "FP32", [[1.0, 2.0]]), ([1], "FP16", ["x"]),
    ([65536, 65536], "FP64", [0.0]), ([1], "INT8", [1000]), ([1], "UINT64", [-1]), ([], "FP32", []),
    ([1], "FP32", None), ("1", "FP32", [1.0]), ([1.5], "FP32", [1.0]), ([1], "", [1.0]), ([2**63], "INT64", [1]),
]


def bad_v2(rng, t):
    shape, dtype, data = rng.choice(V2_SHAPES)
    inp = {"name": rng.choice(["x", "nope", "", "x" * 10000]), "shape": shape, "datatype": dtype}
    if data is not None:
        inp["data"] = data
    body = {"inputs": [inp]}
    if rng.random() < 0.3:
        body["outputs"] = [{"name": rng.choice(["y", "missing", 5])}]
    path = t.v2_infer or _json_path(rng, t)
    return Case("bad V2 tensor", _req(t, "POST", path, json.dumps(body).encode()))


TRAVERSAL = ["/../../etc/passwd", "/v1/models/../../../etc/passwd", "/v1/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
             "/v2/models/..%2f..%2fetc/infer", "/v1/models/half_plus_two/versions/../../../x:predict",
             "/api/v1/../../etc/passwd", "/api/v1/logs/..%2f..%2ftoken", "/api/v1/logs/../token", "//etc/passwd",
             "/v1/models/%00:predict", "/%2e%2e/%2e%2e/", "/v1/models/half_plus_two/versions/-1",
             "/v1/models/half_plus_two/versions/99999999999999999999", "/v1/models/half_plus_two/labels/%00"]


def path_traversal(rng, t):
    p = rng.choice(TRAVERSAL)
    if rng.random() < 0.5:
        return Case("path traversal", _req(t, "GET", p))
    return Case("path traversal", _req(t, "POST", p + rng.choice(["", ":predict", "/infer"]), b'{"instances": [1.0]}'))


UNICODE = ["/v1/models/\u00e9\u00e8:predict", "/v1/models/\U0001f600:predict", "/v2/models/\u202e/infer",
           "/v1/models/%C0%AE%C0%AE:predict", "/v2/models/%ED%A0%80/ready", "/api/v1/services/\u0000x",
           "/v1/models/\udcff:predict", "/api/v1/services/%F0%9F%98%80"]


def unicode_case(rng, t):
    p = rng.choice(UNICODE)
    headers = rng.choice(["", "X-U: \u00e9\u00e8\u202e\r\n", "X-U: \udcff\udcfe\r\n"])
    body = rng.choice([None, '{"instances": ["\u00e9\U0001f600"]}'.encode(), b'{"instances": ["\xc3\x28"]}',
                       '{"name": "\U0001f600", "replicas": 1}'.encode()])
    return Case("unicode", _req(t, "POST" if body else "GET", p, body, headers))


def wrong_host(rng, t):
    host = rng.choice(["attacker.example", "attacker.example:8470", "localhost.attacker.example", "[::2]", ""])
    data = f"GET {rng.choice(t.get_paths)} HTTP/1.1\r\nHost: {host}\r\n{t.headers}Connection: close\r\n\r\n".encode()
    return Case("foreign Host", data)


def oversize_body(rng, t):
    declared = rng.choice([65 * 1024 * 1024, 2**40])
    data = _req(t, "POST", _json_path(rng, t), b"{", length=declared)
    return Case("declared body over the limit", data, half_close=True)


# (generator, weight): the heavy cases (megabytes of header) are rare so a 10,000-case run stays quick.
GENERATORS: list[tuple[Callable[[random.Random, Target], Case], int]] = [
    (huge_request_line, 4), (huge_header, 4), (many_headers, 4), (big_header_block, 3), (garbled, 10),
    (bad_method, 8), (bad_framing, 10), (truncated_body, 6), (invalid_json, 12), (deep_nesting, 6),
    (wrong_types, 10), (huge_numbers, 8), (bad_v2, 10), (path_traversal, 8), (unicode_case, 8),
    (wrong_host, 3), (oversize_body, 2),
]


def generate(target: Target, n: int, seed: int = 0) -> Iterator[Case]:
    """`n` cases for `target`, the same for the same seed."""
    rng = random.Random(seed)
    funcs = [g for g, _ in GENERATORS]
    weights = [w for _, w in GENERATORS]
    for _ in range(n):
        yield rng.choices(funcs, weights)[0](rng, target)
