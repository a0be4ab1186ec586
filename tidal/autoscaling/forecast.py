"""Predictive floors, pure: a service's request rate learned by time of day and of week, and the floor it implies.

The history is two seasonal profiles of slots (15 min by default): one per slot of
the day, one per slot of the week. When a slot ends, its mean rate is folded into
both profiles (an exponential average, so a change of habit takes over in a few days
or weeks). The forecast for a moment is the week's profile at that slot blended with
the day's (the week knows weekends, the day adapts sooner); a slot never seen has no
forecast. The floor looks ahead by the measured cold start (how long a new replica
took to become ready, learned the same way) plus one slot, so that replicas are ready
when the rate comes, and only raises the HPA's minimum: a surprise is the reactive
rule's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

DAY = 86400.0
WEEK = 7 * DAY
ALPHA = 0.5  # weight of the newest day (or week) in a slot's average
DEFAULT_COLD_START = 30.0  # seconds, until one is measured


@dataclass(frozen=True)
class History:
    slot_seconds: float = 900.0
    daily: tuple[float | None, ...] = ()
    weekly: tuple[float | None, ...] = ()
    slot: int | None = None       # the slot being summed (absolute: epoch seconds // slot_seconds)
    slot_sum: float = 0.0
    slot_count: int = 0
    cold_start: float | None = None  # seconds from a replica's creation to its readiness, averaged


def _fold(profile: tuple[float | None, ...], size: int, index: int, value: float) -> tuple[float | None, ...]:
    p = list(profile) if len(profile) == size else [None] * size
    old = p[index]
    p[index] = value if old is None else (1 - ALPHA) * old + ALPHA * value
    return tuple(p)


def observe(h: History, now: float, qps: float) -> History:
    """One sample of the rate at `now` (epoch seconds). A slot closes when a sample of a later slot comes."""
    slot = int(now // h.slot_seconds)
    if h.slot is None:
        return replace(h, slot=slot, slot_sum=qps, slot_count=1)
    if slot == h.slot:
        return replace(h, slot_sum=h.slot_sum + qps, slot_count=h.slot_count + 1)
    if slot < h.slot:  # the clock went back (a restored record): start the slot over
        return replace(h, slot=slot, slot_sum=qps, slot_count=1)
    mean = h.slot_sum / h.slot_count
    per_day, per_week = round(DAY / h.slot_seconds), round(WEEK / h.slot_seconds)
    return replace(h, daily=_fold(h.daily, per_day, h.slot % per_day, mean),
                   weekly=_fold(h.weekly, per_week, h.slot % per_week, mean),
                   slot=slot, slot_sum=qps, slot_count=1)


def observe_cold_start(h: History, seconds: float) -> History:
    old = h.cold_start
    return replace(h, cold_start=seconds if old is None else (1 - ALPHA) * old + ALPHA * seconds)


def forecast(h: History, at: float) -> float | None:
    """The expected rate at `at` (epoch seconds); None when that slot was never seen."""
    slot = int(at // h.slot_seconds)
    per_day, per_week = round(DAY / h.slot_seconds), round(WEEK / h.slot_seconds)
    day = h.daily[slot % per_day] if len(h.daily) == per_day else None
    week = h.weekly[slot % per_week] if len(h.weekly) == per_week else None
    if day is None and week is None:
        return None
    if week is None:
        return day
    if day is None:
        return week
    return (day + week) / 2


def lead_seconds(h: History) -> float:
    return (h.cold_start if h.cold_start is not None else DEFAULT_COLD_START) + h.slot_seconds


def floor(h: History, now: float, per_replica: float) -> tuple[int, float | None]:
    """(replicas, the rate they are for): enough for the largest rate forecast from now to the lead's end.
    `per_replica`: the rate one replica carries (the QPS target)."""
    if per_replica <= 0:
        return 0, None
    ahead = [forecast(h, now + k * h.slot_seconds) for k in range(int(lead_seconds(h) // h.slot_seconds) + 1)]
    ahead.append(forecast(h, now + lead_seconds(h)))
    known = [r for r in ahead if r is not None]
    if not known:
        return 0, None
    rate = max(known)
    return math.ceil(rate / per_replica - 1e-9), rate
