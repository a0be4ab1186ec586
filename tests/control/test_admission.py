"""The admission rules of tidal.spec as tables: volume URLs, model paths inside their mount, replica env vars."""

from __future__ import annotations

import pytest

from tidal.spec import Admission, ServiceSpec, VolumeSpec, env_refusal, normal_model_path, normal_volume_url

OFF = Admission()
WEB = Admission(allow_http_volumes=True)

# (URL given, admission, stored URL or None when refused, words of the refusal)
URLS = [
    ("file:///srv/models", OFF, "file:///srv/models", ""),
    ("file:///srv/models/", OFF, "file:///srv/models", ""),  # no trailing slash
    ("file:///srv/./a/../models", OFF, "file:///srv/models", ""),
    ("file:////srv//models", OFF, "file:///srv/models", ""),
    ("file:///", OFF, "file:///", ""),  # the whole file system, said explicitly
    ("FILE:///srv", OFF, "file:///srv", ""),
    ("file://", OFF, None, "needs an absolute path"),  # was stored as 'file:' and broke list/delete
    ("file:", OFF, None, "scheme"),
    ("file://srv/models", OFF, None, "no host"),
    ("/srv/models", OFF, None, "scheme"),
    ("s3://bucket", OFF, "s3://bucket", ""),
    ("s3://bucket/a//b/./c/", OFF, "s3://bucket/a/b/c", ""),
    ("oss://bucket/models", OFF, "oss://bucket/models", ""),
    ("gs://bucket/m", OFF, "gs://bucket/m", ""),
    ("s3://", OFF, None, "needs a bucket"),
    ("s3:///key", OFF, None, "needs a bucket"),
    ("s3://bucket/a/../../b", OFF, None, "'..'"),
    ("oss://id:secret@bucket", OFF, None, "secret store"),
    ("s3://bucket/m?versionId=1", OFF, None, "query"),
    ("ftp://host/m", OFF, None, "not supported"),
    ("hdfs://nn/m", OFF, None, "not supported"),
    ("https://models.example.com/m", OFF, None, "TIDAL_ALLOW_HTTP_VOLUMES=1"),
    ("https://models.example.com/m/", WEB, "https://models.example.com/m", ""),
    ("http://", WEB, None, "needs a bucket"),
]


@pytest.mark.parametrize("url,admission,stored,words", URLS, ids=[u[0] + ("+web" if u[1] is WEB else "")
                                                                   for u in URLS])
def test_volume_urls(url, admission, stored, words):
    if stored is None:
        with pytest.raises(ValueError, match=words.replace("?", r"\?").replace(".", r"\.")):
            normal_volume_url(url, admission)
    else:
        assert normal_volume_url(url, admission) == stored


# (model path, mounts, normalised path or None when refused, words)
PATHS = [
    ("/models/tensorflow", ["/models"], "/models/tensorflow", ""),
    ("/models/tensorflow/", ["/models"], "/models/tensorflow", ""),
    ("/models/./a/../tensorflow", ["/models"], "/models/tensorflow", ""),
    ("/models", ["/models"], "/models", ""),
    ("/models/..", ["/models"], None, "escapes the mount /models"),
    ("/models/../../..", ["/models"], None, "escapes the mount /models"),
    ("/models/a/../../etc/passwd", ["/models"], None, "escapes the mount /models"),
    ("/models/../other/m", ["/models", "/other"], None, "escapes the mount /models"),  # no hopping across mounts
    ("/data/m", ["/models/a", "/data"], "/data/m", ""),
    ("/models/a/b/../c", ["/models", "/models/a"], "/models/a/c", ""),  # the longest mount holds it
    ("/elsewhere/../m", ["/models"], None, "'..'"),  # outside every mount: the mount check says so later
    ("/srv/models/../m", [], "/srv/m", ""),  # no mounts: a path on this machine, as given
    ("s3://b/m", [], "s3://b/m", ""),
    ("s3://b/../m", [], None, "'..'"),
    ("", ["/models"], "", ""),
]


@pytest.mark.parametrize("path,mounts,normal,words", PATHS, ids=[p[0] or "empty" for p in PATHS])
def test_model_paths(path, mounts, normal, words):
    if normal is None:
        with pytest.raises(ValueError, match=words.replace(".", r"\.")):
            normal_model_path(path, mounts)
    else:
        assert normal_model_path(path, mounts) == normal


# (variable, operator's allowances, refused?)
ENV = [
    ("OMP_NUM_THREADS", frozenset(), False),
    ("CUDA_VISIBLE_DEVICES", frozenset(), False),
    ("LD_PRELOAD", frozenset(), True),
    ("LD_LIBRARY_PATH", frozenset(), True),
    ("ld_preload", frozenset(), True),
    ("DYLD_INSERT_LIBRARIES", frozenset(), True),
    ("PYTHONPATH", frozenset(), True),
    ("PYTHONSTARTUP", frozenset(), True),
    ("PYTHONHOME", frozenset(), True),
    ("PYTHONINSPECT", frozenset(), True),
    ("PYTHONUSERBASE", frozenset(), True),
    ("BASH_ENV", frozenset(), True),
    ("NODE_OPTIONS", frozenset(), True),
    ("PYTHONPATH", frozenset({"PYTHONPATH"}), False),
    ("LD_PRELOAD", frozenset({"PYTHONPATH"}), True),
    ("1ABC", frozenset(), True),
    ("A=B", frozenset({"A=B"}), True),  # not a name at all, whatever is allowed
]


@pytest.mark.parametrize("name,allowed,refused", ENV, ids=[f"{e[0]}{'+allowed' if e[1] else ''}" for e in ENV])
def test_env_names(name, allowed, refused):
    assert (env_refusal(name, allowed) is not None) == refused


def test_allowances_from_the_environment():
    assert Admission.from_env({}) == Admission()
    a = Admission.from_env({"TIDAL_ALLOW_ENV": " PYTHONPATH,,LD_PRELOAD ", "TIDAL_ALLOW_HTTP_VOLUMES": "yes"})
    assert a.allow_env == {"PYTHONPATH", "LD_PRELOAD"} and a.allow_http_volumes


def test_stored_rows_read_back_as_written():
    # A row written under older rules lists and deletes: reading it back runs no admission rule.
    assert VolumeSpec.model_validate({"name": "old", "url": "file:"}).url == "file:"
    spec = ServiceSpec.model_validate({"name": "s", "version": "1", "model_path": "/models/../x",
                                       "data": [{"volume": "v", "mount": "/models"}], "env": {"LD_PRELOAD": "x"}})
    assert spec.model_path == "/models/../x" and spec.env == {"LD_PRELOAD": "x"}
    with pytest.raises(ValueError, match="LD_PRELOAD"):
        ServiceSpec.admit(spec.model_dump(), OFF)
