"""Tidal's state in a ConfigMap of the real API server: written when it changed, read back by a new store, and a
second writer refused rather than overwritten."""

from __future__ import annotations

import pytest

from tidal.backends.kubernetes.state import CONFIG_MAP, ClusterStore, StateError
from tidal.control.store import NodeRow
from tidal.spec import NodePoolSpec, ServiceSpec
from tidal.states import NodeState

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_state_round_trip_and_one_writer(kube_cluster, namespace):
    from kubernetes import client
    core = client.CoreV1Api(kube_cluster.api)
    first = ClusterStore(kube_cluster.api, namespace)
    assert not first.sync()  # nothing changed: nothing written
    assert not [c for c in core.list_namespaced_config_map(namespace).items if c.metadata.name == CONFIG_MAP]
    first.create_service(ServiceSpec(name="bert", version="v1", model_path="/models/bert"), 10.0)
    first.create_pool(NodePoolSpec(name="gpu", spot=True), 10.0)
    first.add_node(NodeRow("spot-a-1", "gpu", "zone-a", "t1", "spot", NodeState.READY, 10.0))
    first.add_event(11.0, "ServiceCreated", "service/bert", "created")
    assert first.sync() and not first.sync()

    again = ClusterStore(kube_cluster.api, namespace)  # a restarted control plane
    assert [s.spec.name for s in again.list_services()] == ["bert"]
    assert [n.name for n in again.nodes()] == ["spot-a-1"]
    assert [e.kind for e in again.events()] == ["ServiceCreated"]

    # the Node released, then claimed again: the earlier claim keeps its history under another name
    again.update_node("spot-a-1", state=NodeState.TERMINATED, terminated_at=20.0)
    again.add_node(NodeRow("spot-a-1", "gpu", "zone-a", "t1", "spot", NodeState.READY, 30.0))
    names = {n.name: n.state for n in again.nodes(include_terminated=True)}
    assert names == {"spot-a-1": NodeState.READY, "spot-a-1@20": NodeState.TERMINATED}
    assert again.sync()

    # finished rows beyond the newest few are trimmed when written
    again.MAX_FINISHED = 1
    again.update_node("spot-a-1", state=NodeState.TERMINATED, terminated_at=40.0)
    assert again.sync()
    assert [n.name for n in again.nodes(include_terminated=True)] == ["spot-a-1"]

    # the first store read an older version: its write is refused, in one line
    first.set_meta("k", "v")
    with pytest.raises(StateError, match="changed by another control plane") as err:
        first.sync()
    assert "\n" not in str(err.value)
    assert ClusterStore(kube_cluster.api, namespace).get_meta("k") is None
    first.close()
    again.close()


def test_state_that_is_not_tidals_is_one_line(kube_cluster, namespace):
    from kubernetes import client
    client.CoreV1Api(kube_cluster.api).create_namespaced_config_map(
        namespace, {"metadata": {"name": CONFIG_MAP}, "binaryData": {"state.sqlite.gz": "bm90IGd6aXA="}})
    with pytest.raises(StateError, match="does not hold Tidal's state"):
        ClusterStore(kube_cluster.api, namespace)
