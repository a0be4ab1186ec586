"""Checks the seed's YAML files in examples/seed: verbatim copies of the seed's text, and the HPA in three API versions meaning the same."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES_DIR

SEED_TEXT = Path("/work/shared/seed/elastic-inference-on-ecs.txt")
SEED_DIR = EXAMPLES_DIR / "seed"


def _load_all(name: str) -> list[dict]:
    return list(yaml.safe_load_all((SEED_DIR / name).read_text(encoding="utf-8")))


def _seed_block(first_line: str, end_marker: str) -> str:
    """The seed's YAML block from `first_line` up to the prose that follows it, dedented, `//` comments as `#`."""
    text = SEED_TEXT.read_text(encoding="utf-8")
    start = text.index(first_line)
    start = text.rindex("\n", 0, start) + 1
    end = text.index(end_marker, start)
    block = textwrap.dedent(text[start:end].rstrip() + "\n")
    block = re.sub(r" // ", " # ", block)
    return "\n".join(line.rstrip() for line in block.splitlines()) + "\n"


def test_all_files_parse():
    for path in sorted(SEED_DIR.glob("*.yaml")):
        documents = _load_all(path.name)
        assert documents and all(isinstance(d, dict) and "apiVersion" in d and "kind" in d for d in documents), path


def test_pvc_documents():
    pv, pvc = _load_all("pvc.yaml")
    assert (pv["kind"], pvc["kind"]) == ("PersistentVolume", "PersistentVolumeClaim")
    assert pv["spec"]["csi"]["volumeHandle"] == pv["metadata"]["name"] == "model-csi-pv"
    assert pv["spec"]["csi"]["volumeAttributes"]["bucket"] == "<Your Bucket>"
    assert pvc["metadata"]["name"] == "model-pvc"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"


@pytest.mark.skipif(not SEED_TEXT.is_file(), reason=f"seed text not present at {SEED_TEXT}")
@pytest.mark.parametrize(
    ("name", "first_line", "end_marker"),
    [
        ("pvc.yaml", "apiVersion: v1", "• bucket:"),
        ("hpa.yaml", "apiVersion: autoscaling/v2beta1", "The following list describes the HPA parameters"),
    ],
)
def test_verbatim_from_seed(name, first_line, end_marker):
    assert (SEED_DIR / name).read_text(encoding="utf-8") == _seed_block(first_line, end_marker)


def test_hpa_versions_mean_the_same():
    from tidal.autoscaling.spec import parse_hpa

    specs = {name: parse_hpa(_load_all(name)[0]) for name in ("hpa.yaml", "hpa-v2beta2.yaml", "hpa-v2.yaml")}
    assert specs["hpa.yaml"] == specs["hpa-v2beta2.yaml"] == specs["hpa-v2.yaml"]
    (v1beta1,) = _load_all("hpa.yaml")
    (v2,) = _load_all("hpa-v2.yaml")
    old = v1beta1["spec"]["metrics"][0]["external"]
    new = v2["spec"]["metrics"][0]["external"]
    assert new["metric"] == {"name": old["metricName"], "selector": old["metricSelector"]}
    assert new["target"] == {"type": "AverageValue", "averageValue": old["targetAverageValue"]}
