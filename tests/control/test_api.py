"""The API as a thin adapter: token check, routing, errors as {"error"} with the right status, secrets kept out."""

import asyncio
import json
from types import SimpleNamespace

import pytest

from tidal.clock import FakeClock
from tidal.capacity.catalog import load_catalog
from tidal.control.api import Api
from tidal.control.home import Home
from tidal.control.reconciler import Reconciler
from tidal.control.store import Store

from .fakes import FakeBackend, FakeGateway

TOKEN = "t0ken"


@pytest.fixture
def api(tmp_path):
    home = Home(tmp_path).ensure()
    store = Store(tmp_path / "state.db")
    r = Reconciler(store, FakeBackend(), FakeGateway(), load_catalog(), FakeClock(), home)
    (tmp_path / "vol" / "tensorflow" / "1").mkdir(parents=True)
    return Api(r, TOKEN, "http://127.0.0.1:8501", wake=lambda: None), store, tmp_path


def call(api, method, path, body=None, token=TOKEN, raw=None):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    path, _, query = path.partition("?")
    req = SimpleNamespace(method=method, path=path, query=query, headers=headers, body=data)
    resp = asyncio.run(api.handle(req))
    return resp.status, json.loads(resp.body)


POOL = {"name": "gpu-pool", "labels": {"inference": "tensorflow"}, "spot": True, "on_demand_percentage": 30,
        "compensate_with_on_demand": True, "multi_zone": "cost-optimized"}


def service(tmp_path, **kw):
    return {"name": "bert-tfserving", "version": "202107141745", "model_name": "chnsenticorp", "gpus": 1,
            "selector": {"inference": "tensorflow"}, "data": [{"volume": "model-pvc", "mount": "/models"}],
            "model_path": "/models/tensorflow", **kw}


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_without_the_token_401(api, token):
    a, _, _ = api
    status, body = call(a, "GET", "/api/v1/services", token=token)
    assert status == 401 and "token" in body["error"]


CASES = [
    ("unknown route", "GET", "/api/v1/nope", None, 404, "no API route"),
    ("wrong method", "PUT", "/api/v1/services", {}, 405, "allowed: GET, POST"),
    ("missing service", "GET", "/api/v1/services/x", None, 404, "service 'x' not found"),
    ("bad field", "POST", "/api/v1/nodepools", dict(POOL, on_demand_percentage=130), 400, "on_demand_percentage"),
    ("unknown policy", "POST", "/api/v1/nodepools", dict(POOL, policy="magic"), 400, "unknown capacity policy"),
    ("unknown policy parameter", "POST", "/api/v1/nodepools", dict(POOL, policy="tidal", policy_params={"nope": 1}),
     400, "policy 'tidal' has no parameter 'nope'"),
    ("bad policy parameter", "POST", "/api/v1/nodepools", dict(POOL, policy="tidal",
                                                               policy_params={"lone_evidence": "lots"}),
     400, "policy 'tidal': lone_evidence:"),
    ("unknown type", "POST", "/api/v1/nodepools", dict(POOL, instance_types=["x.y"]), 400, "unknown instance type"),
    ("service without volume", "POST", "/api/v1/services", None, 404, "volume 'model-pvc' not found"),
    ("preempt a missing pool", "POST", "/api/v1/nodepools/none/preempt", {"count": 1}, 404, "not found"),
    ("bad notice", "POST", "/api/v1/nodepools/none/preempt", {"notice": -1}, 400, "notice"),
]


@pytest.mark.parametrize("method,path,body,status,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_errors(api, method, path, body, status, needle):
    a, _, tmp = api
    if path == "/api/v1/services" and method == "POST":
        body = service(tmp)
    got, out = call(a, method, path, body)
    assert got == status and needle in out["error"], out


def test_bad_json_is_400(api):
    a, _, _ = api
    status, out = call(a, "POST", "/api/v1/volumes", raw=b"{nope")
    assert status == 400 and "JSON" in out["error"]


def test_create_and_read_back_in_the_contract_shapes(api):
    a, store, tmp = api
    assert call(a, "POST", "/api/v1/nodepools", POOL)[0] == 201
    status, vol = call(a, "POST", "/api/v1/volumes", {"name": "model-pvc", "url": f"file://{tmp}/vol",
                                                     "credentials": {"akId": "ID", "akSecret": "S3CRET"}})
    assert status == 201 and vol["secret"] == "volume-model-pvc" and "S3CRET" not in json.dumps(vol)
    assert Home(tmp).get_secret("volume-model-pvc") == {"akId": "ID", "akSecret": "S3CRET"}
    status, svc = call(a, "POST", "/api/v1/services", service(tmp))
    assert status == 201
    assert svc["endpoint"] == "http://127.0.0.1:8501/services/bert-tfserving"
    assert svc["workload"] == "bert-tfserving-202107141745-tensorflow-serving"
    assert call(a, "POST", "/api/v1/services", service(tmp))[0] == 409  # exists
    status, out = call(a, "POST", "/api/v1/autoscalers", {"document": {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "bert-tfserving-202107141745-tensorflow-serving"},
                 "minReplicas": 1, "maxReplicas": 10, "metrics": [{"type": "External", "external": {
                     "metric": {"name": "sls_ingress_qps"}, "target": {"type": "AverageValue", "averageValue": 10}}}]}}})
    assert status == 200 and out["service"] == "bert-tfserving" and out["note"] == ""
    pool = call(a, "GET", "/api/v1/nodepools/gpu-pool")[1]
    assert set(pool) >= {"name", "labels", "nodes"} and pool["labels"] == {"inference": "tensorflow"}
    events = call(a, "GET", "/api/v1/events")[1]
    assert [e["kind"] for e in events][:3] == ["NodePoolCreated", "VolumeCreated", "ServiceCreated"]
    assert call(a, "DELETE", "/api/v1/volumes/model-pvc")[0] == 400  # in use
    assert b"S3CRET" not in (tmp / "state.db").read_bytes()
    assert call(a, "DELETE", "/api/v1/services/bert-tfserving")[0] == 200
    assert call(a, "DELETE", "/api/v1/volumes/model-pvc")[0] == 200
    with pytest.raises(Exception):
        Home(tmp).get_secret("volume-model-pvc")


