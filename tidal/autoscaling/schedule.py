"""Scheduled floors, pure: cron windows that raise an autoscaler's minimum (like ACK's CronHPA), and `floor(now)`.

A window is written as one line: a cron expression (five fields, croniter's syntax,
evaluated in UTC unless `tz=` names a zone) and `min=N`, optionally `for=DURATION`
(`90s`, `30m`, `9h`, `2d`):

    0 9 * * 1-5 min=4 for=9h     weekdays 09:00-18:00: at least 4 replicas
    0 9 * * 1-5 min=4            from 09:00 until the next window of the schedule starts
    0 18 * * 1-5 min=0           (ends the one above at 18:00)

A window without `for=` lasts until the next window without `for=` starts, which
is CronHPA's rule (each job sets the size until another one changes it). Windows
with `for=` stand alone. The floor is the largest `min` of the windows open now;
it only raises the HPA's minimum, so the reactive rule still scales up on surprise.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict

from tidal.errors import InvalidArgument

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class CronWindow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    cron: str
    min_replicas: int
    for_seconds: float | None = None
    tz: str = "UTC"

    def text(self) -> str:
        extra = f" for={self.for_seconds:g}s" if self.for_seconds is not None else ""
        zone = f" tz={self.tz}" if self.tz != "UTC" else ""
        return f"{self.cron} min={self.min_replicas}{extra}{zone}"

    def last_start(self, now: float) -> float:
        """When the window last opened at or before `now` (epoch seconds)."""
        at = datetime.fromtimestamp(now, ZoneInfo(self.tz))
        if croniter.match(self.cron, at.replace(second=0, microsecond=0)) and at.second == 0 and not at.microsecond:
            return now
        return croniter(self.cron, at).get_prev(datetime).timestamp()


def parse_window(line: str) -> CronWindow:
    """One window; a line that does not parse raises `InvalidArgument` with one line saying why."""
    words = line.split()
    cron = [w for w in words if "=" not in w]
    keys = dict(w.split("=", 1) for w in words if "=" in w)
    where = f"schedule {line.strip()!r}"
    if len(cron) != 5:
        raise InvalidArgument(f"{where}: expected five cron fields (minute hour day month weekday) and min=N, "
                              f"got {len(cron)} field(s)")
    expr = " ".join(cron)
    unknown = sorted(set(keys) - {"min", "for", "tz"})
    if unknown:
        raise InvalidArgument(f"{where}: unknown key(s) {', '.join(unknown)} (keys: min, for, tz)")
    if "min" not in keys or not re.fullmatch(r"[0-9]+", keys["min"]):
        raise InvalidArgument(f"{where}: needs min=N, a whole number of replicas")
    if not croniter.is_valid(expr):
        raise InvalidArgument(f"{where}: {expr!r} is not a cron expression (minute hour day month weekday)")
    for_seconds = None
    if "for" in keys:
        m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([smhd])", keys["for"])
        if not m or float(m.group(1)) <= 0:
            raise InvalidArgument(f"{where}: for={keys['for']} is not a duration such as 90s, 30m, 9h or 2d")
        for_seconds = float(m.group(1)) * _UNITS[m.group(2)]
    tz = keys.get("tz", "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(f"{where}: tz={tz} is not a time zone (e.g. UTC, Europe/Berlin)") from None
    return CronWindow(cron=expr, min_replicas=int(keys["min"]), for_seconds=for_seconds, tz=tz)


def parse_schedule(text: str) -> tuple[CronWindow, ...]:
    """Windows separated by newlines or `;`."""
    return tuple(parse_window(line) for line in re.split(r"[;\n]", text) if line.strip())


def floor(windows: tuple[CronWindow, ...], now: float) -> tuple[int, CronWindow | None]:
    """The schedule's floor at `now` and the window that sets it (0, None: no window is open)."""
    best, why = 0, None
    open_ended = [(w.last_start(now), w) for w in windows if w.for_seconds is None]
    if open_ended:
        _, current = max(open_ended, key=lambda p: p[0])
        best, why = current.min_replicas, current
    for w in windows:
        if w.for_seconds is not None and now < w.last_start(now) + w.for_seconds and w.min_replicas > best:
            best, why = w.min_replicas, w
    return best, why
