"""Autoscaling on the gateway's signals, a replica's metric, cron windows and the forecast: tables with the arithmetic."""

from datetime import datetime, timezone

import pytest

from tidal.autoscaling import forecast
from tidal.commands.autoscale import hpa_document, metric_specs
from tidal.control.commands import SetDesired
from tidal.control.decide import autoscaling
from tidal.control.records import AutoscalerMemory
from tidal.control.snapshot import Autoscaler
from tidal.gateway.metrics import GatewaySignals
from tidal.states import ReplicaState as S

from .build import replica, service, snap

NAME = "m"
WINDOW = 30.0
MONDAY_10 = datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc).timestamp()


def doc(min_replicas=1, max_replicas=10, qps=None, schedule=(), predictive=False, **targets):
    return hpa_document(NAME, min_replicas, max_replicas, qps, False,
                        metrics=metric_specs(NAME, qps, **targets), schedule=list(schedule), predictive=predictive)


def world(document, desired, ready, now=MONDAY_10, memory=None):
    return snap(now=now, services=[service(NAME, desired=desired)],
                replicas=[replica(f"r{i}", S.READY, f"n{i}", service=NAME) for i in range(ready)],
                autoscalers={NAME: Autoscaler(document, None, memory)})


def signals(concurrency=0.0, queued=0, p90=None, ready=1):
    return GatewaySignals(WINDOW, 0.0, concurrency, queued, p90, 0, ready)


def desired_of(result):
    sets = [c for c in result.commands if isinstance(c, SetDesired)]
    return sets[-1].desired if sets else None


def run(document, desired, ready, *, qps=0.0, gw=None, scraped=None, now=MONDAY_10, memory=None):
    s = world(document, desired, ready, now, memory)
    return autoscaling.decide(s, {(NAME, WINDOW): qps}, autoscaling.AutoscalingMemory(), WINDOW, lambda x: x,
                              gateway={NAME: gw} if gw is not None or document else {}, scraped=scraped or {})


