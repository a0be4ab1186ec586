"""gRPC served on the event loop (tidal/http/h2.py, tidal/server/grpc_loop.py): the wire details grpcio's clients
rely on, and HTTP/2 input that is wrong on purpose, against a real model server."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import hpack
import pytest

from tidal.http import h2frames as h2
from tidal.server.grpc_loop import _percent, grpc_timeout
from tests.server.procs import ServerProcess, build_slow_model, free_port

grpc = pytest.importorskip("grpc")

from tidal.server.protos import open_inference_grpc_pb2 as pb  # noqa: E402
from tidal.server.protos import open_inference_grpc_pb2_grpc as pb_grpc  # noqa: E402

LIMIT = 1 << 20  # --rest_api_max_body_bytes: the largest gRPC message too


@pytest.mark.parametrize("value, seconds", [
    (b"5S", 5.0), (b"250m", 0.25), (b"2M", 120.0), (b"1H", 3600.0), (b"100u", 1e-4), (b"7n", 7e-9),
    (None, None), (b"", None), (b"S", None), (b"5x", None), (b"-5S", None), (b"123456789S", None),
])
def test_grpc_timeout_header(value, seconds):
    got = grpc_timeout(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


@pytest.mark.parametrize("message, wire", [
    ("model not found", b"model not found"),
    ("100% sure", b"100%25 sure"),
    ("caf\u00e9\n", b"caf%C3%A9%0A"),
])
def test_grpc_message_is_percent_encoded(message, wire):
    assert _percent(message) == wire


def test_hpack_literals_decode_as_written():
    block = h2.literal(b"grpc-status", b"3") + h2.literal(b"grpc-message", b"x" * 300)
    assert hpack.Decoder().decode(block, raw=True) == [(b"grpc-status", b"3"), (b"grpc-message", b"x" * 300)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, half_plus_two_base):
    root = tmp_path_factory.mktemp("grpc_loop")
    build_slow_model(root / "slow")
    config = root / "models.config"
    config.write_text(f"model_config_list {{ config {{ name: 'hpt' base_path: '{half_plus_two_base}' }} "
                      f"config {{ name: 'slow' base_path: '{root / 'slow'}' }} }}")
    port = free_port()
    proc = ServerProcess(["--port", str(port), "--model_config_file", str(config), "--rest_api_max_body_bytes",
                          str(LIMIT)], root / "server.log").start(timeout=120)
    proc.grpc_port = port
    yield proc
    assert proc.terminate() == 0, proc.log()


def infer_request(model="hpt", values=(2.0,)) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[len(values)])
    request.raw_input_contents.append(struct.pack(f"<{len(values)}f", *values))
    return request


def y_of(response) -> list[float]:
    raw = response.raw_output_contents[0]
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.e2e
def test_a_gzip_compressed_call_is_answered(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", compression=grpc.Compression.Gzip) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert y_of(stub.ModelInfer(infer_request(values=[1.0] * 1000), timeout=10)) == [2.5] * 1000


@pytest.mark.e2e
def test_a_message_over_the_limit_is_resource_exhausted(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(infer_request(values=[1.0] * (LIMIT // 4 + 1)), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Received message larger than max" in info.value.details()
    assert y_of(stub.ModelInfer(infer_request(), timeout=10)) == [3.0]


@pytest.mark.e2e
def test_an_unknown_method_is_unimplemented(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/Nope")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def slow_request(n: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="n", datatype="INT64", shape=[1]).contents.int64_contents.append(n)
    return request


def rows_for(stub, seconds: float) -> int:
    """Rows of the slow model that compute for about `seconds` on this machine, whatever its speed."""
    t0 = time.monotonic()
    stub.ModelInfer(slow_request(500), timeout=60)
    return max(500, min(20000, int(500 * seconds / max(time.monotonic() - t0, 1e-3))))


@pytest.mark.e2e
def test_a_deadline_stops_the_call_and_the_server_goes_on(server, stub):
    n = rows_for(stub, 1.5)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(slow_request(n), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert y_of(stub.ModelInfer(infer_request(), timeout=30)) == [3.0]
    assert "Traceback" not in server.log()


@pytest.mark.e2e
def test_an_error_status_and_message_reach_the_client(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(infer_request(model="nope"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in info.value.details()


# -- HTTP/2 that is wrong on purpose -------------------------------------------------------

def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10)
    sock.sendall(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))
    return sock


def _frames_until_closed(sock: socket.socket) -> list[tuple[int, int, int, bytes]]:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    frames, pos = [], 0
    while len(data) - pos >= 9:
        hi, lo, kind, flags, sid = struct.unpack_from(">HBBBI", data, pos)
        length = (hi << 8) | lo
        frames.append((kind, flags, sid, data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return frames


def _goaway_code(frames) -> int | None:
    codes = [struct.unpack_from(">II", payload)[1] for kind, _, _, payload in frames if kind == h2.GOAWAY]
    return codes[0] if codes else None


def _headers(path: bytes) -> bytes:
    return hpack.Encoder().encode([(b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
                                   (b":authority", b"x"), (b"content-type", b"application/grpc"),
                                   (b"te", b"trailers")])


@pytest.mark.parametrize("bad, code", [
    (h2.frame(h2.DATA, 0, 0, b"x"), h2.PROTOCOL_ERROR),
    (h2.frame(h2.HEADERS, h2.END_HEADERS, 1, b"\xff\xff\xff\xff"), h2.COMPRESSION_ERROR),
    (h2.frame(h2.HEADERS, h2.END_HEADERS, 2, _headers(b"/x")), h2.PROTOCOL_ERROR),
    (h2.frame(h2.CONTINUATION, h2.END_HEADERS, 1, b""), h2.PROTOCOL_ERROR),
    (h2.frame(h2.PING, 0, 0, b"short"), h2.FRAME_SIZE_ERROR),
    (h2.frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)), h2.PROTOCOL_ERROR),
    (h2.frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.MAX_FRAME_SIZE, 10)), h2.PROTOCOL_ERROR),
    (struct.pack(">HBBBI", 0xFFFF, 0, h2.DATA, 0, 1), h2.FRAME_SIZE_ERROR),  # a 16 MiB frame announced
])
@pytest.mark.e2e
def test_a_protocol_error_closes_the_connection_with_goaway(server, bad, code):
    with _connect(server) as sock:
        sock.sendall(bad)
        assert _goaway_code(_frames_until_closed(sock)) == code


@pytest.mark.e2e
def test_http1_on_the_grpc_port_is_closed(server):
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _goaway_code(_frames_until_closed(sock)) == h2.PROTOCOL_ERROR


@pytest.mark.e2e
def test_a_reset_stream_is_dropped_and_the_connection_goes_on(server):
    message = infer_request().SerializeToString()
    body = struct.pack(">BI", 0, len(message)) + message
    encoder = hpack.Encoder()
    block = encoder.encode([(b":method", b"POST"), (b":scheme", b"http"),
                            (b":path", b"/inference.GRPCInferenceService/ModelInfer"), (b":authority", b"x"),
                            (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    with _connect(server) as sock:
        sock.sendall(h2.frame(h2.HEADERS, h2.END_HEADERS, 1, block) + h2.frame(h2.DATA, 0, 1, body[:3]) +
                     h2.frame(h2.RST_STREAM, 0, 1, struct.pack(">I", h2.CANCEL)) +
                     h2.frame(h2.HEADERS, h2.END_HEADERS, 3, encoder.encode([
                         (b":method", b"POST"), (b":scheme", b"http"),
                         (b":path", b"/inference.GRPCInferenceService/ModelInfer"), (b":authority", b"x"),
                         (b"content-type", b"application/grpc"), (b"te", b"trailers")])) +
                     h2.frame(h2.DATA, h2.END_STREAM, 3, body) + h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", 3, 0)))
        sock.settimeout(3)
        frames = []
        decoder = hpack.Decoder()
        data = b""
        while not any(k == h2.HEADERS and f & h2.END_STREAM for k, f, _, _ in frames):
            data += sock.recv(65536)
            frames, pos = [], 0
            while len(data) - pos >= 9:
                hi, lo, kind, flags, sid = struct.unpack_from(">HBBBI", data, pos)
                frames.append((kind, flags, sid, data[pos + 9:pos + 9 + ((hi << 8) | lo)]))
                pos += 9 + ((hi << 8) | lo)
    assert {sid for kind, _, sid, _ in frames if kind in (h2.HEADERS, h2.DATA)} == {3}
    fields = [dict(decoder.decode(p, raw=True)) for k, _, _, p in frames if k == h2.HEADERS]
    assert fields[-1][b"grpc-status"] == b"0"
    answer = pb.ModelInferResponse.FromString(b"".join(p for k, _, _, p in frames if k == h2.DATA)[5:])
    assert y_of(answer) == [3.0]


@pytest.mark.e2e
def test_random_frames_never_take_the_server_down(server, stub):
    rng = random.Random(11)
    for _ in range(150):
        with _connect(server) as sock:
            frames = b"".join(h2.frame(rng.randrange(11), rng.randrange(256), rng.choice([0, 1, 2, 3, 5, 7]),
                                       rng.randbytes(rng.choice([0, 1, 4, 5, 6, 8, 12, 40])))
                              for _ in range(rng.randrange(1, 6)))
            sock.sendall(frames + h2.frame(h2.GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
            sock.settimeout(2)
            try:
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
            except OSError:
                pass
    assert y_of(stub.ModelInfer(infer_request(), timeout=10)) == [3.0]
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()


@pytest.mark.e2e
def test_grpcio_server_remains_as_a_fallback(tmp_path, half_plus_two_base):
    port = free_port()
    proc = ServerProcess(["--port", str(port), "--model_name", "hpt", "--model_base_path", str(half_plus_two_base),
                          "--grpc_server", "grpcio"], tmp_path / "server.log").start(timeout=120)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert y_of(stub.ModelInfer(infer_request(), timeout=10)) == [3.0]
    finally:
        assert proc.terminate() == 0, proc.log()


@pytest.mark.e2e
def test_sigterm_lets_a_call_in_flight_finish(tmp_path):
    build_slow_model(tmp_path / "slow")
    port = free_port()
    proc = ServerProcess(["--port", str(port), "--model_name", "slow", "--model_base_path", str(tmp_path / "slow")],
                         tmp_path / "server.log").start(timeout=120)
    answer = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        n = rows_for(stub, 2.0)
        caller = threading.Thread(target=lambda: answer.update(y=stub.ModelInfer(slow_request(n), timeout=60)))
        caller.start()
        time.sleep(0.3)  # the call is being computed
        code = proc.terminate()
        caller.join(30)
    assert code == 0, proc.log()
    assert list(answer["y"].outputs[0].contents.fp32_contents) == [1.0]
