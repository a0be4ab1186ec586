"""A day-shaped request trace: idle nights, a morning ramp, a lunch dip, an afternoon peak, and short bursts.

`rate(h)` is the request rate (requests per real second at replay) at hour `h` of the
day, 0 <= h < 24. Deterministic: the same trace every run.
"""

from __future__ import annotations

import math

PEAK_QPS = 30.0
# (start hour, length in hours, extra QPS): bursts on top of the diurnal shape.
BURSTS = ((10.5, 0.25, 35.0), (15.0, 0.15, 45.0), (21.0, 0.2, 25.0))


def diurnal(h: float) -> float:
    """0 from 00:00 to 06:00, up to the peak by 10:00, a dip at 13:00, the peak again at 16:00, 0 after 23:00."""
    if h < 6.0 or h >= 23.0:
        return 0.0
    day = math.sin(math.pi * (h - 6.0) / 17.0) ** 2  # 0 at 06:00 and 23:00, 1 at 14:30
    dip = 1.0 - 0.35 * math.exp(-((h - 13.0) / 0.7) ** 2)
    return PEAK_QPS * day * dip


def rate(h: float) -> float:
    extra = sum(q for start, length, q in BURSTS if start <= h < start + length)
    return diurnal(h) + extra


def arrivals(start_hour: float, hours: float, speed: float, step: float = 0.005) -> list[float]:
    """Send times (real seconds from the start) for a replay of `hours` of the day from `start_hour` at `speed`x:
    hour start_hour + h is reached at h * 3600 / speed real seconds; the rate is per real second. A request
    leaves each time the rate's integral grows by one (deterministic, and exact for slowly changing rates)."""
    out, acc, k, end = [], 0.0, 0, hours * 3600.0 / speed
    while k * step < end:
        t = k * step
        acc += rate(start_hour + t * speed / 3600.0) * step
        while acc >= 1.0:
            out.append(t)
            acc -= 1.0
        k += 1
    return out
