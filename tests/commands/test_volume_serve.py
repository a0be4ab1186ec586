"""`tidal volume` and `tidal serve` against a real API server on 127.0.0.1 (fake backend and gateway behind it)."""

from __future__ import annotations

import pytest

from tests.control.fakes import FakeBackend, FakeGateway
from tests.threaded_server import ThreadedServer
from tidal.capacity.catalog import load_catalog
from tidal.cli import main
from tidal.clock import FakeClock
from tidal.control.api import Api
from tidal.control.home import Home
from tidal.control.reconciler import Reconciler
from tidal.control.store import Store
from tidal.spec import VolumeSpec

TOKEN = "cli-t0ken"


class ApiServer(ThreadedServer):
    def __init__(self, api: Api) -> None:
        super().__init__()
        self.api = api

    def handle(self, req):
        return self.api.handle(req)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    store = Store(tmp_path / "state.db")
    r = Reconciler(store, FakeBackend(), FakeGateway(), load_catalog(), FakeClock(), Home(tmp_path / "home").ensure())
    server = ApiServer(Api(r, TOKEN, "http://127.0.0.1:8501", wake=lambda: None, env={}))
    server.start()
    monkeypatch.setenv("TIDAL_API", f"http://127.0.0.1:{server.server.port}")
    monkeypatch.setenv("TIDAL_TOKEN", TOKEN)
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main(list(argv))
        out = capsys.readouterr()
        return rc, out.out, out.err
    run.store = store
    yield run
    server.stop()


def test_an_empty_file_url_is_refused_in_one_line(cli):
    rc, out, err = cli("volume", "create", "broken", "--url", "file://")
    assert rc == 2 and "absolute path" in err and len(err.strip().splitlines()) == 1
    assert cli("volume", "list")[0] == 0


def test_a_missing_local_folder_is_refused_at_create(cli, tmp_path):
    rc, _, err = cli("volume", "create", "m", "--url", str(tmp_path / "nowhere"))
    assert rc == 2 and f"no folder {tmp_path}/nowhere" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "models").mkdir()
    rc, out, _ = cli("volume", "create", "m", "--url", f"{tmp_path}/models/")
    assert rc == 0 and out.strip() == f"volume m -> file://{tmp_path}/models"


def test_a_bad_row_from_before_lists_and_deletes(cli):
    cli.store.put_volume(VolumeSpec.model_construct(name="old", url="file:", endpoint="", options="", secret=""), 0.0)
    rc, out, _ = cli("volume", "list")
    assert rc == 0 and "old" in out and "file:" in out
    assert cli("volume", "delete", "old")[:2] == (0, "volume old deleted\n")
    assert "old" not in cli("volume", "list")[1]


def test_serve_prints_the_warning_of_a_missing_model_path(cli, tmp_path):
    (tmp_path / "models").mkdir()
    assert cli("volume", "create", "model-pvc", "--url", f"file://{tmp_path}/models")[0] == 0
    rc, out, err = cli("serve", "onnx", "--name", "sentiment", "--data", "model-pvc:/models",
                       "--model-path", "/models/sentiment")
    assert rc == 0 and "service sentiment created" in out
    assert err.strip() == (f"warning: the model path {tmp_path}/models/sentiment does not exist on this machine: "
                           f"replicas cannot load sentiment until it does")
    rc, out, err = cli("serve", "onnx", "--name", "escape", "--data", "model-pvc:/models",
                       "--model-path", "/models/../../etc")
    assert rc == 2 and "escapes the mount /models" in err


def test_serve_refuses_loader_env(cli, tmp_path):
    (tmp_path / "models" / "m").mkdir(parents=True)
    cli("volume", "create", "model-pvc", "--url", f"file://{tmp_path}/models")
    rc, _, err = cli("serve", "onnx", "--name", "s", "--data", "model-pvc:/models", "--model-path", "/models/m",
                     "-e", "LD_PRELOAD=/tmp/evil.so")
    assert rc == 2 and "LD_PRELOAD" in err and "TIDAL_ALLOW_ENV" in err and len(err.strip().splitlines()) == 1


def test_apply_prints_the_same_warning_as_serve(cli, tmp_path):
    (tmp_path / "models").mkdir()
    assert cli("volume", "create", "model-pvc", "--url", f"file://{tmp_path}/models")[0] == 0
    doc = tmp_path / "service.yaml"
    doc.write_text("kind: Service\nspec:\n  name: sentiment\n  version: '1'\n  type: onnx\n  model_name: sentiment\n"
                   "  data: [{volume: model-pvc, mount: /models}]\n  model_path: /models/sentiment\n")
    rc, out, err = cli("apply", "-f", str(doc))
    assert rc == 0 and "service/sentiment created" in out, (out, err)
    assert err.strip() == (f"warning: the model path {tmp_path}/models/sentiment does not exist on this machine: "
                           f"replicas cannot load sentiment until it does")
