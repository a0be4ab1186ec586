"""Typed records the store keeps as versioned JSON: an autoscaler's last status and its HPA/burst memory.

A record carries `version`. One of an older version is migrated when that is
trivial (version 0 is the unversioned JSON written before, the same fields) and
dropped with one log line otherwise: these records are memory and reports,
never configuration, so a fresh start is always safe.
"""

from __future__ import annotations

import json
import logging
from typing import Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from tidal.autoscaling.burst import BurstState
from tidal.autoscaling.forecast import History
from tidal.autoscaling.hpa import HPAState, ScaleEvent, TimestampedRecommendation

log = logging.getLogger(__name__)

VERSION = 1


class MetricReport(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    metric: str
    average_value: Optional[float] = None
    value: Optional[float] = None
    proposal: Optional[int] = None
    error: Optional[str] = None


class BurstReport(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    reason: str
    panicking: bool
    stable_qps: float
    panic_qps: float
    desired: int
    ready: int


class AutoscalerStatus(BaseModel):
    """What `serve get` shows as the autoscaler's `last`: the latest decision and why."""
    model_config = ConfigDict(extra="ignore", frozen=True)
    version: int = VERSION
    time: float
    current: int
    desired: int
    reason: str
    message: str
    qps: Optional[float] = None
    metrics: list[MetricReport] = []
    burst: Optional[BurstReport] = None

    def view(self) -> dict:
        """The API's JSON (the shape it always had: no version, no `burst` outside burst mode)."""
        out = self.model_dump(exclude={"version"})
        if out["burst"] is None:
            del out["burst"]
        return out


class AutoscalerMemory(BaseModel):
    """The HPA's recommendation history, the burst decider's panic state and the request rate's seasonal history
    (predictive scaling), kept across restarts."""
    model_config = ConfigDict(extra="ignore", frozen=True)
    version: int = VERSION
    hpa: HPAState = HPAState()
    burst: Optional[BurstState] = None
    forecast: Optional[History] = None


def _migrate_memory(data: dict) -> dict:
    # Version 0: {"recommendations": [[n, t]], "up": [[c, t, o]], "down": [...], "burst": {...}}.
    hpa = {"recommendations": [TimestampedRecommendation(int(n), float(t)) for n, t in data.get("recommendations", [])],
           "scale_up_events": [ScaleEvent(int(c), float(t), bool(o)) for c, t, o in data.get("up", [])],
           "scale_down_events": [ScaleEvent(int(c), float(t), bool(o)) for c, t, o in data.get("down", [])]}
    return {"version": VERSION, "hpa": HPAState(**{k: tuple(v) for k, v in hpa.items()}), "burst": data.get("burst")}


def load_status(text: str | None, service: str) -> AutoscalerStatus | None:
    return _load(text, service, "status", AutoscalerStatus, lambda d: {**d, "version": VERSION})


def load_memory(text: str | None, service: str) -> AutoscalerMemory | None:
    return _load(text, service, "memory", AutoscalerMemory, _migrate_memory)


def _load(text, service, what, model, migrate):
    if not text:
        return None
    try:
        data = json.loads(text)
        version = data.get("version", 0) if isinstance(data, dict) else None
        if version == 0:
            data = migrate(data)
        elif version != VERSION:
            log.warning("autoscaler %s of %s has version %s (this one reads %d): dropped", what, service, version,
                        VERSION)
            return None
        return model.model_validate(data)
    except (ValueError, TypeError, KeyError, ValidationError) as exc:
        log.warning("autoscaler %s of %s is unreadable (%s): dropped", what, service, str(exc).splitlines()[0])
        return None