CASES = [
    # (id, targets, desired = ready, gateway signals, scraped, QPS, expected desired or None for no change)
    ("concurrency 12 on 2 replicas at 4 each: ceil(6/4 x 2) = 3",
     dict(concurrency=4), 2, signals(concurrency=12.0, ready=2), None, 0.0, 3),
    ("concurrency 8.4 on 2 at 4: ratio 1.05 is within the tolerance", dict(concurrency=4), 2,
     signals(concurrency=8.4, ready=2), None, 0.0, None),
    ("p90 0.5 s against 200 ms on 2: ceil(2.5 x 2) = 5, held to the scale-up limit max(2 x 2, 4) = 4",
     dict(p90_ms=200), 2, signals(p90=0.5), None, 0.0, 4),
    ("p90 0.3 s against 200 ms on 4: ceil(1.5 x 4) = 6", dict(p90_ms=200), 4, signals(p90=0.3), None, 0.0, 6),
    ("queue of 30 at 10 per replica from 1: ceil(30/10) = 3", dict(queue=10), 1, signals(queued=30), None, 0.0, 3),
    ("several at once: QPS asks 3, concurrency 4, p90 6: the largest wins (6)",
     dict(qps=10.0, concurrency=2, p90_ms=100), 3, signals(concurrency=8.0, p90=0.2, ready=3), None, 30.0, 6),
    ("a replica's metric, 9 + 3 per replica at 4: ceil(6/4 x 2) = 3",
     dict(replica_metrics=["tidal_requests_total=4"]), 2, None, {"tidal_requests_total": {"r0": 9.0, "r1": 3.0}},
     0.0, 3),
    ("the gateway cannot be reached: concurrency is missing, nothing changes",
     dict(concurrency=1), 2, None, None, 0.0, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_signals_propose_as_the_hpa_rule_does(case):
    _, targets, n, gw, scraped, qps, expected = case
    result = run(doc(**targets), n, n, qps=qps, gw=gw, scraped={NAME: scraped} if scraped else None)
    assert desired_of(result) == expected


def test_a_missing_signal_never_scales_in_on_the_others():
    # QPS alone would go to 1, but the gateway's concurrency is unknown: the HPA holds at 3.
    result = run(doc(qps=10.0, concurrency=2), 3, 3, qps=1.0, gw=None)
    assert desired_of(result) is None


SCHEDULE_CASES = [
    # (id, schedule, desired, now, expected desired)
    ("a weekday window from 09:00 at 10:00 Monday raises 1 to 4", ["0 9 * * 1-5 min=4"], 1, MONDAY_10, 4),
    ("closed by the evening entry at 19:00", ["0 9 * * 1-5 min=4", "0 18 * * 1-5 min=0"], 1,
     MONDAY_10 + 9 * 3600, None),
    ("a 30 min window from 09:00 is over at 10:00", ["0 9 * * 1-5 min=4 for=30m"], 1, MONDAY_10, None),
    ("the floor is capped at maxReplicas (10)", ["0 9 * * * min=40"], 1, MONDAY_10, 10),
    ("two windows open: the larger floor (6)", ["0 9 * * * min=4 for=2h", "30 9 * * * min=6 for=1h"], 2,
     MONDAY_10, 6),
]


@pytest.mark.parametrize("case", SCHEDULE_CASES, ids=[c[0] for c in SCHEDULE_CASES])
def test_schedule_raises_the_floor(case):
    _, windows, desired, now, expected = case
    result = run(doc(qps=10.0, schedule=windows), desired, desired, qps=1.0, now=now)
    assert desired_of(result) == expected


def test_the_reactive_rule_still_scales_above_a_window():
    # Floor 4, but 90 QPS at 10 per replica asks for 9 (from 4: the legacy limit is max(2 x 4, 4) = 8).
    result = run(doc(qps=10.0, schedule=["0 9 * * * min=4"]), 4, 4, qps=90.0)
    assert desired_of(result) == 8


def test_a_window_wakes_a_service_at_zero_and_holds_it_up():
    result = run(doc(min_replicas=0, qps=10.0, schedule=["0 9 * * * min=2"]), 0, 0)
    assert desired_of(result) == 2
    assert result.floors == {NAME: 2}


def learned(rate_at_10_15: float) -> forecast.History:
    """A week of history with 5 QPS everywhere and `rate_at_10_15` in the 10:15-10:30 slot."""
    h = forecast.History()
    start = MONDAY_10 - 7 * 86400
    for k in range(7 * 96 + 1):
        t = start + k * 900
        at = datetime.fromtimestamp(t, timezone.utc)
        h = forecast.observe(h, t, rate_at_10_15 if (at.hour, at.minute) == (10, 15) else 5.0)
    return forecast.observe_cold_start(h, 120.0)


PREDICTIVE_CASES = [
    # (id, rate learned for 10:15, now, expected desired)
    # At 10:00 the lead is a 120 s cold start + a 900 s slot: 10:15 is in view; 80 QPS at 10 per replica: 8.
    ("a peak at 10:15 is seen from 10:00 (lead 120 + 900 s): ceil(80/10) = 8", 80.0, MONDAY_10, 8),
    ("from 09:40 the lead (17 min) reaches only 09:57: 5 QPS needs 1, no change", 80.0, MONDAY_10 - 1200, None),
]


@pytest.mark.parametrize("case", PREDICTIVE_CASES, ids=[c[0] for c in PREDICTIVE_CASES])
def test_the_forecast_scales_ahead_by_the_cold_start(case):
    _, peak, now, expected = case
    memory = AutoscalerMemory(forecast=learned(peak))
    result = run(doc(qps=10.0, predictive=True), 1, 1, qps=5.0, now=now, memory=memory)
    assert desired_of(result) == expected
