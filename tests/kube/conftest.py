"""Fixtures for the Kubernetes backend's tests: one real control plane per session (see cluster.py), built from
the components' Go modules on first use and cached outside the repository (scripts/kube-binaries.sh)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kube.cluster import (
    BINARIES,
    ClusterError,
    ControlPlane,
    FakeNode,
    binaries_present,
    build_binaries,
    default_bin_dir,
    go_available,
)

# Set once per session by pytest_collection_finish: the bin folder, or why there is none.
_BINARIES: dict[str, object] = {}
_PLANE: list[ControlPlane] = []


def _wants_cluster(session: pytest.Session) -> bool:
    here = Path(__file__).parent
    return any(Path(str(item.path)).is_relative_to(here) for item in session.items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the binaries before any test runs, so minutes of `go build` never count against a test's timeout."""
    if session.config.option.collectonly or not _wants_cluster(session) or _BINARIES:
        return
    preset = os.environ.get("TIDAL_KUBE_BIN")
    if not go_available():
        if preset and binaries_present(Path(preset)):
            _BINARIES["bin"] = Path(preset)
        else:
            _BINARIES["skip"] = ("Go is not installed: the Kubernetes tests build " + ", ".join(BINARIES)
                                 + " from their Go modules (scripts/kube-binaries.sh)")
        return
    if os.environ.get("TIDAL_KUBE_BUILD") != "1" and not binaries_present(default_bin_dir()):
        # Building Kubernetes from its Go modules takes about ten minutes of two cores and 4-5 GB: the default
        # suite uses binaries already built and leaves the build to scripts/test-kube.sh.
        _BINARIES["skip"] = (f"the Kubernetes binaries are not built in {default_bin_dir()}: "
                             "scripts/test-kube.sh builds them (about 10 minutes) and runs these tests")
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        started = time.monotonic()
        try:
            _BINARIES["bin"] = build_binaries()
        except ClusterError as error:
            _BINARIES["error"] = str(error)
        took = time.monotonic() - started
        if took > 5:
            print(f"\nkube: binaries ready in {took:.0f} s", flush=True)


@dataclass(frozen=True)
class KubeCluster:
    """What a test gets: the admin kubeconfig, a client for it, and the binaries (kubectl-free: use the client)."""

    server: str
    kubeconfig: Path
    api: object  # kubernetes.client.ApiClient
    bin_dir: Path
    work_dir: Path
    nodes: tuple[FakeNode, ...]
    start_seconds: float

    def tool(self, name: str) -> Path:
        return self.bin_dir / name


@pytest.fixture(scope="session")
def kube_bin() -> Path:
    """The folder holding the binaries (built before the tests by pytest_collection_finish)."""
    if "skip" in _BINARIES:
        pytest.skip(str(_BINARIES["skip"]))
    if "error" in _BINARIES:
        pytest.fail(str(_BINARIES["error"]), pytrace=False)
    if "bin" not in _BINARIES:  # collected without our hook having run (e.g. the fixture asked for elsewhere)
        if not go_available():
            pytest.skip("Go is not installed: the Kubernetes tests build their binaries from Go modules")
        _BINARIES["bin"] = build_binaries()
    return Path(_BINARIES["bin"])


@pytest.fixture(scope="session")
def kube_cluster(kube_bin, tmp_path_factory) -> Iterator[KubeCluster]:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1, random ports."""
    kubernetes = pytest.importorskip("kubernetes", reason="the Kubernetes client is missing (pip install tidal[dev])")

    started = time.monotonic()
    plane = ControlPlane(bin_dir=kube_bin, work_dir=tmp_path_factory.mktemp("kube"))
    plane.start()
    _PLANE.append(plane)
    api = None
    try:
        api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        plane.add_nodes(kubernetes.client.CoreV1Api(api))
        yield KubeCluster(
            server=plane.server, kubeconfig=plane.kubeconfig, api=api, bin_dir=plane.bin_dir,
            work_dir=plane.work_dir, nodes=plane.nodes, start_seconds=time.monotonic() - started,
        )
    finally:
        if api is not None:
            api.close()
        plane.stop()
        _PLANE.clear()


@pytest.fixture
def namespace(kube_cluster) -> Iterator[str]:
    """A fresh namespace, ready for Pods (its default ServiceAccount exists), deleted afterwards."""
    from kubernetes import client, watch

    core = client.CoreV1Api(kube_cluster.api)
    name = f"t-{secrets.token_hex(4)}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # The controller manager's serviceaccount controller creates it; Pods are refused until it exists.
    watcher = watch.Watch()
    for event in watcher.stream(core.list_namespaced_service_account, name, timeout_seconds=30):
        if event["object"].metadata.name == "default":
            watcher.stop()
            break
    else:
        pytest.fail(f"namespace {name} got no default ServiceAccount in 30 s (is kube-controller-manager up?)")
    yield name
    core.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and _PLANE and "kube_cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("kube control plane logs", _PLANE[0].describe_logs()))
    return report
