"""Scale to zero (pure): a service whose autoscaler allows zero replicas goes to zero when idle, back to one on demand.

The semantics are Knative's (its activator), not the HPA's HPAScaleToZero gate, which
scales to zero whenever the metric reads zero: here a service with `minReplicas: 0`
goes to zero only after `idle_seconds` (an annotation, default 5 min) in which the
gateway saw no request (none answered, none in flight, none queued), and goes from
zero to one as soon as the gateway holds a request for it. The HPA itself runs with
a floor of one, so between one and the maximum it decides as it always does.

Activity is read from the gateway at each pass (`Activity`): the counter of requests it
has answered and what it holds now. What changed since the last pass is activity, so
a request that came and went between passes counts. The memory of the last active
instant is this step's (`ZeroMemory`, passed in and returned); after a restart it
starts again from the first pass, which can only delay going to zero, never hasten it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from tidal.autoscaling.spec import HPASpec
from tidal.control.commands import Command, Event, SaveAutoscaler, SetDesired
from tidal.control.records import AutoscalerStatus
from tidal.control.snapshot import Snapshot

SCALED_TO_ZERO = "ScaledToZero"
SCALE_FROM_ZERO = "ScaleFromZero"


@dataclass(frozen=True)
class Activity:
    """What the gateway reports for a service: requests answered so far, in flight now, queued now."""
    requests: int
    in_flight: int = 0
    queued: int = 0


@dataclass(frozen=True)
class ZeroMemory:
    last_active: Mapping[str, float] = field(default_factory=dict)
    seen: Mapping[str, int] = field(default_factory=dict)  # the gateway's request counter at the last pass


def scales_to_zero(spec: HPASpec | None) -> bool:
    return spec is not None and spec.min_replicas == 0


def floor_of_one(spec: HPASpec) -> HPASpec:
    """The spec the HPA decides with: zero is this step's business, so the HPA never goes below one."""
    return spec.model_copy(update={"min_replicas": 1}) if spec.min_replicas == 0 else spec


def decide(snap: Snapshot, specs: Mapping[str, HPASpec], activity: Mapping[str, Activity | None],
           memory: ZeroMemory) -> tuple[list[Command], ZeroMemory]:
    """`specs`: the parsed autoscalers of services that may scale to zero; `activity[name]` is None (or absent)
    while the gateway cannot be reached: no activity is known, so nothing goes to zero and nothing wakes."""
    out: list[Command] = []
    last_active, seen = dict(memory.last_active), dict(memory.seen)
    for name in list(last_active):
        if name not in specs:
            last_active.pop(name, None)
            seen.pop(name, None)
    for name, spec in specs.items():
        svc = snap.services.get(name)
        act = activity.get(name)
        if svc is None or act is None:
            continue
        busy = act.in_flight > 0 or act.queued > 0 or act.requests != seen.get(name, act.requests)
        seen[name] = act.requests
        if busy or name not in last_active:
            last_active[name] = snap.now
        if svc.desired == 0:
            if act.queued > 0:
                message = f"New size: 1; reason: {act.queued} request(s) waiting at the gateway"
                out.append(SetDesired(name, 1, Event(SCALE_FROM_ZERO, f"service/{name}", message)))
                out.append(_status(name, snap.now, 0, 1, SCALE_FROM_ZERO, message))
            continue
        idle = snap.now - last_active[name]
        if idle >= spec.zero.idle_seconds:
            message = f"New size: 0; reason: no request for {idle:.0f}s (idle period {spec.zero.idle_seconds:g}s)"
            out.append(SetDesired(name, 0, Event(SCALED_TO_ZERO, f"service/{name}", message)))
            out.append(_status(name, snap.now, svc.desired, 0, SCALED_TO_ZERO, message))
    return out, ZeroMemory(last_active, seen)


def _status(name: str, now: float, current: int, desired: int, reason: str, message: str) -> Command:
    return SaveAutoscaler(name, status=AutoscalerStatus(time=now, current=current, desired=desired, reason=reason,
                                                        message=message))
