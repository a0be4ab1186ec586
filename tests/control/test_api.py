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
