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


def test_a_rollout_exports_the_canary_beside_the_stable_release():
    """During a rollout, the canary's own objects (arena's names with its version) and ingress-nginx's canary
    Ingress: the weight Tidal's gateway gives it, and the header it routes by. Strict for both releases."""
    from tidal.backends.kubernetes.render import RenderOptions, canary_manifests, manifests
    from tidal.commands.export import _view_canary
    from tidal.spec import ServiceSpec

    stable = ServiceSpec(name="bert", version="v1", model_path="s3://models/bert/1", image="tensorflow/serving:2.16.1")
    view = {"rollout": {"phase": "manual", "stable": "bert-v1", "canary": "bert-v2", "weight": 10, "releases": [
        {"name": "bert-v1", "version": "v1", "model_path": "s3://models/bert/1", "image": stable.image, "replicas": 3},
        {"name": "bert-v2", "version": "v2", "model_path": "s3://models/bert/2", "image": "tensorflow/serving:2.17.0",
         "replicas": 1}]}}
    canary = _view_canary(view, stable, "bert")
    assert (canary.spec.release, canary.spec.image, canary.spec.model_path, canary.weight, canary.replicas) == (
        "bert-v2", "tensorflow/serving:2.17.0", "s3://models/bert/2", 10, 1)
    opts = RenderOptions(namespace="serving", ingress_host="bert.example.com")
    objects = canary_manifests(canary.spec, opts, canary.replicas, canary.weight)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Deployment", "bert-v2-tensorflow-serving"), ("Service", "bert-v2-tensorflow-serving"),
        ("PodDisruptionBudget", "bert-v2-tensorflow-serving"), ("Ingress", "bert-v2-tensorflow-serving")]
    ingress = objects[-1]
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "10",
        "nginx.ingress.kubernetes.io/canary-by-header": "x-tidal-release",
        "nginx.ingress.kubernetes.io/canary-by-header-value": "bert-v2"}
    stable_ingress = manifests(stable, opts, with_ingress=True)[-1]
    assert "annotations" not in stable_ingress["metadata"]
    # the same host and path as the stable release's Ingress, to the canary's Service
    assert ingress["spec"]["rules"][0]["host"] == stable_ingress["spec"]["rules"][0]["host"] == "bert.example.com"
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == stable_ingress["spec"]["rules"][0]["http"]["paths"][0]["path"]
    assert path["backend"]["service"]["name"] == "bert-v2-tensorflow-serving"
    assert objects[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "tensorflow/serving:2.17.0"
    for version in versions():  # before 1.30 a preStop hook cannot sleep by itself: what --kubernetes-version does
        old = RenderOptions(namespace="serving", ingress_host="bert.example.com",
                            prestop_exec=release(version) < (1, 30))
        strict(canary_manifests(canary.spec, old, canary.replicas, canary.weight), version)
    # a rollout that is over exports one release
    for phase in ("promoted", "rolled-back"):
        assert _view_canary({"rollout": {**view["rollout"], "phase": phase}}, stable, "bert") is None
    assert _view_canary({"rollout": None}, stable, "bert") is None
