"""The control plane's settings, declared once: the reconciler, its decisions and `tidal up` read them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ControlSettings(BaseModel):
    """The control plane's own knobs; durations are in the clock's (virtual) seconds."""
    model_config = ConfigDict(extra="forbid")
    tick_seconds: float = Field(default=5.0, gt=0)
    qps_window_seconds: float = Field(default=30.0, gt=0)
    drain_seconds: float = Field(default=10.0, ge=0)          # a scaled-in replica serves in-flight work this long
    notice_margin_seconds: float = Field(default=10.0, ge=0)  # a noticed replica drains this long before its node goes
    start_timeout_seconds: float = Field(default=600.0, gt=0)
    stop_grace_seconds: float = Field(default=30.0, gt=0)     # real seconds before a stopping replica is killed
    unavailable_seconds: float = Field(default=45.0, ge=0)    # an offering that refused a launch is skipped this long
    cold_start_seconds: float = Field(default=0.0, ge=0)      # local nodes are up at once
    # On a cluster: a pod that finds no spot Node this long counts as that spot launch refused.
    unschedulable_seconds: float = Field(default=60.0, gt=0)