def test_event_log_is_bounded(tmp_path):
    store = Store(tmp_path / "s.db")
    store.MAX_EVENTS = 1500
    for i in range(3000):
        store.add_event(float(i), "K", "o", str(i))
    events = store.events(limit=10000)
    assert 1500 <= len(events) <= 2500 and events[-1].message == "2999"


def test_policy_params_reach_the_policy(api):
    a, store, _ = api
    status, pool = call(a, "POST", "/api/v1/nodepools", dict(POOL, policy="tidal-hedge",
                                                            policy_params={"outage_value": "40", "max_spare": 1}))
    assert status == 201 and pool["spec"]["policy_params"] == {"outage_value": "40", "max_spare": 1}
    spec = store.get_pool("gpu-pool")
    from tidal.capacity.policies import pool_params
    params = pool_params(spec.policy, spec.model_dump(), spec.policy_params)
    assert (params.outage_value, params.max_spare) == (40.0, 1)


# -- bodies, volumes, env and model paths (the hardening checks)

WRITES = [("POST", "/api/v1/services"), ("PATCH", "/api/v1/services/bert-tfserving"),
          ("PUT", "/api/v1/services/bert-tfserving/autoscaler"), ("POST", "/api/v1/autoscalers"),
          ("POST", "/api/v1/nodepools"), ("POST", "/api/v1/nodepools/gpu-pool/preempt"),
          ("POST", "/api/v1/volumes")]


@pytest.mark.parametrize("raw", [b"[]", b'"x"', b"1", b"null", b"true"], ids=["list", "string", "number", "null",
                                                                                 "bool"])
@pytest.mark.parametrize("method,path", WRITES, ids=[f"{m} {p}" for m, p in WRITES])
def test_a_body_that_is_not_an_object_is_400(api, method, path, raw):
    a, _, _ = api
    status, out = call(a, method, path, raw=raw)
    assert status == 400 and "JSON object" in out["error"], out


def test_an_empty_body_is_an_empty_object(api):
    a, _, _ = api
    status, out = call(a, "POST", "/api/v1/volumes", raw=b"")
    assert status == 400 and "name" in out["error"]


@pytest.mark.parametrize("url,needle", [
    ("file://", "file:// URL needs an absolute path"),
    ("file:", "scheme"),
    ("nourl", "scheme"),
    ("ftp://host/models", "not supported"),
    ("http://models.example.com/m", "http(s) volumes are off"),
    ("s3://", "needs a bucket"),
    ("oss:///models", "needs a bucket"),
    ("s3://bucket/../other", "'..'"),
    ("s3://user:pw@bucket/m", "credentials"),
    ("file://elsewhere/srv", "no host"),
    ("file:///no/such/folder", "no folder /no/such/folder"),
])
def test_volume_urls_outside_the_rules_are_one_clear_400(api, url, needle):
    a, store, _ = api
    status, out = call(a, "POST", "/api/v1/volumes", {"name": "v", "url": url})
    assert status == 400 and needle in out["error"] and "\n" not in out["error"], out
    assert store.list_volumes() == []


def test_volume_urls_are_normalised(api):
    a, _, tmp = api
    status, vol = call(a, "POST", "/api/v1/volumes", {"name": "v", "url": f"file://{tmp}/vol/./tensorflow/../"})
    assert status == 201 and vol["url"] == f"file://{tmp}/vol"
    status, vol = call(a, "POST", "/api/v1/volumes", {"name": "o", "url": "OSS://bucket/models/"})
    assert status == 201 and vol["url"] == "oss://bucket/models"


