"""The JSON shapes the API returns (cli.md's JSON output contract), built from store rows."""

from __future__ import annotations

from tidal.control.store import NodeRow, ReplicaRow, ServiceRow
from tidal.states import REPLICA_ACTIVE, REPLICA_SERVING, ReplicaState


def service_view(row: ServiceRow, replicas: list[ReplicaRow], gateway_url: str,
                 autoscaler: tuple[dict, dict | None] | None = None, nodes: dict[str, NodeRow] | None = None) -> dict:
    spec = row.spec
    mine = [r for r in replicas if r.service == spec.name]
    shown = [r for r in mine if r.state in REPLICA_ACTIVE]
    available = sum(1 for r in mine if r.state in REPLICA_SERVING)
    # The latest failures with their reasons (a model path that does not exist, a process that exited), so
    # `serve get` says why a replica is not coming up; older ones are in `tidal events`.
    failed = sorted((r for r in mine if r.state == ReplicaState.FAILED), key=lambda r: -(r.stopped_at or r.created_at))[:3]
    out = {
        "name": spec.name,
        "version": spec.version,
        "type": spec.type,
        "endpoint": f"{gateway_url}/services/{spec.name}",
        "desired": row.desired,
        "available": available,
        "replicas": [{"name": r.id, "node": r.node, "state": r.state, "port": r.port, "pid": r.pid,
                      "billing": nodes[r.node].billing if nodes and r.node in nodes else None,
                      "zone": nodes[r.node].zone if nodes and r.node in nodes else None}
                     for r in shown],
        "failures": [{"name": r.id, "node": r.node, "reason": r.reason, "stopped_at": r.stopped_at} for r in failed],
        "release": spec.release,
        "workload": spec.workload,
        "model_name": spec.model_name,
        "model_path": spec.model_path,
        "version_policy": str(spec.version_policy),
        "image": spec.image,
        "gpus": spec.gpus,
        "selector": spec.selector,
        "data": [f"{m.volume}:{m.mount}" for m in spec.data],
        "ports": {"grpc": spec.port, "rest": spec.restful_port},
        "created_at": row.created_at,
    }
    if autoscaler is not None:
        document, last = autoscaler
        out["autoscaler"] = {"document": document, "last": last}
    return out


def node_view(n: NodeRow, price: float | None = None) -> dict:
    return {"name": n.name, "zone": n.zone, "instance_type": n.instance_type, "billing": n.billing,
            "state": n.state, "pool": n.pool, "launched_at": n.launched_at, "terminated_at": n.terminated_at,
            "empty_since": n.empty_since, "reclaim_at": n.reclaim_at, "price_per_hour": price}
