"""Fakes injected through the control plane's interfaces: a backend without processes, a gateway without sockets."""

from __future__ import annotations

from tidal.backends.base import (Adoption, CapacityUnavailable, NodeLaunch, ReplicaLaunch, ReplicaPhase, ReplicaStatus,
                                 StartedReplica)
from tidal.errors import NotFound


class FakeBackend:
    """Replicas are entries in `procs` (id -> ref); `ready` answer their probe, `failing` cannot load (id -> why)."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeLaunch] = {}
        self.procs: dict[str, dict] = {}               # replica id -> ref of a "running" process
        self.launches: list[ReplicaLaunch] = []
        self.ready: set[str] = set()                   # replicas whose health check answers 200
        self.failing: dict[str, str] = {}              # replicas that run but cannot load their model: why
        self.auto_ready = True
        self.spot_caps: dict[str, int] = {}            # zone -> capacity
        self.stopped: list[str] = []
        self.provisioner = self
        self._pid = 1000

    def adopt_node(self, node: NodeLaunch) -> None:
        self.nodes[node.name] = node

    def launch_node(self, node: NodeLaunch, spot_held_in_zone: int, now: float) -> None:
        cap = self.spot_caps.get(node.zone)
        if node.billing == "spot" and cap is not None and spot_held_in_zone >= cap:
            raise CapacityUnavailable(f"no spot capacity in {node.zone}")
        self.nodes[node.name] = node

    def terminate_node(self, name: str) -> None:
        self.nodes.pop(name, None)

    def spot_capacity(self, pool: str, zone: str, now: float) -> int | None:
        return self.spot_caps.get(zone)

    def start_replica(self, launch: ReplicaLaunch) -> StartedReplica:
        self._pid += 1
        ref = {"pid": self._pid}
        self.procs[launch.replica] = ref
        self.launches.append(launch)
        if self.auto_ready:
            self.ready.add(launch.replica)
        return StartedReplica(ref=ref, endpoint=f"127.0.0.1:{20000 + self._pid}")

    def stop_replica(self, replica: str, ref, grace_seconds: float) -> None:
        self.procs.pop(replica, None)
        self.stopped.append(replica)

    async def observe_replicas(self, refs, known_ready=frozenset()):
        out = {}
        for rid, ref in refs.items():
            if self.procs.get(rid) != ref:
                out[rid] = ReplicaStatus(ReplicaPhase.EXITED, "exit status 1")
            elif rid in self.failing:
                out[rid] = ReplicaStatus(ReplicaPhase.FAILED, self.failing[rid])
            elif rid in known_ready or rid in self.ready:
                out[rid] = ReplicaStatus(ReplicaPhase.READY, runtime="onnxruntime")  # an ONNX model's engine
            else:
                out[rid] = ReplicaStatus(ReplicaPhase.STARTING)
        return out

    def adopt(self, refs) -> Adoption:
        running = frozenset(rid for rid, ref in refs.items() if self.procs.get(rid) == ref)
        removed = []
        for rid in [rid for rid in self.procs if rid not in running]:
            removed.append((rid, f"stray process {self.procs.pop(rid)['pid']} the store does not know: killed"))
        return Adoption(running, tuple(removed))

    def logs(self, replica: str, tail: int = 100) -> str:
        return ""

    def close(self) -> None:
        pass


class FakeGateway:
    def __init__(self) -> None:
        self.services_: dict[str, list] = {}
        self.models_: dict[str, tuple[str, ...]] = {}         # service -> model names it answers for
        self.qps_: dict[str, float] = {}
        self.window_qps_: dict[str, dict[float, float]] = {}  # service -> {window: QPS}, over qps_
        self.windows_asked: list[float] = []

    def set_service(self, name, replicas, hosts=(), models=(), **_):
        for other, held in self.models_.items():
            taken = set(models) & set(held)
            if other != name and taken:  # as the gateway does: one service per model name
                raise ValueError(f"model name {sorted(taken)[0]!r} is already routed to service {other!r}")
        self.services_[name] = list(replicas)
        self.models_[name] = tuple(models)

    def remove_service(self, name):
        self.services_.pop(name, None)
        self.models_.pop(name, None)

    def services(self):
        return sorted(self.services_)

    def qps(self, service, window_seconds):
        if service not in self.services_:
            raise NotFound(service)
        self.windows_asked.append(window_seconds)
        by_window = self.window_qps_.get(service, {})
        if window_seconds in by_window:
            return by_window[window_seconds]
        return self.qps_.get(service, 0.0)

    def stats(self, service):
        raise NotFound(service)

    def states(self, service) -> dict[str, str]:
        return {ep.id: ep.state for ep in self.services_.get(service, [])}