def test_a_volume_may_not_name_its_own_secret(api):
    a, _, _ = api
    status, out = call(a, "POST", "/api/v1/volumes", {"name": "o", "url": "oss://b", "secret": "volume-other"})
    assert status == 400 and "credentials" in out["error"]


def test_a_bad_row_from_before_still_lists_and_deletes(api):
    a, store, _ = api
    from tidal.spec import VolumeSpec
    store.put_volume(VolumeSpec.model_construct(name="old", url="file:", endpoint="", options="", secret=""), 0.0)
    status, vols = call(a, "GET", "/api/v1/volumes")
    assert status == 200 and [(v["name"], v["url"]) for v in vols] == [("old", "file:")]
    assert call(a, "DELETE", "/api/v1/volumes/old") == (200, {"deleted": "old"})
    assert call(a, "GET", "/api/v1/volumes") == (200, [])


@pytest.fixture
def with_volume(api):
    a, store, tmp = api
    assert call(a, "POST", "/api/v1/volumes", {"name": "model-pvc", "url": f"file://{tmp}/vol"})[0] == 201
    return a, store, tmp


@pytest.mark.parametrize("env,needle", [
    ({"LD_PRELOAD": "/tmp/x.so"}, "LD_PRELOAD"),
    ({"PYTHONPATH": "/tmp"}, "PYTHONPATH"),
    ({"PYTHONSTARTUP": "/tmp/s.py"}, "PYTHONSTARTUP"),
    ({"DYLD_INSERT_LIBRARIES": "x"}, "DYLD_INSERT_LIBRARIES"),
    ({"BASH_ENV": "/tmp/x"}, "BASH_ENV"),
    ({"BAD NAME": "x"}, "not a valid variable name"),
])
def test_env_that_changes_how_code_loads_is_refused(with_volume, env, needle):
    a, store, tmp = with_volume
    status, out = call(a, "POST", "/api/v1/services", service(tmp, env=env))
    assert status == 400 and needle in out["error"] and "\n" not in out["error"], out
    assert ("TIDAL_ALLOW_ENV" in out["error"]) == (needle != "not a valid variable name")
    assert store.list_services() == []


def test_env_the_operator_allows_is_accepted(tmp_path):
    home = Home(tmp_path).ensure()
    store = Store(tmp_path / "state.db")
    r = Reconciler(store, FakeBackend(), FakeGateway(), load_catalog(), FakeClock(), home)
    (tmp_path / "vol" / "tensorflow").mkdir(parents=True)
    a = Api(r, TOKEN, "http://127.0.0.1:8501", wake=lambda: None, env={"TIDAL_ALLOW_ENV": "PYTHONPATH, LD_PRELOAD"})
    assert call(a, "POST", "/api/v1/volumes", {"name": "model-pvc", "url": f"file://{tmp_path}/vol"})[0] == 201
    status, _ = call(a, "POST", "/api/v1/services", service(tmp_path, env={"PYTHONPATH": "/opt/x", "OMP_NUM_THREADS": "2"}))
    assert status == 201 and store.get_service("bert-tfserving").spec.env["PYTHONPATH"] == "/opt/x"
    assert call(a, "PATCH", "/api/v1/services/bert-tfserving", {"env": {"PYTHONHOME": "/x"}})[0] == 400


@pytest.mark.parametrize("path,status,needle", [
    ("/models/../../..", 400, "escapes the mount /models"),
    ("/models/tensorflow/../../etc", 400, "escapes the mount /models"),
    ("/models/a/../tensorflow", 201, None),
])
def test_model_paths_stay_inside_their_mount(with_volume, path, status, needle):
    a, store, tmp = with_volume
    got, out = call(a, "POST", "/api/v1/services", service(tmp, model_path=path))
    assert got == status, out
    if needle:
        assert needle in out["error"]
    else:
        assert out["model_path"] == "/models/tensorflow"


def test_serve_warns_when_the_local_model_path_does_not_exist(with_volume):
    a, store, tmp = with_volume
    status, out = call(a, "POST", "/api/v1/services", service(tmp, model_path="/models/missing"))
    assert status == 201 and store.get_service("bert-tfserving")
    (warning,) = out["warnings"]
    assert warning.startswith("warning: ") and f"{tmp}/vol/missing" in warning and "\n" not in warning
    status, out = call(a, "POST", "/api/v1/services", service(tmp, name="other"))
    assert status == 201 and out["warnings"] == []


@pytest.mark.parametrize("method, path, allow", [("PUT", "/api/v1/services", "GET, POST"),
                                                 ("TRACE", "/api/v1/nodepools", "GET, POST")])
def test_405_carries_allow(api, method, path, allow):
    a, _, _ = api
    req = SimpleNamespace(method=method, path=path, query="", headers={"authorization": f"Bearer {TOKEN}"}, body=b"")
    resp = asyncio.run(a.handle(req))
    assert resp.status == 405 and resp.headers == [("Allow", allow)]
