"""Tidal's fuller model: a service's replicas on spot and on-demand nodes, driven by requests and the autoscaler.

Beyond the protocol: spot reclaims come with a notice (the node keeps serving
while its replacement starts, as the live control plane's spot remedy does, and
goes when the notice ends), launches can also fail for
reasons other than capacity (the policy backs off), the replica count follows
the request rate through the autoscaler, and each request's latency comes from
an M/M/c model of the ready replicas (`tidal.sim.queueing`), so SLO attainment
and cost are reported together. The capacity policy is the very code the
control plane runs (`tidal.capacity.policies`).

The autoscaler is `tidal.autoscaling`'s HPA (the same `decide` the control
plane runs) on the reference procedure's external QPS metric (`sls_ingress_qps`, an
AverageValue target per replica), synced every `sync_period_seconds`, fed the
gateway-like windowed QPS of the simulated requests.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from tidal.autoscaling import HPAState, Metrics, decide as hpa_decide, parse_hpa
from tidal.autoscaling.metrics import ready_pods
from tidal.capacity.policies.types import PolicyDef
from tidal.sim import queueing
from tidal.sim.pool import SimPool


@dataclass(frozen=True)
class FleetSettings:
    tick_seconds: float = 10.0
    cold_start_seconds: float = 120.0
    notice_seconds: float = 120.0
    launch_failure_rate: float = 0.0      # launches refused for reasons other than capacity
    service_seconds: float = 0.05         # mean service time of one request on one server
    concurrency: int = 1                  # servers (model instances) per replica
    slo_seconds: float = 0.25
    target_qps_per_replica: float = 10.0  # the reference procedure's HPA target
    min_replicas: int = 1
    max_replicas: int = 10
    scale_down_stabilization_seconds: int = 300
    sync_period_seconds: float = 15.0
    qps_window_seconds: float = 60.0
    spot_price: float = 1.0               # per node-tick
    on_demand_price: float = 3.0
    scale_in_after_seconds: float = 0.0   # a node without a replica goes at once (a live pool's default is 600)
    notice_margin_seconds: float = 10.0   # a noticed node stops serving this long before it goes (the control plane's)


@dataclass(frozen=True)
class FleetResult:
    ticks: int
    requests: int
    slo_attainment: float          # share of requests answered within the SLO
    mean_latency_seconds: float    # over requests served by a non-overloaded pool
    failed_requests: int           # arrived while no replica was ready
    availability: float            # share of ticks with ready replicas >= desired
    cost: float
    on_demand_cost: float          # the same node-ticks, all on-demand
    preemptions: int
    launch_failures: int
    desired: np.ndarray = field(repr=False)
    ready: np.ndarray = field(repr=False)

    on_demand_price: float = 3.0

    @property
    def relative_cost(self) -> float:
        """Cost over the same node-ticks all on-demand (the savings view)."""
        return self.cost / self.on_demand_cost if self.on_demand_cost else 0.0

    @property
    def cost_vs_on_demand_policy(self) -> float:
        """Cost over what an on-demand-only pool of exactly the desired replicas would pay (the protocol's view)."""
        baseline = float(self.desired.sum()) * self.on_demand_price
        return self.cost / baseline if baseline else 0.0


def hpa_spec(s: FleetSettings):
    """The reference procedure's hpa.yaml, with the settings' target, bounds and scale-down window."""
    return parse_hpa({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "service"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "service"},
                 "minReplicas": s.min_replicas, "maxReplicas": s.max_replicas,
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "sls_ingress_qps"},
                     "target": {"type": "AverageValue", "averageValue": str(s.target_qps_per_replica)}}}],
                 "behavior": {"scaleDown": {"stabilizationWindowSeconds": s.scale_down_stabilization_seconds}}}})


