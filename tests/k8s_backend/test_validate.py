"""`tidal export kubernetes` output against kubernetes-validate's schemas in strict mode, for the oldest and the
newest Kubernetes release it knows (its schemas ship with the package: no network)."""

from __future__ import annotations

import pytest
import yaml

from tidal.cli import main

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (pip install tidal[dev])")

SERVICE = """
kind: Service
spec:
  name: bert-tfserving
  version: "202107141745"
  model_path: /models/bert
  data: [{volume: model-pvc, mount: /models}]
  cpu: 1
  memory_mib: 2048
  gpus: 1
  version_policy: "latest:2"
  tolerations: ["all", "karpenter.sh/capacity-type=spot:NoSchedule"]
  selector: {karpenter.sh/capacity-type: spot}
  env: {MODEL_LOG: info}
  IMAGE
---
apiVersion: autoscaling/v2beta1
kind: HorizontalPodAutoscaler
metadata: {name: bert-tfserving-hpa}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: bert-tfserving-202107141745-tensorflow-serving}
  minReplicas: 1
  maxReplicas: 10
  metrics:
  - type: External
    external:
      metricName: sls_ingress_qps
      metricSelector: {matchLabels: {sls.logstore: nginx-ingress}}
      targetAverageValue: 10
"""


def versions() -> list[str]:
    from kubernetes_validate.utils import all_versions
    known = all_versions()
    return [known[0], known[-1]]


def strict(objects: list[dict], version: str) -> None:
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
    for obj in objects:
        try:
            kv.validate(obj, version, strict=True)
        except ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} against {version}: {path}: {exc.message}")
        except SchemaNotFoundError as exc:  # a kind the release does not have fails too, not a warning
            pytest.fail(exc.message)


def export(argv: list[str], capsys) -> list[dict]:
    assert main(["export", "kubernetes", *argv]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_the_package_ships_its_schemas():
    """The strict schemas of both releases are files inside the package: validating needs no network."""
    from importlib.resources import files
    schemas = files("kubernetes_validate") / "kubernetes-json-schema"
    oldest, newest = versions()
    assert release(oldest) < release(newest)
    for version in (oldest, newest):
        folder = schemas / f"v{version}-local-strict"
        assert (folder / "deployment-apps-v1.json").is_file() and (folder / "_definitions.json").is_file()


@pytest.mark.parametrize("image", ["", "image: tensorflow/serving:2.16.1"])
@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_service_manifests(which, image, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    version = versions()[0 if which == "oldest" else 1]
    path = tmp_path / "service.yaml"
    path.write_text(SERVICE.replace("IMAGE", image))
    objects = export(["-f", str(path), "-n", "serving", "--ingress-host", "bert.example.com",
                      "--kubernetes-version", version], capsys)
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                            "HorizontalPodAutoscaler", "Ingress"]
    strict(objects, version)
    pre_stop = objects[1]["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]
    assert list(pre_stop) == (["exec"] if release(version) < (1, 30) else ["sleep"])


def test_the_sleep_action_is_refused_before_1_30(tmp_path, monkeypatch, capsys):
    """Why --kubernetes-version exists: the default output uses a field the oldest release lacks (the check fails)."""
    from kubernetes_validate.utils import ValidationError
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    path = tmp_path / "service.yaml"
    path.write_text(SERVICE.replace("IMAGE", ""))
    deployment = export(["-f", str(path)], capsys)[1]
    with pytest.raises(ValidationError, match="sleep"):
        kv.validate(deployment, "1.28", strict=True)  # 1.29 knows the field, behind a gate that is off


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_control_plane_manifests(which, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    objects = export(["--control-plane", "-n", "tidal", "--replicas", "2"], capsys)
    strict(objects, versions()[0 if which == "oldest" else 1])
