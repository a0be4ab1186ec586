"""Version directories, policy selection, storage options from the environment and the local cache."""

from __future__ import annotations

import pytest

from tidal.errors import FailedPrecondition, NotFound
from tidal.models.config import VersionPolicy
from tidal.models.repository import (
    Repository, parse_version_dir, redact, select_versions, storage_options_from_env,
)

SELECT = [
    ("latest picks the highest", [1, 3, 2], VersionPolicy(), (3,)),
    ("latest:2 picks the two highest", [1, 5, 3, 2], VersionPolicy(kind="latest", num_versions=2), (3, 5)),
    ("latest:5 with only 2 present", [7, 4], VersionPolicy(kind="latest", num_versions=5), (4, 7)),
    ("latest of nothing", [], VersionPolicy(), ()),
    ("all", [3, 1, 2], VersionPolicy(kind="all"), (1, 2, 3)),
    ("specific present ones only", [1, 2, 3], VersionPolicy(kind="specific", versions=(2, 9)), (2,)),
    ("specific none present", [1], VersionPolicy(kind="specific", versions=(4,)), ()),
    ("duplicates collapse", [2, 2, 1], VersionPolicy(kind="all"), (1, 2)),
]


@pytest.mark.parametrize("available,policy,expected", [c[1:] for c in SELECT], ids=[c[0] for c in SELECT])
def test_select_versions(available, policy, expected):
    assert select_versions(available, policy) == expected


@pytest.mark.parametrize("name,version", [("1", 1), ("0", 0), ("0042", 42), ("123456789", 123456789),
                                          ("v1", None), ("1.0", None), ("-1", None), ("", None),
                                          (".1", None), ("tmp", None), ("1 ", None)])
def test_parse_version_dir(name, version):
    assert parse_version_dir(name) == version


ENV = [
    ("s3 with AWS names", "s3", {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_ENDPOINT_URL": "http://h:9000",
                                 "AWS_REGION": "us-west-2"},
     {"key": "AK", "secret": "SK", "client_kwargs": {"endpoint_url": "http://h:9000", "region_name": "us-west-2"}}),
    ("s3 endpoint per service wins", "s3", {"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "http://b"},
     {"client_kwargs": {"endpoint_url": "http://b"}}),
    ("TF Serving's S3_ENDPOINT without https", "s3", {"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0",
                                                       "S3_VERIFY_SSL": "0"},
     {"client_kwargs": {"endpoint_url": "http://minio:9000", "verify": False}}),
    ("session token", "s3", {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "AWS_SESSION_TOKEN": "T"},
     {"key": "AK", "secret": "SK", "token": "T"}),
    ("key without secret is left to botocore", "s3", {"AWS_ACCESS_KEY_ID": "AK"}, {}),
    ("oss", "oss", {"OSS_ENDPOINT": "oss-cn-beijing.aliyuncs.com", "OSS_ACCESS_KEY_ID": "id",
                    "OSS_ACCESS_KEY_SECRET": "sec"},
     {"endpoint": "https://oss-cn-beijing.aliyuncs.com", "key": "id", "secret": "sec"}),
    ("oss with alibaba cloud names", "oss", {"ALIBABA_CLOUD_ACCESS_KEY_ID": "id",
                                             "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "sec"},
     {"key": "id", "secret": "sec"}),
    ("local paths take nothing", "file", {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}, {}),
]


@pytest.mark.parametrize("protocol,env,expected", [c[1:] for c in ENV], ids=[c[0] for c in ENV])
def test_storage_options_from_env(protocol, env, expected):
    assert storage_options_from_env(protocol, env) == expected


def test_redact_hides_credentials_in_urls():
    assert redact("s3://AKIA:secret@bucket/m") == "s3://***@bucket/m"
    assert redact("/plain/path") == "/plain/path"


def test_listing_ignores_files_and_non_numeric_dirs(tmp_path):
    for name in ("1", "2", "10", "tmp", "v3", "0007"):
        (tmp_path / name).mkdir()
    (tmp_path / "3").write_text("a file, not a version")
    repo = Repository(str(tmp_path))
    assert repo.list_versions() == [1, 2, 7, 10]
    assert repo.is_local
    assert repo.local_path(7) == str(tmp_path / "0007")  # loaded in place
    assert repo.local_path(2) == str(tmp_path / "2")


def test_listing_file_url(tmp_path):
    (tmp_path / "4").mkdir()
    repo = Repository(f"file://{tmp_path}")
    assert repo.list_versions() == [4]
    assert repo.local_path(4).endswith("/4")


def test_missing_base_path_is_not_found(tmp_path):
    with pytest.raises(NotFound, match="does not exist"):
        Repository(str(tmp_path / "absent")).list_versions()


def test_base_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FailedPrecondition, match="is a file, not a directory"):
        Repository(str(tmp_path / "f")).list_versions()


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(FailedPrecondition, match="nosuchfs"):
        Repository("nosuchfs://bucket/m").list_versions()


def test_remote_store_is_copied_into_the_cache(tmp_path):
    # fsspec's in-memory filesystem stands in for a remote store here; S3 itself is tested with moto.
    import fsspec

    mem = fsspec.filesystem("memory")
    mem.pipe("/cachetest/model/1/model.onnx", b"v1")
    mem.pipe("/cachetest/model/1/assets/vocab.txt", b"words")
    mem.pipe("/cachetest/model/2/model.onnx", b"v2")
    cache = tmp_path / "cache"
    repo = Repository("memory://cachetest/model", cache_dir=str(cache))
    assert repo.list_versions() == [1, 2]
    assert not repo.is_local
    path = repo.local_path(1)
    assert path.startswith(str(cache))
    assert open(f"{path}/model.onnx", "rb").read() == b"v1"
    assert open(f"{path}/assets/vocab.txt", "rb").read() == b"words"
    # A second call reuses the cached copy instead of downloading again.
    mem.pipe("/cachetest/model/1/model.onnx", b"changed")
    assert repo.local_path(1) == path and open(f"{path}/model.onnx", "rb").read() == b"v1"
    repo.evict(1)
    assert open(f"{repo.local_path(1)}/model.onnx", "rb").read() == b"changed"
    # No half-written staging directories are left behind.
    assert sorted(p.name for p in (cache / path.split("/")[-2]).iterdir()) == ["1"]
    mem.rm("/cachetest", recursive=True)
