"""A service's releases during a rollout: the stable one, a canary beside it, their weights, guards and progress.

A service runs one release (its spec) until `tidal serve update NAME
--canary-traffic-percent N` starts a rollout: a second release (the canary's
spec) with its own replicas, sized on its share of the traffic. The rollout is
one typed, versioned record per service in the store; the decision
(tidal.control.decide.rollout) moves it on, the executor writes it. A finished
rollout (promoted or rolled back) stays as the service's last one, for the
console and `serve get`, until the next starts.

Everything a backend needs to run a release is here: `releases(...)` lists each
release with its spec and replica count, so the local backend runs one set of
processes per release and another backend one workload (a Deployment) per release.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tidal.spec import ServiceSpec

log = logging.getLogger(__name__)

VERSION = 1
# The fields a canary may change: what the replicas run. Resources and placement stay the service's, so a
# canary never needs a node its stable release would not fit on.
CANARY_FIELDS = ("version", "image", "model_path", "model_config_file", "version_policy", "env")


class Phase(StrEnum):
    PROGRESSING = "progressing"  # steps with a bake time each; the last one promotes
    MANUAL = "manual"            # weights as set by hand (`serve traffic`); guards still roll back
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled-back"


ACTIVE = frozenset({Phase.PROGRESSING, Phase.MANUAL})


class Guards(BaseModel):
    """When a canary is rolled back, judged by the gateway's counts of each release since its step began."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)        # the canary's share of 5xx answers
    max_p90_seconds: Optional[float] = Field(default=None, gt=0)   # the canary's p90 latency, absolute
    # The canary's p90 against the stable release's: slower than this many times (and by more than
    # P90_SLACK_SECONDS, so a few milliseconds of noise on a fast model never roll back) fails.
    max_p90_ratio: Optional[float] = Field(default=2.0, gt=1)
    # For classifiers: any class whose share of the canary's answers differs from the stable release's by more.
    max_class_shift: Optional[float] = Field(default=None, gt=0, le=1)
    min_requests: int = Field(default=20, ge=1, le=1_000_000)     # fewer canary requests: not judged yet


P90_SLACK_SECONDS = 0.05


class Rollout(BaseModel):
    """One service's rollout, as stored (a versioned JSON record)."""
    model_config = ConfigDict(extra="ignore", frozen=True)
    version: int = VERSION
    service: str
    stable: ServiceSpec
    canary: ServiceSpec
    phase: Phase
    weight: int = Field(ge=0, le=100)            # the canary's percent of the requests now
    mirror: int = Field(default=0, ge=0, le=100)  # percent of the requests also copied to the canary (answers dropped)
    steps: tuple[int, ...] = ()                   # the canary's percent at each step; () for a manual rollout
    step: int = 0                                 # index into steps
    bake_seconds: float = Field(default=0.0, ge=0)
    step_started_at: Optional[float] = None       # None until the canary has a ready replica
    guards: Guards = Guards()
    started_at: float
    finished_at: Optional[float] = None
    reason: str = ""                              # why it ended (a guard's verdict, or who promoted it)

    @property
    def weights(self) -> dict[str, int]:
        return {self.stable.release: 100 - self.weight, self.canary.release: self.weight}

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def progress(self) -> str:
        """One line: where it is."""
        if self.phase == Phase.PROGRESSING:
            step = f"step {self.step + 1}/{len(self.steps)}"
            waiting = " (waiting for a ready canary)" if self.step_started_at is None else ""
            return f"{step}: canary {self.canary.release} at {self.weight}%{waiting}"
        if self.phase == Phase.MANUAL:
            return f"canary {self.canary.release} at {self.weight}% (weights set by hand)"
        return f"{self.phase}: {self.reason}" if self.reason else str(self.phase)


@dataclass(frozen=True)
class Release:
    """A release as the replicas and the gateway see it: its name, spec, replica key and share."""
    name: str
    spec: ServiceSpec
    key: str            # the replicas' `release` column (tidal.control.decide.replicas.release_hash)
    weight: int         # percent of the requests
    replicas: int       # wanted now


def releases(spec: ServiceSpec, desired: int, rollout: Rollout | None) -> list[Release]:
    """The releases a service runs now: its own; during a rollout also the canary, each sized on its share
    (each at least one replica, so a raised weight, a header-routed request or a rollback finds its release
    warm; the canary with a mirror on the larger of its weight and the mirrored share)."""
    from tidal.control.decide.replicas import release_hash  # here: the snapshot reads this module
    if rollout is None or not rollout.active:
        return [Release(spec.release, spec, release_hash(spec), 100, desired)]
    stable, canary = 100 - rollout.weight, rollout.weight
    return [Release(spec.release, spec, release_hash(spec), stable, share(desired, stable, 1)),
            Release(rollout.canary.release, rollout.canary, release_hash(rollout.canary), canary,
                    share(desired, max(canary, rollout.mirror), 1))]


def share(desired: int, percent: int, floor: int) -> int:
    if desired == 0:
        return 0  # scaled to zero: every release is
    return max(floor, math.ceil(desired * percent / 100))


