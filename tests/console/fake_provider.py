"""A console provider whose state the test drives: a sentiment service scaling out on a spot/on-demand pool."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tidal.clock import Clock
from tidal.console.model import (Decision, Event, Latency, Node, NodePool, NodePools, Overview, Replica, ReplicaCounts,
                                 Series, ServiceDetail, ServiceSummary, Usage)
from tidal.errors import InvalidArgument, NotFound

# ecs.c6.xlarge's list prices (tidal/capacity/catalog.json).
ON_DEMAND = 0.17
SPOT = {"cn-hangzhou-h": 0.034, "cn-hangzhou-i": 0.031}


@dataclass
class FakeReplica:
    name: str
    node: str
    zone: str
    billing: str
    state: str
    started_at: float


class FakeProvider:
    """State changes only when the test calls `scale_out`, `preempt_replica` or `scale`; the clock supplies times."""

    def __init__(self, clock: Clock, history_seconds: int = 600, neighbours: bool = False) -> None:
        self.clock = clock
        self.neighbours = neighbours
        self.replicas: list[FakeReplica] = []
        self.events: list[Event] = []
        self.decisions: list[Decision] = []
        self.samples: list[tuple[float, float, float, float, int, int]] = []  # t, qps, p50, p99, spot, od
        self.desired = 0
        self.actions_seen: list[tuple[str, str, float]] = []
        now = clock.now()
        self._add(2, now - history_seconds)
        # A past for the charts: ~12 QPS at 2 replicas, with an earlier burst that took 2 more spot replicas.
        for k in range(history_seconds // 5):
            t = now - history_seconds + 5 * k
            burst = 30 * math.sin(math.pi * (k - 30) / 40) if 30 <= k < 70 else 0.0
            qps = 12 + 4 * math.sin(k / 9) + burst
            extra = 2 if 36 <= k < 76 else 0
            self.samples.append((t, qps, 4.0 + qps / 20, 9.0 + qps / 4 + max(0.0, burst - 10) / 2, 1 + extra, 1))

    # -- what the test drives
    def _add(self, n: int, at: float) -> None:
        for _ in range(n):
            i = len(self.replicas)
            # 30% on-demand above base, as the reference procedure's pool: every third or so is on-demand.
            billing = "on-demand" if i % 3 == 0 else "spot"
            zone = list(SPOT)[i % 2]
            node = f"inference-{zone[-1]}-{i:02d}"
            self.replicas.append(FakeReplica(f"sentiment-202406-tensorflow-serving-{i:02d}", node, zone, billing,
                                             "ready", at))
            self.events.append(Event(time=at, kind="Launched", object=node,
                                     message=f"ecs.c6.xlarge {billing} in {zone}"))
        self.desired = len(self.replicas)

    def scale_out(self, n: int, qps: float) -> None:
        now = self.clock.now()
        before = len(self.replicas)
        self.decisions.append(Decision(time=now, current_replicas=before, desired_replicas=before + n,
                                       reason="ScaleUpLimit" if n > 4 else "SucceededRescale",
                                       message=f"the HPA's sls_ingress_qps average {qps / max(1, before):.1f} "
                                               f"above target 10"))
        self.events.append(Event(time=now, kind="ScaledUp", object="sentiment",
                                 message=f"replicas {before} -> {before + n}"))
        self._add(n, now)
        self.record(qps)

    def preempt_replica(self, index: int) -> None:
        now = self.clock.now()
        r = self.replicas[index]
        r.state = "draining"
        self.events.append(Event(time=now, kind="PreemptionNotice", object=r.node,
                                 message="spot instance reclaimed in 120 s; draining its replicas"))

    def record(self, qps: float) -> None:
        spot = sum(1 for r in self.replicas if r.billing == "spot")
        self.samples.append((self.clock.now(), qps, 4.0 + qps / 40, 12.0 + qps / 8, spot, len(self.replicas) - spot))

    # -- ConsoleProvider
    def _summary(self) -> ServiceSummary:
        cost = sum(ON_DEMAND if r.billing == "on-demand" else SPOT[r.zone] for r in self.replicas)
        last = self.samples[-1]
        return ServiceSummary(name="sentiment", model="sentiment", version="1623831335", runtime="onnxruntime_onnx",
                              endpoint="http://127.0.0.1:8501",
                              replicas=ReplicaCounts(desired=self.desired,
                                                     ready=sum(1 for r in self.replicas if r.state == "ready")),
                              qps=last[1], latency_ms=Latency(p50=last[2], p99=last[3]),
                              cost_per_hour=cost, on_demand_cost_per_hour=ON_DEMAND * len(self.replicas))

    def overview(self) -> Overview:
        services = [self._summary()]
        if self.neighbours:  # other services that do not change, so the list looks like a real one
            services += [
                ServiceSummary(name="half-plus-two", model="half_plus_two", version="123", runtime="onnxruntime_onnx",
                               replicas=ReplicaCounts(desired=1, ready=1), qps=3.2,
                               latency_ms=Latency(p50=0.41, p99=1.2), cost_per_hour=ON_DEMAND,
                               on_demand_cost_per_hour=ON_DEMAND),
                ServiceSummary(name="minilm", model="minilm", version="1", runtime="onnxruntime_onnx",
                               replicas=ReplicaCounts(desired=3, ready=2), qps=41.7,
                               latency_ms=Latency(p50=18.3, p99=61.0), cost_per_hour=0.034 * 2 + ON_DEMAND,
                               on_demand_cost_per_hour=ON_DEMAND * 3),
            ]
        return Overview(services=services)

    async def service(self, name: str) -> ServiceDetail | None:
        if name != "sentiment":
            return None
        s = self.samples
        cost = [sp * sum(SPOT.values()) / 2 + od * ON_DEMAND for *_, sp, od in s]
        return ServiceDetail(
            service=self._summary(),
            replicas=[Replica(name=r.name, node=r.node, instance_type="ecs.c6.xlarge", zone=r.zone,
                              billing=r.billing, state=r.state, started_at=r.started_at) for r in self.replicas],
            series=Series(t=[x[0] for x in s], qps=[x[1] for x in s], p50_ms=[x[2] for x in s],
                          p99_ms=[x[3] for x in s], replicas_spot=[x[4] for x in s],
                          replicas_on_demand=[x[5] for x in s], cost_per_hour=cost),
            decisions=self.decisions, events=self.events)

    def nodepools(self) -> NodePools:
        nodes = [Node(name=r.node, zone=r.zone, instance_type="ecs.c6.xlarge", billing=r.billing,
                      state="running" if r.state == "ready" else "preempting",
                      price_per_hour=ON_DEMAND if r.billing == "on-demand" else SPOT[r.zone],
                      cpu=Usage(used=2.5, total=4), memory_mb=Usage(used=3100, total=8192), replicas=[r.name])
                 for r in self.replicas]
        policy = {"scaling": "auto", "billing": "spot with on-demand", "on_demand_base_capacity": 0,
                  "on_demand_percentage_above_base": 30, "spot_instance_pools": 2,
                  "compensate_with_on_demand": True, "spot_remedy": True, "multi_zone": "cost-optimized",
                  "instance_types": "ecs.c6.xlarge", "zones": ", ".join(SPOT)}
        return NodePools(pools=[NodePool(name="inference", labels={"inference": "tensorflow"}, policy=policy,
                                         nodes=nodes)])

    async def scale(self, service: str, replicas: int) -> str:
        if service != "sentiment":
            raise NotFound(f"no service {service!r}")
        if replicas > 50:
            raise InvalidArgument("at most 50 replicas")
        self.actions_seen.append(("scale", service, replicas))
        self.desired = replicas
        return f"sentiment: desired replicas set to {replicas}"

    async def preempt(self, node: str, notice_seconds: float | None) -> str:
        self.actions_seen.append(("preempt", node, notice_seconds))
        notice = 120.0 if notice_seconds is None else notice_seconds  # the pool's own notice when not given
        return f"{node}: preemption in {notice:g} s"
