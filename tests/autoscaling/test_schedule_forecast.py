"""Cron windows (parse, floor) and the seasonal forecast, with a fake clock: epoch seconds passed in."""

from datetime import datetime, timezone

import pytest

from tidal.autoscaling import forecast
from tidal.autoscaling.schedule import floor, parse_schedule, parse_window
from tidal.autoscaling.hpafile import parse_hpa
from tidal.errors import InvalidArgument


def at(day, hour, minute=0):
    return datetime(2026, 12, day, hour, minute, tzinfo=timezone.utc).timestamp()  # 7 December 2026 is a Monday


FLOOR_CASES = [
    # (id, schedule, now, floor)
    ("weekday 09:00 window, Monday 10:00", "0 9 * * 1-5 min=4", at(7, 10), 4),
    ("exactly at 09:00 it is open", "0 9 * * 1-5 min=4 for=1h", at(7, 9), 4),
    ("Saturday: the Friday window still holds (no end given)", "0 9 * * 1-5 min=4", at(12, 10), 4),
    ("with an evening entry, Saturday has none", "0 9 * * 1-5 min=4; 0 18 * * 1-5 min=0", at(12, 10), 0),
    ("for=9h ends at 18:00", "0 9 * * 1-5 min=4 for=9h", at(7, 18), 0),
    ("tz: 09:00 in Tokyo is 00:00 UTC", "0 9 * * * min=3 for=1h tz=Asia/Tokyo", at(7, 0, 30), 3),
    ("the largest of the open windows", "0 8 * * * min=2 for=4h; 0 9 * * * min=5 for=2h", at(7, 10), 5),
]


@pytest.mark.parametrize("case", FLOOR_CASES, ids=[c[0] for c in FLOOR_CASES])
def test_floor(case):
    _, text, now, expected = case
    assert floor(parse_schedule(text), now)[0] == expected


@pytest.mark.parametrize("line, says", [
    ("0 9 * * min=4", "expected five cron fields"),
    ("0 25 * * * min=1", "is not a cron expression"),
    ("0 9 * * * min=-1", "needs min=N"),
    ("0 9 * * *", "needs min=N"),
    ("0 9 * * * min=1 for=0h", "is not a duration"),
    ("0 9 * * * min=1 every=2", "unknown key(s) every"),
])
def test_a_bad_window_is_one_line(line, says):
    with pytest.raises(InvalidArgument) as e:
        parse_window(line)
    assert says in e.value.message and "\n" not in e.value.message


def test_the_hpa_file_carries_schedule_and_predictive():
    doc = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "h", "annotations": {"autoscaling.tidal.dev/schedule": "0 9 * * 1-5 min=4",
                                                     "autoscaling.tidal.dev/predictive": "true"}},
           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "m"}, "maxReplicas": 5, "metrics": [
               {"type": "Pods", "pods": {"metric": {"name": "tidal_concurrency"},
                                         "target": {"type": "AverageValue", "averageValue": "4"}}}]}}
    spec = parse_hpa(doc)
    assert spec.schedule[0].min_replicas == 4 and spec.predictive.enabled
    doc["metadata"]["annotations"]["autoscaling.tidal.dev/schedule"] = "0 9 * * 1-5 min=four"
    with pytest.raises(InvalidArgument, match="needs min=N"):
        parse_hpa(doc)


def test_a_slot_closes_into_both_profiles_and_averages_half_and_half():
    h = forecast.History(slot_seconds=900)
    t0 = at(7, 10)
    h = forecast.observe(forecast.observe(h, t0, 10.0), t0 + 100, 20.0)  # slot 10:00 mean 15
    h = forecast.observe(h, t0 + 900, 0.0)                                 # 10:15 closes 10:00
    assert forecast.forecast(h, t0) == 15.0 and forecast.forecast(h, t0 + 86400) == 15.0  # daily profile
    assert forecast.forecast(h, t0 + 900) is None  # 10:15 is still open
    # A week later 10:00 reads 25: the week's slot 0.5 x 15 + 0.5 x 25 = 20, the day's the same.
    h = forecast.observe(forecast.observe(h, t0 + 7 * 86400, 25.0), t0 + 7 * 86400 + 900, 0.0)
    assert forecast.forecast(h, t0 + 14 * 86400) == 20.0


def test_floor_needs_history_and_looks_ahead_by_the_cold_start():
    h = forecast.History(slot_seconds=900)
    assert forecast.floor(h, at(7, 10), 10.0) == (0, None)
    t = at(6, 10, 30)  # Sunday 10:30 with 42 QPS
    h = forecast.observe(forecast.observe(h, t, 42.0), t + 900, 1.0)
    h = forecast.observe_cold_start(h, 300.0)  # lead 300 + 900 s
    assert forecast.floor(h, at(7, 10, 10), 10.0) == (5, 42.0)   # 10:10 + 20 min reaches 10:30: ceil(4.2)
    assert forecast.floor(h, at(7, 9, 50), 10.0) == (0, None)    # 09:50 + 20 min is 10:10: unseen
