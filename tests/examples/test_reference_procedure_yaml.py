"""Checks the reference procedure's YAML files in examples/reference-procedure: verbatim copies of its text, and the HPA in three
API versions meaning the same."""

from __future__ import annotations

import hashlib

import pytest
import yaml

from tests.conftest import EXAMPLES_DIR

REFERENCE_DIR = EXAMPLES_DIR / "reference-procedure"
# sha256 of the reference procedure's YAML blocks (dedented, its `//` comments made `#`), taken from its text when
# the files were copied; the text is not part of the repository, so the test pins the digests instead of reading it.
VERBATIM = {
    "pvc.yaml": "3b554a6a9881a044d2d0a538a1f406abfc792ea254f7f51d174a6197f6da0164",
    "hpa.yaml": "655d43e89960a3be4e7890934c10a359d070e88b1e0ee28e06c36eb3981fac3f",
}


def _load_all(name: str) -> list[dict]:
    return list(yaml.safe_load_all((REFERENCE_DIR / name).read_text(encoding="utf-8")))


def test_all_files_parse():
    for path in sorted(REFERENCE_DIR.glob("*.yaml")):
        documents = _load_all(path.name)
        assert documents and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in documents), path


def test_pvc_documents():
    pv, pvc = _load_all("pvc.yaml")
    assert (pv["kind"], pvc["kind"]) == ("PersistentVolume", "PersistentVolumeClaim")
    assert pv["spec"]["csi"]["volumeHandle"] == pv["metadata"]["name"] == "model-csi-pv"
    assert pv["spec"]["csi"]["volumeAttributes"]["bucket"] == "<Your Bucket>"
    assert pvc["metadata"]["name"] == "model-pvc"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"


@pytest.mark.parametrize("name", sorted(VERBATIM))
def test_verbatim_from_the_reference_procedure(name):
    assert hashlib.sha256((REFERENCE_DIR / name).read_bytes()).hexdigest() == VERBATIM[name]


def test_hpa_versions_mean_the_same():
    from tidal.autoscaling.hpafile import parse_hpa

    specs = {name: parse_hpa(_load_all(name)[0]) for name in ("hpa.yaml", "hpa-v2beta2.yaml", "hpa-v2.yaml")}
    assert specs["hpa.yaml"] == specs["hpa-v2beta2.yaml"] == specs["hpa-v2.yaml"]
    (v1beta1,) = _load_all("hpa.yaml")
    (v2,) = _load_all("hpa-v2.yaml")
    old = v1beta1["spec"]["metrics"][0]["external"]
    new = v2["spec"]["metrics"][0]["external"]
    assert new["metric"] == {"name": old["metricName"], "selector": old["metricSelector"]}
    assert new["target"] == {"type": "AverageValue", "averageValue": old["targetAverageValue"]}
