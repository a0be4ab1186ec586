"""Autoscaling (pure): each autoscaled service's HPA sync and, in burst mode, the burst tick and overlay.

The HPA and burst rules are tidal.autoscaling's `decide` functions; this module
paces them (an HPA sync every sync period, a burst tick every tick), combines
them, and says what to store and which events to write. What the control plane
remembers between passes is `AutoscalingMemory`, passed in and returned; what
must outlive a restart (the HPA's history, the panic state) is the stored
`AutoscalerMemory` record, read from the snapshot and written by a command.
A service that may scale to zero (`minReplicas: 0`) is decided here with a floor
of one; going to zero and back is tidal.control.decide.zero's.

Besides QPS, an HPA may read the gateway's signals (concurrency, queue length, p90
latency: `gateway`) and metrics the replicas expose (`scraped`); the HPA's rule picks
the largest proposal. Cron windows and the forecast raise the minimum for a sync
(`floors` in the result: the zero step leaves such a service up).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from tidal.autoscaling import burst, forecast, schedule
from tidal.autoscaling.hpa import Recommendation, decide as hpa_decide
from tidal.autoscaling.metrics import Metrics
from tidal.autoscaling.signals import gateway_values, metrics_for, replica_metrics, uses_gateway_signals
from tidal.autoscaling.spec import HPASpec, qps_service
from tidal.autoscaling.hpafile import parse_hpa
from tidal.gateway.metrics import GatewaySignals
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
    floors: Mapping[str, int] = field(default_factory=dict)  # services a schedule or forecast holds up now


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


def reads_gateway_signals(spec: HPASpec) -> bool:
    return uses_gateway_signals(spec)


def scrape_targets(snap: Snapshot) -> dict[str, tuple[dict[str, dict[str, str]], dict[str, str]]]:
    """Per service whose HPA names a replica metric: (metric -> labels, ready replica id -> "host:port")."""
    out = {}
    for name, scaler in snap.autoscalers.items():
        spec, _ = parse(scaler.document)
        wanted = replica_metrics(spec) if spec is not None else {}
        endpoints = {r.id: r.endpoint for r in snap.of(name, (S.READY,)) if r.endpoint}
        if wanted and endpoints:
            out[name] = (wanted, endpoints)
    return out


def parse(document: dict) -> tuple[HPASpec | None, str | None]:
    try:
        return parse_hpa(document), None
    except Exception as exc:  # a stored document that no longer parses: report, keep the service
        return None, str(exc)


def decide(snap: Snapshot, qps: Mapping[tuple[str, float], float], memory: AutoscalingMemory,
           qps_window_seconds: float, real: Real, *, gateway: Mapping[str, GatewaySignals | None] | None = None,
           scraped: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None) -> Result:
    """`qps[(service, window)]` is the gateway's QPS over `window` real seconds (0 for a service it has not
    routed; no key while the gateway cannot be reached, which the HPA reads as a missing metric).
    `gateway[service]`: its signals over the HPA's window (None while the gateway cannot be reached);
    `scraped[service][metric][replica]`: what its replicas' Prometheus endpoints read."""
    out: list[Command] = []
    mem = _Mutable(memory)
    ticks: list[float] = []
    floors: dict[str, int] = {}
    gateway, scraped = gateway or {}, scraped or {}
    for name, svc in snap.services.items():
        scaler = snap.autoscalers.get(name)
        if scaler is None:
            continue
        spec, error = parse(scaler.document)
        if spec is None:
            out.append(Note(Event("FailedGetScale", f"service/{name}", f"autoscaler unreadable: {error}")))
            continue
        stored = scaler.memory or AutoscalerMemory()
        floor, why = _floor(spec, stored, snap.now)
        if floor > 0:
            floors[name] = floor
        if spec.min_replicas == 0:
            if svc.desired == 0:
                if floor > 0:  # a window opens (or the forecast rises) while at zero: up before the requests
                    out.append(SetDesired(name, floor, Event("SuccessfulRescale", f"service/{name}",
                                                             f"New size: {floor}; reason: {why}")))
                continue  # scaled to zero: the zero step brings it back when a request waits
            spec = floor_of_one(spec)
        if floor > spec.min_replicas:
            spec = spec.model_copy(update={"min_replicas": floor})
        target = burst.qps_target(spec)
        if spec.burst.enabled and not (target and target > 0) and name not in mem.burst_noted:
            mem.burst_noted.add(name)
            out.append(Note(Event("BurstUnavailable", f"service/{name}",
                                  "burst mode needs an External QPS metric with an AverageValue target: HPA only")))
        bursting = spec.burst.enabled and bool(target and target > 0)
        if bursting:
            ticks.append(spec.burst.tick_seconds)
        status = scaler.status
        ready = len(snap.of(name, (S.READY,)))
        synced = False
        last = mem.last_sync.get(name)
        if last is None or snap.now - last >= spec.controller.sync_period_seconds:
            mem.last_sync[name] = snap.now
            window = hpa_window(qps_window_seconds, real)
            ready_ids = tuple(r.id for r in snap.of(name, (S.READY,)))
            qps_now = qps.get((svc.spec.name, window))
            metrics = _metrics(spec, svc, qps, window, ready_ids, gateway.get(name), scraped.get(name, {}))
            rec, hpa_state = hpa_decide(spec, metrics, stored.hpa, svc.desired, snap.now)
            mem.recs[name] = rec
            # Kept in the store, so a restarted control plane scales in no sooner than this one would have.
            stored = stored.model_copy(update={"hpa": hpa_state})
            if spec.predictive.enabled:
                stored = stored.model_copy(update={"forecast": _learn(spec, stored, snap, name, qps_now, last)})
            status = AutoscalerStatus(
                time=snap.now, current=rec.current_replicas, desired=rec.desired_replicas, reason=rec.reason,
                message=rec.message, qps=qps_now,
                metrics=[MetricReport(metric=m.metric, average_value=m.average_value, value=m.value,
                                      proposal=m.proposal, error=m.error) for m in rec.metrics])
            out.append(SaveAutoscaler(name, status=status, memory=stored))
            synced = True
            if not bursting and rec.rescale and rec.desired_replicas != svc.desired:
                text = rec.event() + (f" (QPS {qps_now:.1f})" if qps_now is not None else "")
                if floor > 0 and rec.reason == "TooFewReplicas":
                    text += f" ({why})"
                out.append(SetDesired(name, rec.desired_replicas, Event("SuccessfulRescale", f"service/{name}", text)))
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
    return Result(out, mem.freeze(), min(ticks, default=None), floors)


