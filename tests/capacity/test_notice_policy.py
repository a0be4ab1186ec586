"""The tidal-notice policy (pure, fake clock): replacement at the notice, (type, zone) spreading, hedges, backoff,
on-demand only while spot cannot cover, back to spot, no spare the notice makes unnecessary."""

import pytest

from tidal.capacity.policies import POLICIES
from tidal.capacity.policies.notice import NoticeParams, decide, initial_state
from tidal.capacity.policies.types import Observation, ZoneView

KEYS = ("a@z1", "b@z1", "a@z2", "b@z2")
P = NoticeParams()  # AWS: 120 s notice, 120 s cold start, 30 s decisions


def obs(target=3, held=(0, 0, 0, 0), ready=None, noticed=(0, 0, 0, 0), preempted=(0, 0, 0, 0),
        failed=(0, 0, 0, 0), prices=(1.0, 1.2, 1.0, 1.2), od_held=0, od_ready=0):
    ready = held if ready is None else ready
    return Observation(target, tuple(ZoneView(k, h, r, p, f, x, c) for k, h, r, x, p, f, c in
                                     zip(KEYS, held, ready, noticed, preempted, failed, prices)), od_held, od_ready)


CASES = [
    # (id, params, observation, on-demand, spot per pool)
    ("calm: exactly the target, no spare (the notice replaces a node in time)", P,
     obs(held=(1, 0, 1, 0)) , 0, None),
    ("a start spreads over pools and zones, cheapest type first, and hedges the cold start", P,
     obs(held=(0, 0, 0, 0), ready=(0, 0, 0, 0)), 0, (1, 1, 1, 1)),
    # (held counts nodes not under notice: the noticed one is apart)
    # The replacement goes where capacity has shown itself (a@z2 holds two ready), the hedge to another pool.
    ("a notice: its replacement launches now, in a proven pool, and one hedge beside it; on-demand stands in (the "
     "pool may be full at what it holds, and a refusal would leave no time to retry)", P,
     obs(held=(0, 0, 2, 0), noticed=(1, 0, 0, 0), preempted=(1, 0, 0, 0)), 1, (0, 1, 3, 0)),
    ("without that insurance, spot alone", NoticeParams(insure=False),
     obs(held=(0, 0, 2, 0), noticed=(1, 0, 0, 0), preempted=(1, 0, 0, 0)), 0, (0, 1, 3, 0)),
    ("with no proven pool left for it, on-demand covers the replacement too", P,
     obs(target=1, held=(0, 0, 0, 0), ready=(0, 0, 0, 0), noticed=(1, 0, 0, 0), preempted=(1, 0, 0, 0)), 1,
     None),
    ("the hedge goes once the noticed node has gone and the replacement is ready", P,
     obs(held=(1, 1, 2, 1), ready=(1, 1, 2, 0)), 0, (1, 0, 2, 0)),
    ("an Alibaba notice leaves time to retry: no hedge", NoticeParams(notice_seconds=300),
     obs(held=(0, 0, 2, 0), noticed=(1, 0, 0, 0), preempted=(1, 0, 0, 0)), 0, (0, 1, 2, 0)),
    ("a GCP notice is shorter than a cold start: SpotHedge's spare in calm", NoticeParams(notice_seconds=30),
     obs(held=(1, 1, 1, 0)), 0, (1, 1, 1, 1)),
    ("a refused replacement while a node is under notice: on-demand covers it now", P,
     obs(held=(2, 0, 0, 0), ready=(2, 0, 0, 0), noticed=(0, 0, 0, 1), failed=(0, 1, 0, 0)), 1, None),
    ("no pool can take spot: on-demand for the target", P,
     obs(held=(0, 0, 0, 0), ready=(0, 0, 0, 0), failed=(1, 1, 1, 1)), 3, (0, 0, 0, 0)),
    ("on-demand held stays while ready spot is short of the target", P,
     obs(held=(1, 1, 1, 0), ready=(1, 0, 0, 0), od_held=3, od_ready=3), 2, None),
    ("and goes once ready spot covers it (back to spot)", P,
     obs(held=(1, 0, 1, 1), ready=(1, 0, 1, 1), od_held=2, od_ready=2), 0, None),
]


@pytest.mark.parametrize("params,o,od,spot", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(params, o, od, spot):
    plan, _ = decide(o, params, initial_state(params, KEYS, 0), 1000.0)
    assert plan.on_demand == od
    if spot is not None:
        assert plan.spot == spot
    else:
        assert sum(plan.spot) >= o.target - plan.on_demand


def test_a_pool_that_lost_nodes_backs_off_then_is_tried_again():
    state = initial_state(P, KEYS, 0)
    plan, state = decide(obs(held=(0, 1, 1, 1), preempted=(2, 0, 0, 0)), P, state, 1000.0)
    assert plan.spot[0] == 0
    # Within the backoff (60 s) nothing goes there, even when it is the cheapest and emptiest.
    plan, state = decide(obs(held=(0, 0, 1, 0), ready=(0, 0, 1, 0)), P, state, 1030.0)
    assert plan.spot[0] == 0 and sum(plan.spot) >= 3
    # After it, the pool is usable again (but ranks after pools that did not just lose nodes).
    plan, state = decide(obs(held=(0, 0, 0, 0), ready=(0, 0, 0, 0), prices=(0.5, 1, 1, 1)), P, state, 1100.0)
    assert plan.spot[0] == 1
    # Losing again doubles the backoff.
    _, state = decide(obs(held=(0, 1, 1, 1), preempted=(1, 0, 0, 0)), P, state, 1200.0)
    assert state.pools[0].retry_at == 1200.0 + 120.0


def test_it_is_registered_as_spreading_over_types():
    assert POLICIES["tidal-notice"].by_type and not POLICIES["tidal"].by_type


def test_a_replacement_is_insured_until_its_pool_has_shown_room_for_it():
    # a@z2 held three of ours before; now two: the replacement fits what it has shown, no on-demand beside it.
    state = initial_state(P, KEYS, 0)
    _, state = decide(obs(held=(0, 0, 3, 0)), P, state, 1000.0)
    assert state.pools[2].peak == 3
    plan, _ = decide(obs(held=(0, 0, 2, 0), noticed=(1, 0, 0, 0), preempted=(1, 0, 0, 0)), P, state, 1030.0)
    assert plan.spot[2] == 3 and plan.on_demand == 0
    # A pool that refused a launch is full at what it holds: its room is forgotten.
    _, state = decide(obs(held=(0, 0, 2, 0), failed=(0, 0, 1, 0)), P, state, 1060.0)
    assert state.pools[2].peak == 2


def test_refused_launches_short_of_the_target_get_on_demand_at_once():
    # A start where most pools are empty: one launch was accepted, the others refused.
    plan, _ = decide(obs(held=(1, 0, 0, 0), ready=(0, 0, 0, 0), failed=(0, 1, 1, 1)), P, initial_state(P, KEYS, 0),
                     1000.0)
    assert plan.on_demand == 2