def retired(rollout: Rollout | None) -> str | None:
    """The replica key of a rolled-back canary: its replicas take no new requests and drain at once."""
    from tidal.control.decide.replicas import release_hash
    if rollout is not None and rollout.phase == Phase.ROLLED_BACK:
        return release_hash(rollout.canary)
    return None


def spec_for(service: ServiceSpec, rollout: Rollout | None, key: str) -> ServiceSpec:
    """The spec a replica with release key `key` runs (the canary's when it is the canary's)."""
    from tidal.control.decide.replicas import release_hash
    if rollout is not None and key != release_hash(service) and key == release_hash(rollout.canary):
        return rollout.canary
    return service


def release_spec(service: ServiceSpec, rollout: Rollout | None, release: str) -> ServiceSpec:
    """The spec of the release named `release` (`ReplicaLaunch.release`): what a backend that renders one
    workload per release (a Deployment) renders; the service's own for any other name."""
    if rollout is not None and release and release == rollout.canary.release != service.release:
        return rollout.canary
    return service


# -- parsing what people type
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """"5m", "90s", "1.5h", "250ms" or a number of seconds -> seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 90s, 5m, 1h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def parse_steps(text: str | list) -> tuple[int, ...]:
    """"10,25,50,100" -> (10, 25, 50, 100): percents, each 1..100, rising."""
    items = text if isinstance(text, list) else [s for s in str(text).split(",") if s.strip()]
    try:
        steps = tuple(int(str(s).strip().rstrip("%")) for s in items)
    except ValueError:
        raise ValueError(f"invalid --steps {text!r}: expected percents such as 10,25,50,100") from None
    if not steps:
        raise ValueError("--steps needs at least one percent")
    if any(not 1 <= s <= 100 for s in steps):
        raise ValueError(f"--steps {','.join(map(str, steps))}: each step is a percent from 1 to 100")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"--steps {','.join(map(str, steps))}: each step must send more traffic than the one before")
    return steps


class RolloutRequest(BaseModel):
    """`serve update NAME --canary-traffic-percent N ...`: what the canary changes and how it progresses."""
    model_config = ConfigDict(extra="forbid")
    changes: dict = Field(default_factory=dict)   # CANARY_FIELDS only
    canary_traffic_percent: int = Field(ge=0, le=100)
    steps: tuple[int, ...] = ()
    bake: float = 300.0
    mirror: int = Field(default=0, ge=0, le=100)
    guards: Guards = Guards()

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, v):
        return parse_steps(v) if v not in (None, "", [], ()) else ()

    @field_validator("bake", mode="before")
    @classmethod
    def _bake(cls, v):
        return parse_duration(v)

    @model_validator(mode="after")
    def _check(self) -> "RolloutRequest":
        unknown = sorted(set(self.changes) - set(CANARY_FIELDS))
        if unknown:
            raise ValueError(f"a canary changes only {', '.join(CANARY_FIELDS)}, not {', '.join(unknown)} "
                             f"(change the service itself with `tidal serve update` without --canary-traffic-percent)")
        if self.steps and self.canary_traffic_percent == 0:
            raise ValueError("a rollout with --steps starts with some traffic: give --canary-traffic-percent "
                             "(0% is for a canary reached only by its header, promoted by hand)")
        if self.steps and self.steps[0] != self.canary_traffic_percent:
            self.steps = (self.canary_traffic_percent, *[s for s in self.steps if s > self.canary_traffic_percent])
        return self


def parse_weights(pairs: dict[str, int], rollout: Rollout) -> int:
    """{release or version: percent} for the two releases -> the canary's percent, or ValueError in one line."""
    names = {rollout.stable.release: "stable", rollout.canary.release: "canary",
             rollout.stable.version: "stable", rollout.canary.version: "canary"}
    known = f"{rollout.stable.release} (stable), {rollout.canary.release} (canary)"
    got: dict[str, int] = {}
    for name, percent in pairs.items():
        role = names.get(name)
        if role is None:
            raise LookupError(f"service {rollout.service} has no release {name!r} (releases: {known})")
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"weight of {name} must be a whole percent from 0 to 100, got {percent!r}")
        if role in got:
            raise ValueError(f"release {name} is given twice")
        got[role] = percent
    total = sum(got.values())
    if total != 100:
        raise ValueError(f"weights sum to {total}, not 100 ({', '.join(f'{k}={v}' for k, v in pairs.items())})")
    return got.get("canary", 0)


# -- the stored record
def load(text: str | None, service: str) -> Rollout | None:
    """The stored record, or None (logged) when it is of another version or unreadable: a rollout dropped this
    way leaves the service on its stable release, which is always safe."""
    if not text:
        return None
    try:
        data = json.loads(text)
        version = data.get("version") if isinstance(data, dict) else None
        if version != VERSION:
            log.warning("rollout of %s has version %s (this one reads %d): dropped", service, version, VERSION)
            return None
        return Rollout.model_validate(data)
    except (ValueError, TypeError, ValidationError) as exc:
        log.warning("rollout of %s is unreadable (%s): dropped", service, str(exc).splitlines()[0])
        return None
