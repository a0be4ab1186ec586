"""Fakes injected through the control plane's interfaces: a backend without processes, a gateway without sockets."""

from __future__ import annotations

from tidal.backends.base import CapacityUnavailable, NodeLaunch, ReplicaHandle, ReplicaLaunch
from tidal.errors import NotFound


class FakeBackend:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeLaunch] = {}
        self.procs: dict[str, ReplicaHandle] = {}      # replica id -> handle of a "running" process
        self.launches: list[ReplicaLaunch] = []
        self.ready: set[str] = set()                   # replicas whose health check answers 200
        self.auto_ready = True
        self.spot_caps: dict[str, int] = {}            # zone -> capacity
        self.stopped: list[str] = []
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

    def start_replica(self, launch: ReplicaLaunch) -> ReplicaHandle:
        self._pid += 1
        h = ReplicaHandle(pid=self._pid, proc_start=1, port=20000 + self._pid, grpc_port=30000 + self._pid)
        self.procs[launch.replica] = h
        self.launches.append(launch)
        if self.auto_ready:
            self.ready.add(launch.replica)
        return h

    def stop_replica(self, replica: str, handle, grace_seconds: float) -> None:
        self.procs.pop(replica, None)
        self.stopped.append(replica)

    def replica_alive(self, replica: str, handle: ReplicaHandle) -> bool:
        h = self.procs.get(replica)
        return h is not None and h.pid == handle.pid

    async def replica_ready(self, handle: ReplicaHandle) -> bool:
        return any(h.pid == handle.pid and rid in self.ready for rid, h in self.procs.items())

    def orphans(self, known: dict[str, int]) -> list[tuple[str, int]]:
        return [(rid, h.pid) for rid, h in self.procs.items() if known.get(rid) != h.pid]

    def kill(self, pid: int) -> None:
        for rid, h in list(self.procs.items()):
            if h.pid == pid:
                del self.procs[rid]

    def log_path(self, replica: str) -> str:
        return f"/nonexistent/{replica}.log"

    def close(self) -> None:
        pass


class FakeGateway:
    def __init__(self) -> None:
        self.services_: dict[str, list] = {}
        self.qps_: dict[str, float] = {}
        self.window_qps_: dict[str, dict[float, float]] = {}  # service -> {window: QPS}, over qps_
        self.windows_asked: list[float] = []

    def set_service(self, name, replicas, hosts=(), models=(), **_):
        self.services_[name] = list(replicas)

    def remove_service(self, name):
        self.services_.pop(name, None)

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