def _floor(spec: HPASpec, stored: AutoscalerMemory, now: float) -> tuple[int, str]:
    """The minimum a schedule window or the forecast asks for now (within maxReplicas), and why."""
    best, why = schedule.floor(spec.schedule, now)
    text = f"schedule window {why.text()!r}" if why is not None else ""
    target = burst.qps_target(spec)
    if spec.predictive.enabled and stored.forecast is not None and target:
        ahead, rate = forecast.floor(stored.forecast, now, target)
        if ahead > best:
            best = ahead
            text = (f"forecast of {rate:.1f} QPS within {forecast.lead_seconds(stored.forecast):.0f}s "
                    f"(cold start {stored.forecast.cold_start or forecast.DEFAULT_COLD_START:.0f}s + one slot)")
    return min(best, spec.max_replicas), text


def _learn(spec: HPASpec, stored: AutoscalerMemory, snap: Snapshot, name: str, qps: float | None,
           last_sync: float | None) -> forecast.History:
    """The seasonal history with this sync's rate, and the cold starts of replicas that became ready since."""
    h = stored.forecast or forecast.History(slot_seconds=spec.predictive.slot_seconds)
    if qps is not None:
        h = forecast.observe(h, snap.now, qps)
    for r in snap.of(name, (S.READY,)):
        if r.ready_at is not None and (last_sync is None or r.ready_at > last_sync):
            h = forecast.observe_cold_start(h, r.ready_at - r.created_at)
    return h


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
             ready: tuple[str, ...], signals: GatewaySignals | None,
             scraped: Mapping[str, Mapping[str, float]]) -> Metrics:
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
    values = gateway_values(signals.concurrency, signals.queued, signals.p90) if signals is not None else None
    return metrics_for(spec, external=external, gateway=values, scraped=scraped, ready=ready, desired=svc.desired)


class _Mutable:
    """The memory while one pass works on it (copied in, frozen out)."""

    def __init__(self, m: AutoscalingMemory) -> None:
        self.last_sync, self.recs = dict(m.last_sync), dict(m.recs)
        self.decisions, self.last_tick = dict(m.decisions), dict(m.last_tick)
        self.burst_noted = set(m.burst_noted)

    def freeze(self) -> AutoscalingMemory:
        return AutoscalingMemory(self.last_sync, self.recs, self.decisions, self.last_tick, frozenset(self.burst_noted))
