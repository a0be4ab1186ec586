"""TF Serving's files end to end: a reloaded model config (file and gRPC), warmup records, the monitoring path,
the batcher's size limit and the REST timeout, on one `tidal model-server` process."""

from __future__ import annotations

import shutil
import threading
import time

import orjson
import pytest

pytest.importorskip("tensorflow_serving", reason="tensorflow-serving-api is not installed (pip install tidal[tensorflow])")
grpc = pytest.importorskip("grpc")

from tensorflow_serving.apis import (  # noqa: E402
    model_management_pb2, model_service_pb2_grpc, predict_pb2, prediction_log_pb2,
)

from tests.server.procs import ServerProcess, build_slow_model, free_port  # noqa: E402
from tests.server.test_tf_serving_testdata import testdata  # noqa: E402,F401  (the session fixture)

pytestmark = pytest.mark.e2e


def write_warmup(version_dir, requests) -> None:
    import tensorflow as tf

    extra = version_dir / "assets.extra"
    extra.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        for request in requests:
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())


def predict_x(x: float, model="warm", signature="") -> predict_pb2.PredictRequest:
    import tensorflow as tf

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[x]], dtype=tf.float32))
    return request


def config_text(entries: dict[str, str], extra: str = "") -> str:
    body = "".join(f"config {{ name: '{name}' base_path: '{path}' {extra if name == 'hpt' else ''} }}\n"
                   for name, path in entries.items())
    return f"model_config_list {{\n{body}}}\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, testdata):  # noqa: F811
    root = tmp_path_factory.mktemp("tfs_files")
    hpt = root / "hpt"
    for v in (123, 124):
        shutil.copytree(testdata / "saved_model_half_plus_two_cpu" / "123", hpt / str(v))
    warm = root / "warm"
    shutil.copytree(testdata / "saved_model_half_plus_two_cpu" / "123", warm / "1")
    write_warmup(warm / "1", [predict_x(1.0), predict_x(2.0, signature="serving_default")])
    bad = root / "bad_warmup"
    shutil.copytree(testdata / "saved_model_half_plus_two_cpu" / "123", bad / "1")
    write_warmup(bad / "1", [predict_x(1.0, signature="no_such_signature")])
    slow = root / "slow"
    build_slow_model(slow)
    paths = {"hpt": hpt, "warm": warm, "bad_warmup": bad, "slow": slow,
             "three": testdata / "saved_model_half_plus_three"}
    config = root / "models.config"
    config.write_text(config_text({k: paths[k] for k in ("hpt", "warm", "bad_warmup", "slow")}))
    (root / "monitoring.config").write_text('prometheus_config { enable: true path: "/custom/metrics" }')
    (root / "batching.config").write_text("max_batch_size { value: 4 } batch_timeout_micros { value: 0 }")
    grpc_port = free_port()
    proc = ServerProcess([
        "--port", str(grpc_port), "--model_config_file", str(config), "--model_config_file_poll_wait_seconds", "0.2",
        "--monitoring_config_file", str(root / "monitoring.config"), "--enable_batching",
        "--batching_parameters_file", str(root / "batching.config"), "--rest_api_timeout_in_ms", "300",
        "--grpc_max_threads", "8", "--grpc_channel_arguments", "grpc.max_connection_age_ms=60000",
        "--max_num_load_retries", "0", "--rest_api_num_threads", "4", "--tensorflow_intra_op_parallelism", "1",
    ], root / "server.log")
    # bad_warmup never becomes AVAILABLE, so readiness (every model available) never comes: wait for the others.
    proc_started = _start_without_readiness(proc)
    proc_started.grpc_address = f"127.0.0.1:{grpc_port}"
    proc_started.config = config
    proc_started.paths = paths
    yield proc_started
    assert proc.terminate() == 0, proc.log()


def _start_without_readiness(proc: ServerProcess) -> ServerProcess:
    import os
    import subprocess

    from tests.server.procs import REPO

    proc._log = open(proc.log_path, "wb")
    proc.proc = subprocess.Popen(proc.argv, stdout=proc._log, stderr=subprocess.STDOUT, cwd=REPO,
                                 env=dict(os.environ, PYTHONPATH=str(REPO)))
    wait_for(lambda: _status(proc, "warm") == ["AVAILABLE"] and _status(proc, "hpt") == ["AVAILABLE"]
             and _status(proc, "slow") == ["AVAILABLE"], proc, 180)
    return proc


def wait_for(condition, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.log()
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"condition not met after {timeout}s:\n{proc.log()[-3000:]}")


def _status(proc, name) -> list[str]:
    status, _, body = proc.request("GET", f"/v1/models/{name}")
    if status != 200:
        return []
    return [s["state"] for s in orjson.loads(body)["model_version_status"]]


def rest(proc, path, doc=None):
    status, _, body = proc.request("POST" if doc is not None else "GET", path,
                                   orjson.dumps(doc) if doc is not None else None)
    return status, body


def test_noted_flags_log_one_line(setup):
    assert "--rest_api_num_threads has no effect in tidal model-server" in setup.log()


