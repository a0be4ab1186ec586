"""The configuration of one bench run, declared once (the CLI builds it, tests and the demo pass it directly)."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, model_validator

from tidal.bench.profile import Profile


class BenchConfig(BaseModel):
    """Open loop when `profile` is set (requests leave on the profile's schedule whatever the answers),
    closed loop otherwise (`concurrency` workers, each sending its next request when the last is answered)."""

    profile: Optional[Profile] = None
    concurrency: PositiveInt = 10
    # Open loop: at most this many connections; requests due while all are busy wait (and their wait counts).
    connections: PositiveInt = 256
    duration: Optional[PositiveFloat] = None
    requests: Optional[PositiveInt] = None
    timeout: PositiveFloat = 30.0
    # Progress is reported this often (seconds).
    interval: PositiveFloat = Field(1.0, le=60)

    @model_validator(mode="after")
    def _bounded(self) -> "BenchConfig":
        if self.duration is None and self.requests is None:
            raise ValueError("a run needs a duration or a request count")
        return self

    @property
    def open_loop(self) -> bool:
        return self.profile is not None
