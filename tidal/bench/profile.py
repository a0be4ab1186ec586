"""Open-loop load profiles and their send schedules: when the n-th request is due is a pure function of the profile."""

from __future__ import annotations

import bisect
import csv
import math
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, NonNegativeFloat, PositiveFloat, TypeAdapter, model_validator

from tidal.errors import UserError


class Constant(BaseModel):
    kind: Literal["constant"] = "constant"
    rate: PositiveFloat


class Step(BaseModel):
    rate: NonNegativeFloat
    seconds: PositiveFloat


class Steps(BaseModel):
    kind: Literal["steps"] = "steps"
    steps: list[Step] = Field(min_length=1)


class Ramp(BaseModel):
    kind: Literal["ramp"] = "ramp"
    start: NonNegativeFloat
    end: NonNegativeFloat
    seconds: PositiveFloat


class Sine(BaseModel):
    """rate(t) = mean + amplitude * sin(2 pi t / period)."""

    kind: Literal["sine"] = "sine"
    mean: PositiveFloat
    amplitude: NonNegativeFloat
    period: PositiveFloat

    @model_validator(mode="after")
    def _never_negative(self) -> "Sine":
        if self.amplitude > self.mean:
            raise ValueError("a sine profile's amplitude cannot exceed its mean (the rate would go negative)")
        return self


class Trace(BaseModel):
    """A replayed trace: `rates[i]` requests per second during second i."""

    kind: Literal["trace"] = "trace"
    rates: list[NonNegativeFloat] = Field(min_length=1)


Profile = Annotated[Union[Constant, Steps, Ramp, Sine, Trace], Field(discriminator="kind")]
PROFILE = TypeAdapter(Profile)


def natural_duration(profile: Profile) -> float | None:
    """How long the profile lasts by itself; None for the ones that go on until told to stop."""
    if isinstance(profile, Steps):
        return sum(s.seconds for s in profile.steps)
    if isinstance(profile, Ramp):
        return profile.seconds
    if isinstance(profile, Trace):
        return float(len(profile.rates))
    return None


class Segment(tuple):
    """(t0, rate at t0, slope, requests due before t0): the rate is linear within a segment."""

    __slots__ = ()

    def __new__(cls, t0: float, r0: float, slope: float, c0: float) -> "Segment":
        return tuple.__new__(cls, (t0, r0, slope, c0))


class Schedule:
    """The send schedule of a profile over [0, duration): `time_of(n)` is when request n is due.

    Every profile becomes piecewise-linear rate segments, so the expected count is
    piecewise quadratic and inverts in closed form: request n is due at the first
    instant the expected count C(t) = integral of the rate reaches n.
    """

    # A sine becomes chords this many per period; the rate error is below 0.05% of the amplitude.
    SINE_CHORDS = 100

    def __init__(self, profile: Profile, duration: float) -> None:
        if not duration > 0:
            raise UserError("the duration must be positive")
        self.profile = profile
        self.duration = float(duration)
        points = _rate_points(profile, self.duration)
        self._segments: list[Segment] = []
        c = 0.0
        for (t0, r0), (t1, r1) in zip(points, points[1:]):
            if t1 <= t0:
                continue
            slope = (r1 - r0) / (t1 - t0)
            self._segments.append(Segment(t0, r0, slope, c))
            c += (r0 + r1) / 2 * (t1 - t0)
        self.total = c
        self._starts = [s[0] for s in self._segments]
        self._counts = [s[3] for s in self._segments]
        self._ends = self._counts[1:] + [c]

    @property
    def requests(self) -> int:
        """How many requests the whole schedule sends (those due before `duration`)."""
        n = math.ceil(self.total) if self.total > 0 else 0
        # Rounding can put the last one a hair past the end; count by the same rule as time_of.
        while n > 0 and self.time_of(n - 1) is None:
            n -= 1
        return n

    def rate_at(self, t: float) -> float:
        if t < 0 or t >= self.duration or not self._segments:
            return 0.0
        t0, r0, slope, _ = self._segments[bisect.bisect_right(self._starts, t) - 1]
        return r0 + slope * (t - t0)

    def expected(self, t: float) -> float:
        """Requests due in [0, t]."""
        if t <= 0 or not self._segments:
            return 0.0
        t = min(t, self.duration)
        t0, r0, slope, c0 = self._segments[bisect.bisect_right(self._starts, t) - 1]
        dt = t - t0
        return c0 + r0 * dt + 0.5 * slope * dt * dt

    def time_of(self, n: int) -> float | None:
        """Offset from the start at which request n (0-based) is due; None once past the end."""
        if n < 0:
            raise ValueError("request numbers start at 0")
        i = bisect.bisect_right(self._counts, n) - 1
        if i < 0 or self._ends[i] <= n:
            return None
        t0, r0, slope, c0 = self._segments[i]
        x = n - c0
        # Solve c0 + r0*dt + slope*dt^2/2 = n; this form is stable as slope -> 0.
        root = math.sqrt(max(0.0, r0 * r0 + 2.0 * slope * x))
        denom = r0 + root
        dt = 2.0 * x / denom if denom > 0 else 0.0
        t = t0 + dt
        return t if t < self.duration else None