def test_warmup_replayed_before_available_and_a_failing_warmup_keeps_the_version_out(setup):
    log = setup.log()
    assert "model warm: version 1 warmed up with 2 requests" in log
    assert log.index("warmed up with 2 requests") < log.index("model warm: version 1 available")
    wait_for(lambda: _status(setup, "bad_warmup") == ["END"], setup)
    status, body = rest(setup, "/v1/models/bad_warmup")
    (entry,) = orjson.loads(body)["model_version_status"]
    assert entry["status"]["error_code"] == "FAILED_PRECONDITION"
    assert "tf_serving_warmup_requests: record 0" in entry["status"]["error_message"]
    assert "no_such_signature" in entry["status"]["error_message"]


def test_monitoring_config_path_serves_prometheus_text(setup):
    rest(setup, "/v1/models/hpt:predict", {"instances": [1.0]})
    status, _, body = setup.request("GET", "/custom/metrics")
    assert status == 200 and b"# TYPE" in body


def test_a_request_larger_than_max_batch_size_gets_tf_servings_error(setup):
    assert rest(setup, "/v1/models/hpt:predict", {"instances": [1.0] * 4})[0] == 200
    status, body = rest(setup, "/v1/models/hpt:predict", {"instances": [1.0] * 5})
    assert status == 400
    assert orjson.loads(body)["error"] == "Task size 5 is larger than maximum input batch size 4"


def test_rest_timeout_answers_504_and_the_server_keeps_serving(setup):
    t0 = time.monotonic()
    status, body = rest(setup, "/v1/models/slow:predict", {"inputs": {"n": [4000]}})
    assert status == 504 and "--rest_api_timeout_in_ms" in orjson.loads(body)["error"]
    assert time.monotonic() - t0 < 5
    assert rest(setup, "/v1/models/hpt:predict", {"instances": [2.0]}) == (200, b'{"predictions":[3.0]}')


def test_config_file_reload_adds_removes_and_changes_policy_without_dropping_requests(setup):
    failures, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            status, body = rest(setup, "/v1/models/hpt:predict", {"instances": [2.0]})
            if status != 200:
                failures.append((status, body))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        paths = setup.paths
        setup.config.write_text(config_text({"hpt": paths["hpt"], "three": paths["three"], "slow": paths["slow"]},
                                            extra="model_version_policy { all {} }"))
        wait_for(lambda: _status(setup, "hpt") == ["AVAILABLE", "AVAILABLE"] and _status(setup, "three")
                 == ["AVAILABLE"], setup)
        assert rest(setup, "/v1/models/three:predict", {"instances": [2.0]}) == (200, b'{"predictions":[4.0]}')
        wait_for(lambda: rest(setup, "/v1/models/warm")[0] == 404, setup)
        # A bad edit is logged and the previous configuration keeps serving.
        setup.config.write_text("model_config_list { config { name: 'x' } }")
        wait_for(lambda: "model config not applied, still serving the previous one" in setup.log(), setup)
        assert rest(setup, "/v1/models/three:predict", {"instances": [2.0]})[0] == 200
    finally:
        stop.set()
        worker.join()
    assert not failures, failures[:3]


def test_grpc_handle_reload_config_request(setup):
    request = model_management_pb2.ReloadConfigRequest()
    config = request.config.model_config_list.config.add()
    config.name, config.base_path = "hpt", str(setup.paths["hpt"])
    config.model_version_policy.specific.versions.append(123)
    other = request.config.model_config_list.config.add()
    other.name, other.base_path = "warm", str(setup.paths["warm"])
    with grpc.insecure_channel(setup.grpc_address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        response = stub.HandleReloadConfigRequest(request, timeout=60)
        assert response.status.error_code == 0
        assert _status(setup, "hpt") in (["END", "AVAILABLE"], ["AVAILABLE"])
        assert rest(setup, "/v1/models/hpt/versions/124:predict", {"instances": [2.0]})[0] == 404
        assert rest(setup, "/v1/models/warm:predict", {"instances": [2.0]}) == (200, b'{"predictions":[3.0]}')
        assert rest(setup, "/v1/models/three")[0] == 404
        bad = model_management_pb2.ReloadConfigRequest()
        bad.config.model_config_list.config.add().name = "no_base_path"
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(bad, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "missing 'base_path'" in info.value.details()
    assert setup.proc.poll() is None and "Traceback" not in setup.log()


def test_generated_bad_reload_requests_are_refused_and_the_server_stays_up(setup):
    import random

    rng = random.Random(5)
    with grpc.insecure_channel(setup.grpc_address) as channel:
        raw = channel.unary_unary("/tensorflow.serving.ModelService/HandleReloadConfigRequest")
        for _ in range(50):
            with pytest.raises(grpc.RpcError) as info:
                raw(rng.randbytes(rng.randrange(1, 120)), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for _ in range(50):
            request = model_management_pb2.ReloadConfigRequest()
            for _ in range(rng.randrange(0, 3)):
                config = request.config.model_config_list.config.add()
                config.name = rng.choice(["", "a/b", "hpt", "x:y", "ok"])
                config.base_path = rng.choice(["", "/"])
                if rng.random() < 0.5:
                    config.model_version_policy.specific.SetInParent()
            if rng.random() < 0.2:
                request.config.custom_model_config.type_url = "x"
            try:
                stub.HandleReloadConfigRequest(request, timeout=30)
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert setup.proc.poll() is None and "Traceback" not in setup.log()
