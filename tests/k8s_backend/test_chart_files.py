"""The Helm chart's files agree with the code they mirror: the version, the presets, the Lease, the image's user.

(`tests/kube/test_helm_chart.py` renders the chart with the helm binary and compares every object.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from tidal.backends.kubernetes import controlplane
from tidal.backends.kubernetes.lease import DEFAULT_LEASE
from tidal.backends.kubernetes.presets import DEFAULT_PRESET, PROVIDERS

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tidal"


def test_app_version_is_the_package_s():
    version = tomllib.loads((CHART.parents[2] / "pyproject.toml").read_text())["project"]["version"]
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == version


def test_values_defaults_are_the_export_s():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    opts = controlplane.ControlPlaneOptions()
    assert values["provider"] == DEFAULT_PRESET == opts.provider
    assert values["leaderElection"] == {"leaseName": DEFAULT_LEASE, "leaseSeconds": opts.lease_seconds}
    assert values["resources"] == opts.resources and values["replicas"] == opts.replicas
    assert f'{values["image"]["repository"]}:{values["image"]["tag"]}' == opts.image
    assert values["image"]["pullPolicy"] == opts.image_pull_policy


def test_the_chart_knows_every_preset():
    """A preset added to the code must be accepted by the chart (its render refuses any other value)."""
    text = (CHART / "templates" / "configmap.yaml").read_text()
    listed = re.search(r'\$providers := list ((?:"[a-z-]+" ?)+)', text)
    assert listed, "the chart's list of providers moved"
    assert sorted(re.findall(r'"([a-z-]+)"', listed.group(1))) == sorted(PROVIDERS)


def test_the_pod_runs_as_the_image_s_user():
    text = (CHART / "templates" / "deployment.yaml").read_text()
    assert f"runAsUser: {controlplane.USER_ID}" in text and f"fsGroup: {controlplane.USER_ID}" in text