def run_service(capacity: np.ndarray, zones: Sequence[str], arrivals: np.ndarray, policy: PolicyDef, params: Any,
                settings: FleetSettings, seed: int = 0, spot_prices: Sequence[float] | None = None) -> FleetResult:
    """One service for len(arrivals) ticks; `capacity` is zones x ticks (spot nodes each zone can hold).

    The Plans are carried out by the control plane's executor (`tidal.sim.pool.SimPool`): only nodes without a
    replica are terminated, and a busy node of a kind the Plan holds too many of is drained first (its replica
    moves to a node the Plan keeps), as in a live pool. Each replica holds one node (`SimPool.place`)."""
    s = settings
    n_zones, ticks = capacity.shape[0], len(arrivals)
    rng = np.random.default_rng(seed)
    prices = [s.spot_price] * n_zones if spot_prices is None else list(spot_prices)
    pool = SimPool(zones, prices, s.on_demand_price, s.scale_in_after_seconds, by_type=policy.by_type)
    if s.launch_failure_rate > 0:
        pool.refuse = lambda launch: launch.capacity_type == "spot" and rng.random() < s.launch_failure_rate
    price_of = dict(zip(zones, prices))
    state = policy.initial_state(params, list(pool.keys), seed)
    spec = hpa_spec(s)
    hpa_state, desired, next_sync = HPAState(), s.min_replicas, 0.0
    window_ticks = max(1, int(round(s.qps_window_seconds / s.tick_seconds)))
    # Plain Python numbers per tick, computed once: a run makes one pass per tick and numpy's per-element
    # indexing would be most of its time.
    counts = arrivals.tolist()
    arrived = [0, *itertools.accumulate(counts)]   # arrived[t]: requests before tick t
    caps = capacity.T.tolist()
    pods: dict[int, tuple] = {}                    # ready_pods(n), immutable, by n
    desired_log = np.zeros(ticks, dtype=np.int64)
    ready_log = np.zeros(ticks, dtype=np.int64)
    cost = node_ticks = 0.0
    met = latency_sum = served_ok = 0.0
    failed_requests = total_preempted = total_failed = 0
    for t in range(ticks):
        now = t * s.tick_seconds
        ready_at = now - s.cold_start_seconds
        pool.expire_notices(now)
        pool.set_capacity(caps[t])
        # The provider reclaims its newest nodes first and says so `notice_seconds` ahead.
        total_preempted += len(pool.reclaim(now, s.notice_seconds))
        lo = max(0, t - window_ticks)
        qps = float(arrived[t] - arrived[lo]) / ((t - lo) * s.tick_seconds) if t > lo else 0.0
        if now >= next_sync:
            if desired not in pods:
                pods[desired] = ready_pods(desired)
            rec, hpa_state = hpa_decide(spec, Metrics(external={"sls_ingress_qps": qps}, pods=pods[desired]),
                                        hpa_state, desired, now)
            desired, next_sync = rec.desired_replicas, now + s.sync_period_seconds
        pool.place(desired, now)
        obs = pool.observation(desired, now, s.cold_start_seconds, prices)
        plan, state = policy.decide(obs, params, state, now)
        pool.step(plan, None, now)  # this tick's capacity, set above
        total_failed += sum(pool.ledger.launch_failed.values())

        # Serving: ready nodes past their cold start, and, as in the control plane, a noticed node's replica
        # until a replacement is ready (the shortfall it covers) or its notice is nearly over.
        ready = noticed = 0
        tick_cost = 0.0
        for n in pool.nodes.values():
            tick_cost += price_of[n.zone] if n.billing == "spot" else s.on_demand_price
            if n.launched_at > ready_at:
                continue
            if n.state == "ready":
                ready += 1
            elif n.reclaim_at is not None and now < n.reclaim_at - s.notice_margin_seconds:
                noticed += 1
        ready += min(noticed, max(0, desired - ready))
        desired_log[t], ready_log[t] = desired, ready
        count = int(counts[t])
        if count:
            rate = count / s.tick_seconds
            if ready == 0:
                failed_requests += count
            else:
                share = queueing.within_slo(rate, ready * s.concurrency, s.service_seconds, s.slo_seconds)
                met += share * count
                mean = queueing.mean_latency(rate, ready * s.concurrency, s.service_seconds)
                if math.isfinite(mean):
                    latency_sum += mean * count
                    served_ok += count
        cost += tick_cost
        node_ticks += len(pool.nodes)
    total = int(arrivals.sum())
    return FleetResult(
        ticks=ticks, requests=total, slo_attainment=met / total if total else 1.0,
        mean_latency_seconds=latency_sum / served_ok if served_ok else math.inf,
        failed_requests=failed_requests, availability=float((ready_log >= desired_log).mean()),
        cost=cost, on_demand_cost=node_ticks * s.on_demand_price, preemptions=total_preempted,
        launch_failures=total_failed, desired=desired_log, ready=ready_log, on_demand_price=s.on_demand_price)
