"""Autoscaling (pure): each autoscaled service's HPA sync and, in burst mode, the burst tick and overlay.

The HPA and burst rules are tidal.autoscaling's `decide` functions; this module
paces them (an HPA sync every sync period, a burst tick every tick), combines
them, and says what to store and which events to write. What the control plane
remembers between passes is `AutoscalingMemory`, passed in and returned; what
must outlive a restart (the HPA's history, the panic state) is the stored
`AutoscalerMemory` record, read from the snapshot and written by a command.
A service that may scale to zero (`minReplicas: 0`) is decided here with a floor
of one; going to zero and back is tidal.control.decide.zero's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from tidal.autoscaling import burst
from tidal.autoscaling.hpa import Recommendation, decide as hpa_decide
from tidal.autoscaling.metrics import Metrics, ready_pods
from tidal.autoscaling.spec import HPASpec, parse_hpa, qps_service
from tidal.control.commands import Command, Event, Note, SaveAutoscaler, SetDesired
from tidal.control.decide.zero import floor_of_one
from tidal.control.records import AutoscalerMemory, AutoscalerStatus, BurstReport, MetricReport
from tidal.control.snapshot import Snapshot
from tidal.control.store import ServiceRow
from tidal.states import ReplicaState as S

Real = Callable[[float], float]  # the clock's seconds -> real seconds (the gateway counts real ones)


@dataclass(frozen=True)
class AutoscalingMemory:
    last_sync: Mapping[str, float] = field(default_factory=dict)
    recs: Mapping[str, Recommendation] = field(default_factory=dict)          # the latest HPA recommendation
    decisions: Mapping[str, burst.BurstDecision] = field(default_factory=dict)  # the latest burst decision
    last_tick: Mapping[str, float] = field(default_factory=dict)
    burst_noted: frozenset[str] = frozenset()  # services told burst mode does not apply


@dataclass(frozen=True)
class Result:
    commands: list[Command]
    memory: AutoscalingMemory
    burst_tick_seconds: float | None  # the shortest burst tick of any service (the loop's pace)


def workload_name(name: str) -> str | None:
    m = re.fullmatch(r"(.+?)-[0-9]{6,}(-[a-z]+-serving)?", name)
    return m.group(1) if m else None


def hpa_window(qps_window_seconds: float, real: Real) -> float:
    return max(1.0, real(qps_window_seconds))


def windows(spec: HPASpec, qps_window_seconds: float, real: Real) -> list[float]:
    """The gateway QPS windows (real seconds) a service's decisions read: the HPA's, and burst mode's two."""
    out = [hpa_window(qps_window_seconds, real)]
    if spec.burst.enabled and (burst.qps_target(spec) or 0) > 0:
        out += [max(1.0, real(spec.burst.stable_window_seconds)), max(1.0, real(spec.burst.panic_window_seconds))]
    return out


def parse(document: dict) -> tuple[HPASpec | None, str | None]:
    try:
        return parse_hpa(document), None
    except Exception as exc:  # a stored document that no longer parses: report, keep the service
        return None, str(exc)


def decide(snap: Snapshot, qps: Mapping[tuple[str, float], float], memory: AutoscalingMemory,
           qps_window_seconds: float, real: Real) -> Result:
    """`qps[(service, window)]` is the gateway's QPS over `window` real seconds (0 for a service it has not
    routed; no key while the gateway cannot be reached, which the HPA reads as a missing metric)."""
    out: list[Command] = []
    mem = _Mutable(memory)
    ticks: list[float] = []
    for name, svc in snap.services.items():
        scaler = snap.autoscalers.get(name)
        if scaler is None:
            continue
        spec, error = parse(scaler.document)
        if spec is None:
            out.append(Note(Event("FailedGetScale", f"service/{name}", f"autoscaler unreadable: {error}")))
            continue
        if spec.min_replicas == 0:
            if svc.desired == 0:
                continue  # scaled to zero: the zero step brings it back when a request waits
            spec = floor_of_one(spec)
        target = burst.qps_target(spec)
        if spec.burst.enabled and not (target and target > 0) and name not in mem.burst_noted:
            mem.burst_noted.add(name)
            out.append(Note(Event("BurstUnavailable", f"service/{name}",
                                  "burst mode needs an External QPS metric with an AverageValue target: HPA only")))
        bursting = spec.burst.enabled and bool(target and target > 0)
        if bursting:
            ticks.append(spec.burst.tick_seconds)
        stored = scaler.memory or AutoscalerMemory()
        status = scaler.status
        ready = len(snap.of(name, (S.READY,)))
        synced = False
        last = mem.last_sync.get(name)
        if last is None or snap.now - last >= spec.controller.sync_period_seconds:
            mem.last_sync[name] = snap.now
            metrics = _metrics(spec, svc, qps, hpa_window(qps_window_seconds, real), ready)
            rec, hpa_state = hpa_decide(spec, metrics, stored.hpa, svc.desired, snap.now)
            mem.recs[name] = rec
            # Kept in the store, so a restarted control plane scales in no sooner than this one would have.
            stored = stored.model_copy(update={"hpa": hpa_state})
            qps_now = next(iter(metrics.external.values()), None)
            status = AutoscalerStatus(
                time=snap.now, current=rec.current_replicas, desired=rec.desired_replicas, reason=rec.reason,
                message=rec.message, qps=qps_now,
                metrics=[MetricReport(metric=m.metric, average_value=m.average_value, value=m.value,
                                      proposal=m.proposal, error=m.error) for m in rec.metrics])
            out.append(SaveAutoscaler(name, status=status, memory=stored))
            synced = True
            if not bursting and rec.rescale and rec.desired_replicas != svc.desired:
                out.append(SetDesired(name, rec.desired_replicas, Event(
                    "SuccessfulRescale", f"service/{name}",
                    rec.event() + (f" (QPS {qps_now:.1f})" if qps_now is not None else ""))))
        if not bursting:
            continue
        ticked = False
        last_tick = mem.last_tick.get(name)
        if last_tick is None or snap.now - last_tick >= spec.burst.tick_seconds:
            mem.last_tick[name] = snap.now
            stable = qps.get((name, max(1.0, real(spec.burst.stable_window_seconds))), 0.0)
            panic = qps.get((name, max(1.0, real(spec.burst.panic_window_seconds))), 0.0)
            # A decider without history (first tick, or after a restart that lost it) holds what is running.
            state = stored.burst or burst.initial_state(ready, snap.now)
            decision, state = burst.decide(spec.burst, target, stable, panic, ready, state, snap.now,
                                           min_replicas=spec.min_replicas, max_replicas=spec.max_replicas)
            mem.decisions[name] = decision
            stored = stored.model_copy(update={"burst": state})
            out.append(SaveAutoscaler(name, memory=stored))
            ticked = True
            if decision.reason in ("PanicStarted", "PanicEnded"):
                out.append(Note(Event("BurstPanic" if decision.reason == "PanicStarted" else "BurstPanicEnded",
                                      f"service/{name}", f"{decision.reason}: {decision.message}")))
        if synced or ticked:
            out += _overlay(spec, svc, snap.now, mem, status)
    return Result(out, mem.freeze(), min(ticks, default=None))


