"""Replica placement (pure): a replica goes only to a node whose labels match its selector and that has the CPU, memory and GPUs it asks for."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resources:
    cpu: float = 0.0
    memory_mib: float = 0.0
    gpus: int = 0

    def __add__(self, o: "Resources") -> "Resources":
        return Resources(self.cpu + o.cpu, self.memory_mib + o.memory_mib, self.gpus + o.gpus)

    def __sub__(self, o: "Resources") -> "Resources":
        return Resources(self.cpu - o.cpu, self.memory_mib - o.memory_mib, self.gpus - o.gpus)

    def fits_in(self, free: "Resources") -> bool:
        # A small epsilon so 0.1 + 0.2 CPUs fit in 0.3.
        return (self.cpu <= free.cpu + 1e-9 and self.memory_mib <= free.memory_mib + 1e-9
                and self.gpus <= free.gpus)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str]
    allocatable: Resources
    schedulable: bool = True  # False once a node has a preemption notice or is going away
    preferred: bool = True    # False for a node its pool is shrinking: used only when nothing else fits
    zone: str = ""


@dataclass(frozen=True)
class ReplicaRequest:
    replica: str
    selector: dict[str, str]
    resources: Resources
    group: str = ""                        # its service: replicas of one group spread over nodes and zones
    avoid: frozenset[str] = frozenset()    # nodes it must not go to (a replica of its group is leaving them)


@dataclass(frozen=True)
class Bind:
    replica: str
    node: str
    colocated: bool = False  # the node already held a replica of its group


@dataclass(frozen=True)
class Placement:
    binds: list[Bind] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # replicas that fit nowhere: they make a pool grow


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def schedule(requests: list[ReplicaRequest], nodes: list[NodeInfo], used: dict[str, Resources],
             placed: dict[str, dict[str, int]] | None = None) -> Placement:
    """Place `requests` in order onto `nodes`, given what is `used` on each node already and how many
    replicas of each group each node holds (`placed[node][group]`).

    Among the nodes that fit, a preferred node wins over one its pool is shrinking;
    then the node, and then the zone, holding fewer replicas of the request's group
    (a soft spread, like kube-scheduler's default topology spread, so one lost node
    or zone takes as few of a service's replicas as it can); then the most allocated
    (bin packing, like the MostAllocated scoring of kube-scheduler), which leaves
    whole nodes empty so the pool can scale them in. Ties go to the node name, so
    the result is deterministic.
    """
    free = {n.name: n.allocatable - used.get(n.name, Resources()) for n in nodes}
    counts = {n.name: dict((placed or {}).get(n.name, {})) for n in nodes}
    zone_of = {n.name: n.zone for n in nodes}
    binds: list[Bind] = []
    pending: list[str] = []
    for req in requests:
        zones: dict[str, int] = {}
        if req.group:
            for name, c in counts.items():
                zones[zone_of[name]] = zones.get(zone_of[name], 0) + c.get(req.group, 0)
        best: NodeInfo | None = None
        best_key = None
        for node in nodes:
            if not node.schedulable or node.name in req.avoid or not matches(req.selector, node.labels):
                continue
            if not req.resources.fits_in(free[node.name]):
                continue
            mine = counts[node.name].get(req.group, 0) if req.group else 0
            key = (node.preferred, -mine, -zones.get(node.zone, 0) if req.group else 0,
                   _allocated_share(node.allocatable, free[node.name]), _neg(node.name))
            if best_key is None or key > best_key:
                best, best_key = node, key
        if best is None:
            pending.append(req.replica)
        else:
            free[best.name] = free[best.name] - req.resources
            colocated = bool(req.group) and counts[best.name].get(req.group, 0) > 0
            if req.group:
                counts[best.name][req.group] = counts[best.name].get(req.group, 0) + 1
            binds.append(Bind(req.replica, best.name, colocated))
    return Placement(binds, pending)


def _allocated_share(total: Resources, free: Resources) -> float:
    shares = [(t - f) / t for t, f in ((total.cpu, free.cpu), (total.memory_mib, free.memory_mib),
                                       (float(total.gpus), float(free.gpus))) if t > 0]
    return sum(shares) / len(shares) if shares else 0.0


def _neg(name: str) -> tuple[int, ...]:
    # Reverse order for the tie-break inside a max(): the lowest name wins.
    return tuple(-ord(c) for c in name)


def nodes_needed(requests: list[Resources], node_size: Resources) -> int:
    """How many empty nodes of `node_size` hold `requests` (first-fit decreasing); -1 if one never fits."""
    bins: list[Resources] = []
    for r in sorted(requests, key=lambda r: (r.gpus, r.cpu, r.memory_mib), reverse=True):
        if not r.fits_in(node_size):
            return -1
        for i, free in enumerate(bins):
            if r.fits_in(free):
                bins[i] = free - r
                break
        else:
            bins.append(node_size - r)
    return len(bins)
