"""Routing by Host header, path prefix and model name, and conflicts between services."""

import pytest

from tidal.errors import AlreadyExists
from tidal.gateway.routing import RouteSpec, build_table, model_in_path, normalize_host, resolve

TABLE = build_table([
    RouteSpec("bert", hosts=("bert.example.com",), models=("chnsenticorp",)),
    RouteSpec("hpt", models=("half_plus_two",)),
])


@pytest.mark.parametrize("name, host, path, expected", [
    ("host NAME.localhost", "bert.localhost", "/v1/models/x:predict", ("bert", "/v1/models/x:predict")),
    ("host with port", "bert.localhost:8501", "/v2/health/ready", ("bert", "/v2/health/ready")),
    ("host in upper case with trailing dot", "BERT.Localhost.:80", "/", ("bert", "/")),
    ("extra host", "bert.example.com", "/v1/models/chnsenticorp", ("bert", "/v1/models/chnsenticorp")),
    ("host wins over model in path", "hpt.localhost", "/v1/models/chnsenticorp:predict",
     ("hpt", "/v1/models/chnsenticorp:predict")),
    ("path prefix stripped", "127.0.0.1:8501", "/services/hpt/v1/models/half_plus_two:predict",
     ("hpt", "/v1/models/half_plus_two:predict")),
    ("bare path prefix becomes /", None, "/services/hpt", ("hpt", "/")),
    ("unknown prefix name", None, "/services/nope/v1/models/half_plus_two", None),
    ("TF Serving predict", "127.0.0.1:8501", "/v1/models/half_plus_two:predict",
     ("hpt", "/v1/models/half_plus_two:predict")),
    ("TF Serving versioned", None, "/v1/models/half_plus_two/versions/2:predict",
     ("hpt", "/v1/models/half_plus_two/versions/2:predict")),
    ("TF Serving status", None, "/v1/models/chnsenticorp", ("bert", "/v1/models/chnsenticorp")),
    ("V2 infer", None, "/v2/models/half_plus_two/versions/1/infer", ("hpt", "/v2/models/half_plus_two/versions/1/infer")),
    ("V2 metadata", None, "/v2/models/chnsenticorp", ("bert", "/v2/models/chnsenticorp")),
    ("unknown model", None, "/v1/models/other:predict", None),
    ("model name is a prefix of a known one", None, "/v1/models/half:predict", None),
    ("server-level V2 path needs a host or prefix", None, "/v2/health/ready", None),
    ("unknown host falls through to the path", "other.localhost", "/v1/models/half_plus_two",
     ("hpt", "/v1/models/half_plus_two")),
])
def test_resolve_table(name, host, path, expected):
    assert resolve(TABLE, host, path) == expected


@pytest.mark.parametrize("path, model", [
    ("/v1/models/a:predict", "a"), ("/v1/models/a", "a"), ("/v1/models/a/metadata", "a"),
    ("/v2/models/b/ready", "b"), ("/v1/models/", None), ("/v1/model/a", None), ("/v1/models/:predict", None),
])
def test_model_in_path(path, model):
    assert model_in_path(path) == model


def test_normalize_host():
    assert normalize_host("[::1]:8080") == "[::1]"
    assert normalize_host(" A.LocalHost:1 ") == "a.localhost"


def test_conflicting_claims_are_refused():
    with pytest.raises(AlreadyExists, match="model 'm' is already served by service 'a'"):
        build_table([RouteSpec("a", models=("m",)), RouteSpec("b", models=("m",))])
    with pytest.raises(AlreadyExists, match="host 'a.localhost'"):
        build_table([RouteSpec("a"), RouteSpec("b", hosts=("A.localhost:9",))])


def test_custom_domain_and_prefix():
    t = build_table([RouteSpec("x")], domain="svc.local", prefix="/s/")
    assert resolve(t, "x.svc.local", "/p") == ("x", "/p")
    assert resolve(t, None, "/s/x/p") == ("x", "/p")
    assert resolve(t, "x.localhost", "/p") is None