def _overlay(spec: HPASpec, svc: ServiceRow, now: float, mem: "_Mutable", status: AutoscalerStatus | None) -> list[Command]:
    """A burst-mode service's count: the HPA's, raised to the burst decider's while it panics."""
    name = svc.spec.name
    rec, decision = mem.recs.get(name), mem.decisions.get(name)
    if rec is None or decision is None:
        return []
    if svc.desired == 0 and spec.min_replicas != 0:
        return []  # the HPA's rule: a target scaled to zero by hand has scaling disabled
    desired, reason = burst.overlay(rec, decision, svc.desired)
    if reason == "BurstPanic":
        message = decision.message
    elif reason == "AwaitingSync":
        message = f"holding {desired} until the next HPA sync sees the count burst mode set"
    else:
        message = rec.message
    qps = status.qps if status is not None else None
    report = BurstReport(reason=decision.reason, panicking=decision.panicking, stable_qps=decision.stable_qps,
                         panic_qps=decision.panic_qps, desired=decision.desired_replicas,
                         ready=decision.ready_replicas)
    base = status.model_dump(exclude={"version"}) if status is not None else {}
    out: list[Command] = [SaveAutoscaler(name, status=AutoscalerStatus(**{
        **base, "time": now, "current": svc.desired, "desired": desired, "reason": reason, "message": message,
        "burst": report}))]
    if desired == svc.desired:
        return out
    if reason == "BurstPanic":
        text = (f"New size: {desired}; reason: burst: panic window QPS {decision.panic_qps:.1f} "
                f"(stable window {decision.stable_qps:.1f}) for {decision.ready_replicas} ready replica(s)")
    else:
        text = f"New size: {desired}; reason: {rec.rescale_reason or rec.reason}" + \
            (f" (QPS {qps:.1f})" if qps is not None else "")
    out.append(SetDesired(name, desired, Event("SuccessfulRescale", f"service/{name}", text)))
    return out


def _metrics(spec: HPASpec, svc: ServiceRow, qps: Mapping[tuple[str, float], float], window: float,
             ready: int) -> Metrics:
    external: dict[str, float] = {}
    for m in spec.metrics:
        if m.type != "External" or m.external is None:
            continue
        target = qps_service(m.external.metric, spec.namespace, svc.spec.name)
        if target is None:
            continue
        if target not in (svc.spec.name, svc.spec.release, svc.spec.workload) and workload_name(target) != svc.spec.name:
            continue
        if (svc.spec.name, window) in qps:  # missing while the gateway cannot be reached: the HPA holds
            external[m.external.metric.name] = qps[(svc.spec.name, window)]
    return Metrics(external=external, pods=ready_pods(ready, svc.spec.name), status_replicas=svc.desired)


class _Mutable:
    """The memory while one pass works on it (copied in, frozen out)."""

    def __init__(self, m: AutoscalingMemory) -> None:
        self.last_sync, self.recs = dict(m.last_sync), dict(m.recs)
        self.decisions, self.last_tick = dict(m.decisions), dict(m.last_tick)
        self.burst_noted = set(m.burst_noted)

    def freeze(self) -> AutoscalingMemory:
        return AutoscalingMemory(self.last_sync, self.recs, self.decisions, self.last_tick, frozenset(self.burst_noted))
