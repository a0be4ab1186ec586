"""Send schedules are pure functions of the profile: checked against the arithmetic written out."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from tidal.bench.profile import (Constant, Ramp, Schedule, Sine, Step, Steps, Trace, natural_duration,
                                 parse_duration, parse_profile, read_trace)
from tidal.errors import UserError


def times(schedule: Schedule) -> list[float]:
    out, n = [], 0
    while (t := schedule.time_of(n)) is not None:
        out.append(t)
        n += 1
    return out


def test_constant_sends_every_one_over_rate():
    s = Schedule(Constant(rate=4), 2.0)
    # 4/s for 2 s: due at 0, 0.25, ..., 1.75; 2.0 is the end, so not sent.
    assert times(s) == pytest.approx([i * 0.25 for i in range(8)])
    assert s.requests == 8
    assert s.rate_at(1.0) == 4 and s.rate_at(2.0) == 0


def test_steps_change_rate_at_the_boundaries():
    s = Schedule(Steps(steps=[Step(rate=2, seconds=1), Step(rate=10, seconds=1)]), 2.0)
    t = times(s)
    # 2/s during [0,1): 0, 0.5; 10/s during [1,2): 1.0, 1.1, ..., 1.9.
    assert t == pytest.approx([0, 0.5] + [1 + i / 10 for i in range(10)])
    assert s.expected(1.5) == pytest.approx(2 + 5)


def test_a_silent_step_sends_nothing():
    s = Schedule(Steps(steps=[Step(rate=0, seconds=1), Step(rate=2, seconds=1)]), 2.0)
    assert times(s) == pytest.approx([1.0, 1.5])


def test_a_profile_shorter_than_the_run_holds_its_last_rate():
    s = Schedule(Steps(steps=[Step(rate=1, seconds=1)]), 3.0)
    assert times(s) == pytest.approx([0, 1, 2])


def test_ramp_follows_the_integral_of_a_linear_rate():
    # rate(t) = 10 + 10 t over [0, 2): C(t) = 10 t + 5 t^2, C(2) = 40.
    s = Schedule(Ramp(start=10, end=30, seconds=2), 2.0)
    assert s.total == pytest.approx(40)
    assert s.requests == 40
    # request 15 is due when 10 t + 5 t^2 = 15: t = (-10 + sqrt(100 + 300)) / 10 = 1.
    assert s.time_of(15) == pytest.approx(1.0)
    assert s.rate_at(1.0) == pytest.approx(20)


def test_ramp_down_to_zero_ends_early():
    # rate(t) = 10 - 10 t: C(1) = 5, then nothing.
    s = Schedule(Ramp(start=10, end=0, seconds=1), 5.0)
    assert s.requests == 5
    assert times(s)[-1] < 1.0


def test_sine_averages_its_mean_over_whole_periods():
    s = Schedule(Sine(mean=50, amplitude=40, period=10), 20.0)
    assert s.total == pytest.approx(50 * 20, rel=1e-3)
    # Quarter period: the peak; three quarters: the trough.
    assert s.rate_at(2.5) == pytest.approx(90, rel=1e-3)
    assert s.rate_at(7.5) == pytest.approx(10, rel=1e-2)
    # C(t) = mean t + A P / (2 pi) (1 - cos(2 pi t / P)); at t = P/2: 250 + 40*10/pi.
    assert s.expected(5.0) == pytest.approx(250 + 400 / math.pi, rel=1e-3)


def test_trace_is_a_step_per_second():
    s = Schedule(Trace(rates=[1, 0, 3]), 3.0)
    assert times(s) == pytest.approx([0, 2, 2 + 1 / 3, 2 + 2 / 3])
    assert natural_duration(Trace(rates=[1, 0, 3])) == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 500), st.floats(0.1, 5)), min_size=1, max_size=6),
       st.floats(0.5, 20))
def test_time_of_inverts_the_expected_count(steps, duration):
    s = Schedule(Steps(steps=[Step(rate=r, seconds=d) for r, d in steps]), duration)
    t = times(s)
    assert len(t) == s.requests
    assert all(a <= b for a, b in zip(t, t[1:]))
    for n in range(0, len(t), max(1, len(t) // 20)):
        assert s.expected(t[n]) == pytest.approx(n, abs=1e-6 * max(1, n))
        assert s.rate_at(t[n]) > 0


@pytest.mark.parametrize("spec, expected", [
    ("constant:100", Constant(rate=100)),
    ("steps:10/30s,50/1m", Steps(steps=[Step(rate=10, seconds=30), Step(rate=50, seconds=60)])),
    ("ramp:10..200/2m", Ramp(start=10, end=200, seconds=120)),
    ("sine:50,25,500ms", Sine(mean=50, amplitude=25, period=0.5)),
])
def test_parse_profile(spec, expected):
    assert parse_profile(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("constant", "expected KIND:ARGS"),
    ("wave:1", "unknown profile kind"),
    ("steps:10", "expected RATE/DURATION"),
    ("steps:-1/1s", "must be a finite number >= 0"),
    ("ramp:1-2/3s", "ramp:FROM..TO/DURATION"),
    ("sine:10,20,1s", "amplitude cannot exceed its mean"),
    ("sine:1,2", "sine:MEAN,AMPLITUDE,PERIOD"),
    ("steps:10/0s", "must be positive"),
    ("steps:10/soon", "bad duration"),
    ("constant:0", "greater than 0"),
])
def test_bad_profiles_say_what_is_wrong(spec, message):
    with pytest.raises(UserError, match=message):
        parse_profile(spec)


def test_parse_duration_units():
    assert [parse_duration(x) for x in ("250ms", "3", "1.5s", "2m", "1h")] == [0.25, 3, 1.5, 120, 3600]


def test_read_trace_with_header_and_sparse_seconds(tmp_path):
    path = tmp_path / "rates.csv"
    path.write_text("second,rate\n0,5\n3,20\n4,0\n")
    # Seconds 1 and 2 are missing: they hold the rate of second 0.
    assert read_trace(path).rates == [5, 5, 5, 20, 0]
    single = tmp_path / "single.csv"
    single.write_text("rate\n1\n2.5\n")
    assert read_trace(single).rates == [1, 2.5]
    assert parse_profile(f"trace:{single}") == Trace(rates=[1, 2.5])


def test_read_trace_errors(tmp_path):
    with pytest.raises(UserError, match="cannot read trace"):
        read_trace(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("rate\n")
    with pytest.raises(UserError, match="no rates"):
        read_trace(empty)
