"""`tidal export kubernetes`: its manifests are accepted by a real kube-apiserver (server-side dry run, strict fields)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.kube.cluster import REPO_ROOT
from tidal.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

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
  tolerations: ["all"]
  selector: {karpenter.sh/capacity-type: spot}
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



def run_tidal(env: dict, *argv: str) -> str:
    """`tidal ARGV` in a child process with `env`; its output, or the test fails with its error."""
    proc = subprocess.run([sys.executable, "-m", "tidal", *argv], env=env, capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout

@pytest.mark.parametrize("image", ["", "image: tensorflow/serving:2.16.1"])
def test_exported_objects_pass_server_side_dry_run(kube_cluster, namespace, tmp_path, monkeypatch, capsys, image):
    from kubernetes import dynamic

    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    path = tmp_path / "service.yaml"
    path.write_text(SERVICE.replace("IMAGE", image))
    assert main(["export", "kubernetes", "-f", str(path), "-n", namespace, "--ingress-host", "bert.example.com"]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                            "HorizontalPodAutoscaler", "Ingress"]
    client = dynamic.DynamicClient(kube_cluster.api)
    for obj in objects:
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        # Strict: a field the API server does not know is an error, not a warning it drops (the dynamic client
        # does not pass fieldValidation, so the call goes through the ApiClient underneath).
        out = kube_cluster.api.call_api(
            resource.path(namespace=namespace), "POST", body=obj, auth_settings=["BearerToken"],
            query_params=[("dryRun", "All"), ("fieldValidation", "Strict")],
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            response_types_map={200: "object", 201: "object"}, _return_http_data_only=True)
        assert out["metadata"]["name"] == obj["metadata"]["name"]
        assert out["metadata"]["namespace"] == namespace
    # a field the API server does not know is refused: the check above can fail
    from kubernetes.client.exceptions import ApiException
    bad = {**objects[2], "spec": {**objects[2]["spec"], "portz": []}}
    with pytest.raises(ApiException, match="portz"):
        kube_cluster.api.call_api(
            client.resources.get(api_version="v1", kind="Service").path(namespace=namespace), "POST", body=bad,
            auth_settings=["BearerToken"], query_params=[("dryRun", "All"), ("fieldValidation", "Strict")],
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            response_types_map={200: "object", 201: "object"}, _return_http_data_only=True)
    # a dry run leaves nothing behind
    deployments = client.resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.get(namespace=namespace).items == []


def test_export_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    path = tmp_path / "service.yaml"
    path.write_text("kind: Service\nspec: {name: Bad_Name, version: v1, model_path: /m}\n")
    assert main(["export", "kubernetes", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "name" in err
    assert main(["export", "kubernetes", "-f", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_export_a_service_of_the_running_control_plane(kube_cluster, namespace, tmp_path):
    """`tidal export kubernetes NAME` against a real control plane (`tidal up`), then the API server's dry run."""
    import os

    env = {**os.environ, "TIDAL_HOME": str(tmp_path / "home")}
    env.pop("TIDAL_CONTEXT", None)
    (tmp_path / "bucket").mkdir()

    def tidal(*argv: str) -> str:
        return run_tidal(env, *argv)

    tidal("up", "--port", "0", "--gateway-port", "0")
    try:
        tidal("volume", "create", "model-pvc", "--url", f"file://{tmp_path / 'bucket'}")
        tidal("serve", "tensorflow", "--name=bert", "--version=v1", "--model-path=/models/bert",
              "--data=model-pvc:/models", "--replicas=0")
        tidal("autoscale", "bert", "--min", "1", "--max", "5", "--target-qps", "10")
        objects = list(yaml.safe_load_all(tidal("export", "kubernetes", "bert", "-n", namespace)))
    finally:
        subprocess.run([sys.executable, "-m", "tidal", "down"], env=env, capture_output=True, timeout=90,
                       cwd=REPO_ROOT)
    kinds = {o["kind"]: o for o in objects}
    assert list(kinds) == ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress"]
    assert kinds["Deployment"]["metadata"]["name"] == "bert-v1-tensorflow-serving"
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 5) and hpa["metrics"][0]["type"] == "External"
    from kubernetes import dynamic
    client = dynamic.DynamicClient(kube_cluster.api)
    for obj in objects:
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        resource.create(body=obj, namespace=namespace, dry_run="All")


def test_export_a_service_with_a_rollout(kube_cluster, namespace, tmp_path):
    """A service whose canary is in progress exports both releases and ingress-nginx's canary Ingress; the API
    server's strict dry run and kubernetes-validate's strict schemas accept every object."""
    import os

    from tests.kube.test_control_plane_export import strict_dry_run

    env = {**os.environ, "TIDAL_HOME": str(tmp_path / "home")}
    env.pop("TIDAL_CONTEXT", None)

    def tidal(*argv: str) -> str:
        return run_tidal(env, *argv)

    tidal("up", "--port", "0", "--gateway-port", "0")
    try:
        tidal("serve", "tensorflow", "--name=bert", "--version=v1", "--model-path=s3://models/bert/1",
              "--image=tensorflow/serving:2.16.1", "--replicas=0")
        tidal("serve", "update", "bert", "--canary-traffic-percent", "20", "--version", "v2",
              "--model-path", "s3://models/bert/2", "--image", "tensorflow/serving:2.17.0")
        objects = list(yaml.safe_load_all(tidal("export", "kubernetes", "bert", "-n", namespace,
                                                "--ingress-host", "bert.example.com")))
        tidal("serve", "promote", "bert")
        after = list(yaml.safe_load_all(tidal("export", "kubernetes", "bert", "-n", namespace)))
    finally:
        subprocess.run([sys.executable, "-m", "tidal", "down"], env=env, capture_output=True, timeout=90,
                       cwd=REPO_ROOT)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Deployment", "bert-v1-tensorflow-serving"), ("Service", "bert-v1-tensorflow-serving"),
        ("PodDisruptionBudget", "bert-v1-tensorflow-serving"), ("Ingress", "bert-v1-tensorflow-serving"),
        ("Deployment", "bert-v2-tensorflow-serving"), ("Service", "bert-v2-tensorflow-serving"),
        ("PodDisruptionBudget", "bert-v2-tensorflow-serving"), ("Ingress", "bert-v2-tensorflow-serving")]
    canary = objects[-1]["metadata"]["annotations"]
    assert canary == {"nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "20",
                      "nginx.ingress.kubernetes.io/canary-by-header": "x-tidal-release",
                      "nginx.ingress.kubernetes.io/canary-by-header-value": "bert-v2"}
    assert objects[4]["spec"]["template"]["spec"]["containers"][0]["image"] == "tensorflow/serving:2.17.0"
    # promoted: one release again, the canary's, with no canary Ingress
    assert [(o["kind"], o["metadata"]["name"]) for o in after if o["kind"] in ("Deployment", "Ingress")] == [
        ("Deployment", "bert-v2-tensorflow-serving"), ("Ingress", "bert-v2-tensorflow-serving")]
    assert "annotations" not in after[-1]["metadata"]
    for obj in objects:
        assert strict_dry_run(kube_cluster.api, obj, namespace)["metadata"]["name"] == obj["metadata"]["name"]
    kv = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate.utils import all_versions
    for obj in objects:
        kv.validate(obj, all_versions()[-1], strict=True)
