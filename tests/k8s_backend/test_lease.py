"""Leader election's decisions as tables: what a candidate does with the Lease it sees, and when a leader stops."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tidal.backends.kubernetes.lease import (
    Action,
    LeaderElection,
    LeaseRecord,
    Observation,
    decide,
    keep_leading,
    still_leading,
)

ME, OTHER = "pod-a_1234", "pod-b_5678"


def seen(holder: str | None, changed_at: float = 100.0, lease: float = 15.0) -> Observation:
    record = None if holder is None else LeaseRecord(holder=holder, lease_seconds=lease, transitions=3, version="7")
    return Observation(record, changed_at)


@pytest.mark.parametrize("name, obs, now, expected", [
    ("no Lease yet: create it", seen(None), 100.0, Action.CREATE),
    ("ours: renew", seen(ME), 101.0, Action.RENEW),
    # nobody wrote since it expired, and a write that loses a race fails on its resourceVersion
    ("ours, past its expiry: renew", seen(ME), 100.0 + 60, Action.RENEW),
    ("released (no holder): take it at once", seen(""), 100.0, Action.TAKE),
    ("another's, seen changing 1 s ago: wait", seen(OTHER), 101.0, Action.WAIT),
    # 100 + 15 = 115: the holder had until then to renew
    ("another's, 14.9 s unchanged: wait", seen(OTHER), 114.9, Action.WAIT),
    ("another's, 15 s unchanged: take over", seen(OTHER), 115.0, Action.TAKE),
    # the holder's own lease duration counts, not ours: 100 + 40 = 140
    ("another's with a 40 s lease, 30 s unchanged: wait", seen(OTHER, lease=40.0), 130.0, Action.WAIT),
    ("another's with a 40 s lease, 40 s unchanged: take over", seen(OTHER, lease=40.0), 140.0, Action.TAKE),
])
def test_decide(name, obs, now, expected):
    assert decide(obs, ME, now) is expected, name


@pytest.mark.parametrize("name, last_renewed, now, deadline, expected", [
    ("renewed just now", 100.0, 100.0, 10.0, True),
    ("renewed 9.9 s ago of 10", 100.0, 109.9, 10.0, True),
    # the deadline is shorter than the lease (15 s): the leader stops 5 s before anyone may take over
    ("renewed 10 s ago of 10: step down", 100.0, 110.0, 10.0, False),
    ("renewed long ago", 0.0, 1000.0, 10.0, False),
])
def test_keep_leading(name, last_renewed, now, deadline, expected):
    assert keep_leading(last_renewed, now, deadline) is expected, name


@pytest.mark.parametrize("name, holder, last_renewed, now, expected", [
    ("a failed try, still ours, 1 s since the last renewal", ME, 100.0, 101.0, True),
    ("a failed try, still ours, at the 10 s deadline: step down", ME, 100.0, 110.0, False),
    # released by someone (the next round takes it back): the deadline still rules
    ("no holder, within the deadline", "", 100.0, 105.0, True),
    ("another holds it: step down at once, deadline or not", OTHER, 100.0, 100.5, False),
])
def test_still_leading(name, holder, last_renewed, now, expected):
    assert still_leading(holder, ME, last_renewed, now, renew_deadline=10.0) is expected, name


@pytest.mark.parametrize("lease, deadline, retry, expected", [
    (15.0, None, None, (10.0, 2.0)),   # client-go's defaults: 15 s lease, 10 s to renew, a try every 2 s
    (3.0, None, None, (2.0, 0.4)),
    (15.0, 12.0, 1.0, (12.0, 1.0)),
])
def test_settings_defaults(lease, deadline, retry, expected):
    s = LeaderElection(lease_seconds=lease, renew_deadline_seconds=deadline, retry_seconds=retry)
    assert (s.renew_deadline, s.retry) == pytest.approx(expected)


@pytest.mark.parametrize("changes", [
    {"lease_seconds": 10.0, "renew_deadline_seconds": 10.0},   # must stop before others may take over
    {"lease_seconds": 10.0, "retry_seconds": 8.0},             # 8 >= 10 * 2/3: no second try before the deadline
    {"lease_name": "Not_A_Name"},
    {"lease_seconds": 0.5},
])
def test_settings_refused(changes):
    with pytest.raises(ValidationError):
        LeaderElection(**changes)
