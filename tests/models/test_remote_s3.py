"""The remote path: versions in S3 (moto's standalone server on 127.0.0.1) through s3fs, with the local cache."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pytest

from tests.models.conftest import half_plus_two
from tidal.clock import FakeClock
from tidal.models.config import ModelConfig
from tidal.models.manager import ModelManager
from tidal.models.repository import Repository

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-never-logged"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"}
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret=SECRET, client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]},
                           skip_instance_cache=True)
    fs.mkdir("models")
    yield fs, env, server
    server.stop()


def upload(fs, tmp_path, key: str, version: int, slope: float) -> None:
    local = half_plus_two(tmp_path / f"{key}-{version}" / "model.onnx", slope=slope)
    fs.put_file(str(local), f"models/{key}/{version}/model.onnx")
    fs.pipe(f"models/{key}/{version}/assets/readme.txt", b"an extra file that must travel with the model")
    fs.invalidate_cache()


def test_repository_lists_and_caches_s3_versions(s3, tmp_path):
    fs, env, _ = s3
    upload(fs, tmp_path, "listing", 1, 1.0)
    upload(fs, tmp_path, "listing", 12, 1.0)
    fs.pipe("models/listing/notes/x.txt", b"not a version")
    repo = Repository("s3://models/listing", cache_dir=str(tmp_path / "cache"), env=env)
    assert repo.list_versions() == [1, 12]
    assert not repo.is_local
    path = repo.local_path(12)
    assert path.startswith(str(tmp_path / "cache"))
    assert open(f"{path}/assets/readme.txt", "rb").read().startswith(b"an extra file")
    assert repo.local_path(12) == path  # cached


async def test_manager_serves_from_s3_and_picks_up_new_versions(s3, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    fs, env, _ = s3
    upload(fs, tmp_path, "hpt", 1, 1.0)
    cache = tmp_path / "cache"
    m = ModelManager([ModelConfig(name="hpt", base_path="s3://models/hpt")], clock=FakeClock(), poll_seconds=0,
                     cache_dir=str(cache), env=env)
    await m.start()
    x = {"x": np.array([2.0], np.float32)}
    assert m.ready
    assert float((await m.resolve("hpt").predict("serving_default", x))["y"][0]) == 4.0
    upload(fs, tmp_path, "hpt", 2, 3.0)
    await m.poll()
    assert [(s.version, s.state.value) for s in m.status("hpt")] == [(2, "AVAILABLE"), (1, "END")]
    assert float((await m.resolve("hpt").predict("serving_default", x))["y"][0]) == 8.0
    (cached,) = list(cache.iterdir())
    assert sorted(p.name for p in cached.iterdir()) == ["2"]  # version 1 left the cache when it was unloaded
    await m.stop()
    assert sorted(p.name for p in cached.iterdir()) == ["2"]  # stopping keeps it for a quick restart
    assert SECRET not in caplog.text


async def test_unreachable_store_keeps_the_loaded_version_serving(s3, tmp_path):
    fs, env, _ = s3
    upload(fs, tmp_path, "flaky", 1, 1.0)
    # A second endpoint that refuses connections stands in for the store going away.
    dead = dict(env, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    m = ModelManager([ModelConfig(name="flaky", base_path="s3://models/flaky")], clock=FakeClock(), poll_seconds=0,
                     cache_dir=str(tmp_path / "cache"), env=env)
    await m.start()
    assert m.ready
    m._models["flaky"].repository = Repository(
        "s3://models/flaky", cache_dir=str(tmp_path / "cache"), env=dead,
        storage_options={"config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}, "retries": 1})
    t0 = time.monotonic()
    await m.poll()
    assert time.monotonic() - t0 < 30
    assert [(s.version, s.state.value) for s in m.status("flaky")] == [(1, "AVAILABLE")]
    out = await m.resolve("flaky").predict("serving_default", {"x": np.array([2.0], np.float32)})
    assert float(out["y"][0]) == 4.0
    await m.stop()
