"""`tidal context add` against a real API server: a working kubeconfig, a missing namespace, a refused token,
and a cluster that does not answer each get one line, and only a working context is stored."""

from __future__ import annotations

import pytest
import yaml

from tests.kube.cluster import free_ports
from tidal.backends.kubernetes.contexts import ContextStore
from tidal.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TIDAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TIDAL_CONTEXT", raising=False)
    return tmp_path


def changed_kubeconfig(kube_cluster, path, **changes):
    config = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    if "token" in changes:
        config["users"][0]["user"]["token"] = changes["token"]
    if "server" in changes:
        config["clusters"][0]["cluster"]["server"] = changes["server"]
    path.write_text(yaml.safe_dump(config))
    return path


def test_add_checks_the_cluster(kube_cluster, namespace, home, capsys):
    assert main(["context", "add", "test", "--kubernetes", "--kubeconfig", str(kube_cluster.kubeconfig),
                 "--namespace", namespace]) == 0
    assert "Kubernetes v1." in capsys.readouterr().out
    assert ContextStore.from_env().get("test").namespace == namespace


@pytest.mark.parametrize("case, message", [
    ("namespace", "namespace no-such-ns does not exist"),
    ("token", "refused the credentials (401)"),
    ("server", "cannot be reached"),
])
def test_a_context_that_does_not_work_is_one_line(kube_cluster, home, capsys, case, message):
    path = home / "kubeconfig"
    if case == "token":
        changed_kubeconfig(kube_cluster, path, token="wrong")
    elif case == "server":
        changed_kubeconfig(kube_cluster, path, server=f"https://127.0.0.1:{free_ports(1)[0]}")
    else:
        changed_kubeconfig(kube_cluster, path)
    ns = "no-such-ns" if case == "namespace" else "default"
    assert main(["context", "add", "bad", "--kubernetes", "--kubeconfig", str(path), "-n", ns]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert [c.name for c in ContextStore.from_env().list()] == ["local"]  # nothing half-added


def test_a_backend_for_a_context(kube_cluster, namespace):
    from tidal.backends.kubernetes.backend import KubernetesBackend, KubernetesError
    from tidal.backends.kubernetes.contexts import Context, ContextKind
    from tidal.errors import UserError

    context = Context(name="test", kind=ContextKind.KUBERNETES, kubeconfig=str(kube_cluster.kubeconfig),
                      namespace=namespace, image="registry.example.com/tidal:1")
    backend = KubernetesBackend.for_context(context, {}.__getitem__)
    try:
        assert backend.provisioner is None and backend.ns == namespace
        assert backend.opts.image == "registry.example.com/tidal:1"
        assert backend.opts.prestop_exec is False  # the test cluster is 1.30 or newer: preStop sleeps by itself
        assert backend.adopt({}).running == frozenset()
    finally:
        backend.close()
    with pytest.raises(KubernetesError, match="not a Kubernetes context"):
        KubernetesBackend.for_context(Context(name="local"), {}.__getitem__)
    with pytest.raises(UserError, match="namespace nope does not exist"):
        KubernetesBackend.for_context(context.model_copy(update={"namespace": "nope"}), {}.__getitem__)


def test_the_provider_s_labels_are_checked_on_the_cluster(kube_cluster, namespace):
    """The test cluster's Nodes say spot or on-demand with Karpenter's label: the ack preset finds none of its own
    (one line), and a custom provider naming that label places by it."""
    from tidal.backends.kubernetes.contexts import Context, ContextKind
    from tidal.backends.kubernetes.wiring import connect
    from tidal.capacity.catalog import load_catalog
    from tidal.errors import UserError

    context = Context(name="test", kind=ContextKind.KUBERNETES, kubeconfig=str(kube_cluster.kubeconfig),
                      namespace=namespace, provider="ack")
    with pytest.raises(UserError, match="no Node carries node.alibabacloud.com/spot-strategy=SpotWithPriceLimit"):
        connect(context, load_catalog())
    custom = context.model_copy(update={"provider": "custom", "capacity_label": "karpenter.sh/capacity-type",
                                        "spot_value": "spot", "on_demand_value": "on-demand"})
    cluster = connect(Context.model_validate(custom.model_dump()), load_catalog())
    try:
        billings = {str(v.billing) for v in cluster.nodes.views().values()}
        assert billings == {"spot", "on-demand"}
    finally:
        cluster.close()
