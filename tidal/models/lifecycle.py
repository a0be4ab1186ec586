"""Version states and the availability-preserving plan of loads and unloads (pure)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum


class VersionState(str, Enum):
    """TF Serving's ModelVersionStatus.State."""

    UNKNOWN = "UNKNOWN"
    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: int
    state: VersionState
    error_code: str = "OK"  # a canonical code name (tidal.errors.Code)
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class LoadFailure:
    attempts: int
    at: float  # clock.now() of the last failure


@dataclass(frozen=True, slots=True)
class Load:
    version: int


@dataclass(frozen=True, slots=True)
class Unload:
    version: int


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """TF Serving's defaults: 5 retries, one minute apart."""

    max_retries: int = 5
    interval_seconds: float = 60.0


def plan_transitions(aspired: Collection[int], states: Mapping[int, VersionState],
                     failures: Mapping[int, LoadFailure], retry: RetryPolicy, now: float) -> list[Load | Unload]:
    """What to load and unload next so that the aspired versions serve without a gap.

    Loads come first, newest first. A version that is no longer aspired is unloaded only once
    an aspired version is AVAILABLE (or when nothing is aspired at all: the versions were
    removed), so a new version that is still loading or failed to load leaves the old one
    serving. A failed version is retried after `retry.interval_seconds`, at most
    `retry.max_retries` times.
    """
    aspired = set(aspired)
    decisions: list[Load | Unload] = []
    for v in sorted(aspired, reverse=True):
        state = states.get(v, VersionState.UNKNOWN)
        if state in (VersionState.AVAILABLE, VersionState.LOADING, VersionState.UNLOADING):
            continue
        failure = failures.get(v)
        if failure is not None and (failure.attempts > retry.max_retries
                                    or now - failure.at < retry.interval_seconds):
            continue
        decisions.append(Load(v))
    an_aspired_serves = any(states.get(v) == VersionState.AVAILABLE for v in aspired)
    if an_aspired_serves or not aspired:
        for v in sorted(states):
            if v not in aspired and states[v] == VersionState.AVAILABLE:
                decisions.append(Unload(v))
    return decisions