def _rate_points(profile: Profile, duration: float) -> list[tuple[float, float]]:
    """The rate as (t, rate) knots over [0, duration]; a jump is two knots at the same t."""
    if isinstance(profile, Constant):
        return [(0.0, profile.rate), (duration, profile.rate)]
    if isinstance(profile, Ramp):
        if duration <= profile.seconds:
            end = profile.start + (profile.end - profile.start) * duration / profile.seconds
            return [(0.0, profile.start), (duration, end)]
        return [(0.0, profile.start), (profile.seconds, profile.end), (duration, profile.end)]
    if isinstance(profile, Sine):
        step = profile.period / Schedule.SINE_CHORDS
        n = max(1, math.ceil(duration / step))
        return [(min(duration, i * step), profile.mean + profile.amplitude * math.sin(2 * math.pi * min(duration, i * step) / profile.period))
                for i in range(n + 1)]
    steps = profile.steps if isinstance(profile, Steps) else [Step(rate=r, seconds=1.0) for r in profile.rates]
    points: list[tuple[float, float]] = []
    t = 0.0
    for s in steps:
        if t >= duration:
            break
        end = min(duration, t + s.seconds)
        points += [(t, s.rate), (end, s.rate)]
        t = end
    if t < duration:  # a profile shorter than the run holds its last rate
        points += [(t, steps[-1].rate), (duration, steps[-1].rate)]
    return points


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """'30s', '2m', '1h', '500ms' or a plain number of seconds."""
    m = _DURATION.match(text)
    if not m:
        raise UserError(f"bad duration {text!r}: expected a number with an optional unit ms, s, m or h (e.g. 30s)")
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value <= 0:
        raise UserError(f"bad duration {text!r}: must be positive")
    return value


def _rate(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"bad rate {text!r} in {what}: expected a number of requests per second") from None
    if not (value >= 0 and math.isfinite(value)):
        raise UserError(f"bad rate {text!r} in {what}: must be a finite number >= 0")
    return value


PROFILE_HELP = """load profiles (--profile):
  constant:R                 R requests/s
  steps:R1/D1,R2/D2,...      R1 requests/s for D1, then R2 for D2, ... (e.g. steps:10/30s,50/1m)
  ramp:FROM..TO/D            linear from FROM to TO requests/s over D, then hold TO
  sine:MEAN,AMPLITUDE,PERIOD MEAN + AMPLITUDE*sin(2*pi*t/PERIOD) requests/s
  trace:FILE.csv             replay per-second rates: a column of rates, or rows of second,rate"""


def parse_profile(spec: str) -> Profile:
    """Parse a `--profile` spec (see PROFILE_HELP) into a profile model."""
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or not rest.strip():
        raise UserError(f"bad profile {spec!r}: expected KIND:ARGS, e.g. constant:100, steps:10/30s,50/30s, "
                        "ramp:10..100/1m, sine:50,25,60s or trace:rates.csv")
    try:
        if kind == "constant":
            return Constant(rate=_rate(rest, spec))
        if kind == "steps":
            steps = []
            for part in rest.split(","):
                rate, slash, dur = part.partition("/")
                if not slash:
                    raise UserError(f"bad step {part!r} in {spec!r}: expected RATE/DURATION, e.g. 50/30s")
                steps.append(Step(rate=_rate(rate, spec), seconds=parse_duration(dur)))
            return Steps(steps=steps)
        if kind == "ramp":
            span, slash, dur = rest.partition("/")
            start, dots, end = span.partition("..")
            if not slash or not dots:
                raise UserError(f"bad ramp {spec!r}: expected ramp:FROM..TO/DURATION, e.g. ramp:10..100/1m")
            return Ramp(start=_rate(start, spec), end=_rate(end, spec), seconds=parse_duration(dur))
        if kind == "sine":
            parts = rest.split(",")
            if len(parts) != 3:
                raise UserError(f"bad sine {spec!r}: expected sine:MEAN,AMPLITUDE,PERIOD, e.g. sine:50,25,60s")
            return Sine(mean=_rate(parts[0], spec), amplitude=_rate(parts[1], spec), period=parse_duration(parts[2]))
        if kind == "trace":
            return read_trace(Path(rest.strip()))
    except ValueError as exc:  # pydantic's, for values in range but inconsistent
        first = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
        raise UserError(f"bad profile {spec!r}: {first}") from None
    raise UserError(f"unknown profile kind {kind!r}: expected constant, steps, ramp, sine or trace")


def read_trace(path: Path) -> Trace:
    """Per-second rates from a CSV: one column of rates, or `second,rate` rows; a header row is allowed."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if rows and not _is_number(rows[0][-1]):
        rows = rows[1:]
    if not rows:
        raise UserError(f"trace {path} has no rates")
    if len(rows[0]) == 1:
        return Trace(rates=[_rate(r[0], str(path)) for r in rows])
    by_second: dict[int, float] = {}
    for line, r in enumerate(rows, 1):
        try:
            second = int(float(r[0]))
        except ValueError:
            raise UserError(f"trace {path}: row {line}: bad second {r[0]!r}") from None
        if second < 0:
            raise UserError(f"trace {path}: row {line}: negative second {second}")
        by_second[second] = _rate(r[1], str(path))
    last = max(by_second)
    # A second missing from the trace holds the previous rate, as a sparse trace means.
    rates, current = [], 0.0
    for s in range(last + 1):
        current = by_second.get(s, current)
        rates.append(current)
    return Trace(rates=rates)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
