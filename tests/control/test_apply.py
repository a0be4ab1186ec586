"""The reference procedure's pvc.yaml as a Tidal volume: OSS CSI attributes -> oss:// URL, keys kept apart
for the secret store."""

import pytest
import yaml

from tidal.commands.apply import bind, load_documents
from tidal.commands.autoscale import hpa_document
from tidal.autoscaling.hpafile import parse_hpa
from tidal.errors import UserError

from ..conftest import REPO_ROOT

REFERENCE_PVC = REPO_ROOT / "examples" / "reference-procedure" / "pvc.yaml"


def seed_docs(**subs):
    text = REFERENCE_PVC.read_text()
    for k, v in subs.items():
        text = text.replace(k, v)
    return [d for d in yaml.safe_load_all(text) if d]


def test_seed_pvc_with_keys_in_the_file():
    docs = seed_docs(**{"<Your Bucket>": "models", "<Your oss url>": "oss-cn-hangzhou.aliyuncs.com",
                        "<Your Access Key Id>": "AKID", "<Your Access Key Secret>": "SECRET"})
    (vol,) = bind(docs, env={})
    assert vol == {"name": "model-pvc", "url": "oss://models", "endpoint": "https://oss-cn-hangzhou.aliyuncs.com",
                   "options": "-o max_stat_cache_size=0 -o allow_other",
                   "credentials": {"akId": "AKID", "akSecret": "SECRET"}}


def test_placeholder_keys_come_from_the_environment_or_not_at_all():
    docs = seed_docs(**{"<Your Bucket>": "models"})
    (vol,) = bind(docs, env={"OSS_ACCESS_KEY_ID": "ENVID", "OSS_ACCESS_KEY_SECRET": "ENVSECRET"})
    assert vol["credentials"] == {"akId": "ENVID", "akSecret": "ENVSECRET"} and vol["endpoint"] == ""
    (vol,) = bind(docs, env={})
    assert "credentials" not in vol


@pytest.mark.parametrize("text,needle", [
    ("", "bucket is not set"),  # the reference procedure's placeholders, unfilled
    ("hostpath", None),
])
def test_bucket_placeholder_is_an_error_hostpath_is_a_file_volume(text, needle):
    if needle:
        with pytest.raises(UserError, match=needle):
            bind(seed_docs(), env={})
    else:
        docs = [{"kind": "PersistentVolume", "metadata": {"name": "pv"}, "spec": {"hostPath": {"path": "/srv/m"}}},
                {"kind": "PersistentVolumeClaim", "metadata": {"name": "model-pvc"}, "spec": {}}]
        assert bind(docs, env={}) == [{"name": "model-pvc", "url": "file:///srv/m"}]


def test_claim_binding_needs_one_unclaimed_volume_or_a_name():
    pv = lambda n: {"kind": "PersistentVolume", "metadata": {"name": n}, "spec": {"hostPath": {"path": f"/{n}"}}}
    pvc = {"kind": "PersistentVolumeClaim", "metadata": {"name": "c"}, "spec": {}}
    with pytest.raises(UserError, match="cannot tell"):
        bind([pv("a"), pv("b"), pvc], env={})
    named = dict(pvc, spec={"volumeName": "b"})
    assert bind([pv("a"), pv("b"), named], env={})[0]["url"] == "file:///b"


def test_bad_files_are_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        load_documents([str(tmp_path / "nope.yaml")])
    (tmp_path / "bad.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_documents([str(tmp_path / "bad.yaml")])


def test_autoscale_flags_are_an_hpa_the_parser_reads():
    spec = parse_hpa(hpa_document("bert", 1, 10, 10.0, False))
    assert (spec.min_replicas, spec.max_replicas, spec.scale_target_ref.name) == (1, 10, "bert")
    with pytest.raises(UserError):
        hpa_document("bert", 1, 10, 0, False)
