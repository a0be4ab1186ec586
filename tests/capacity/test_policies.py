"""Unit tables for the capacity policies: each reference policy's rule, with the arithmetic written out."""

from __future__ import annotations

import pytest

from tidal.capacity.policies import POLICIES, Observation, Plan, ZoneView
from tidal.capacity.policies import ess, even_spread, keyed_random, on_demand, placement, round_robin, spot_only
from tidal.capacity.policies import spothedge, tidal


def obs(held, ready=None, lost=None, target=3, od_held=0, od_ready=0, prices=None, noticed=None, failed=None):
    ready = ready if ready is not None else held
    lost = lost or [0] * len(held)
    failed = failed or [0] * len(held)
    noticed = noticed or [0] * len(held)
    prices = prices or [1.0] * len(held)
    return Observation(target=target, on_demand_held=od_held, on_demand_ready=od_ready, zones=tuple(
        ZoneView(f"z{i}", h, r, l, f, nt, p)
        for i, (h, r, l, f, nt, p) in enumerate(zip(held, ready, lost, failed, noticed, prices))))


# -- placement helpers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("counts,n,cands,expected", [
    ((0, 0, 0), 4, [0, 1, 2], (2, 1, 1)),
    ((2, 0, 1), 2, [0, 1, 2], (2, 2, 1)),   # zone 1 first (0), then zones 1 and 2 tie at 1: zone 1
    ((0, 0, 0), 3, [2], (0, 0, 3)),
    ((0, 0, 0), 1, [1, 0], (0, 1, 0)),
], ids=["4 over 3 empty zones", "emptiest first", "only candidates", "candidate order breaks ties"])
def test_fill_fewest(counts, n, cands, expected):
    assert placement.fill_fewest(counts, n, cands) == expected


@pytest.mark.parametrize("counts,total,expected", [
    ((3, 1, 1), 4, (2, 1, 1)),   # 5 -> 4: the fullest zone gives one
    ((2, 2, 0), 3, (2, 1, 0)),   # tie between zones 0 and 1: the later one gives
    ((1, 1, 1), 5, (1, 1, 1)),   # under the total: unchanged
], ids=["fullest gives", "tie: later zone gives", "under total"])
def test_keep_at_most(counts, total, expected):
    assert placement.keep_at_most(counts, total) == expected


def test_keyed_random_is_pure_and_in_range():
    key = keyed_random.seed_key(7)
    draws = []
    for _ in range(200):
        v, key = keyed_random.below(key, 3)
        draws.append(v)
    assert set(draws) == {0, 1, 2}
    again, k2 = keyed_random.below(keyed_random.seed_key(7), 3)
    assert again == draws[0]
    with pytest.raises(ValueError):
        keyed_random.below(key, 0)


# -- reference policies ----------------------------------------------------------------------------------------------
def test_on_demand_holds_the_target_only():
    plan, _ = on_demand.decide(obs([0, 0, 0], target=5), on_demand.OnDemandParams(), None, 0.0)
    assert plan == Plan(on_demand=5, spot=(0, 0, 0))


@pytest.mark.parametrize("held,k,expected", [
    ([0, 0, 0], 1, (2, 1, 1)),   # P = 3 + 1 = 4: 1,1,1 then the lowest index
    ([0, 2, 0], 1, (1, 2, 1)),   # keeps the 2, adds one to zones 0 and 2
    ([3, 1, 1], 1, (2, 1, 1)),   # 5 held, P = 4: the fullest zone gives one
    ([0, 0, 0], 0, (1, 1, 1)),
], ids=["empty", "keeps held", "trims", "no overprovision"])
def test_even_spread(held, k, expected):
    plan, _ = even_spread.decide(obs(held), even_spread.EvenSpreadParams(overprovision=k), None, 0.0)
    assert plan == Plan(0, expected)


@pytest.mark.parametrize("held,pointer,expected,next_pointer", [
    ([0, 0, 0], 0, (2, 1, 1), 1),   # 4 launches: zones 0,1,2,0 -> pointer 1
    ([1, 1, 1], 2, (1, 1, 2), 0),   # 1 launch at zone 2 -> pointer 0
    ([2, 1, 1], 1, (2, 1, 1), 1),   # nothing to launch: the pointer stays
], ids=["empty", "pointer kept across decisions", "no launch"])
def test_round_robin(held, pointer, expected, next_pointer):
    plan, state = round_robin.decide(obs(held), round_robin.RoundRobinParams(),
                                     round_robin.RoundRobinState(pointer), 0.0)
    assert plan == Plan(0, expected) and state.pointer == next_pointer


def test_spot_only_skips_a_zone_that_just_failed_and_prefers_cheap_zones():
    o = obs([0, 0, 0], lost=[1, 0, 0], prices=[0.5, 0.9, 0.7])
    plan, _ = spot_only.decide(o, spot_only.SpotOnlyParams(), None, 0.0)
    # usable by price: zone 2 (0.7), zone 1 (0.9); 4 nodes -> 2,2 (zone 2 first on ties)
    assert plan == Plan(0, (0, 2, 2))


@pytest.mark.parametrize("ready_spot,expected_od", [
    (4, 0),   # P - ready = 4 - 4 = 0
    (3, 1),   # 4 - 3 = 1
    (2, 2),
    (0, 3),   # min(N = 3, 4 - 0 = 4) = 3
], ids=["all ready", "one short", "two short", "none ready: capped at N"])
def test_spothedge_on_demand_fallback(ready_spot, expected_od):
    held = [2, 1, 1]
    ready = [min(2, ready_spot), min(1, max(0, ready_spot - 2)), max(0, ready_spot - 3)]
    plan, _ = spothedge.decide(obs(held, ready), spothedge.SpotHedgeParams(),
                               spothedge.initial_state(spothedge.SpotHedgeParams(), ["a", "b", "c"], 0), 0.0)
    assert plan.on_demand == expected_od and plan.spot == (2, 1, 1)


def test_spothedge_zone_status_and_placement():
    params = spothedge.SpotHedgeParams()
    state = spothedge.initial_state(params, ["a", "b", "c"], 3)
    # zone 0 lost its nodes: preempted; zone 1 holds (plan met): active; zone 2 planned nothing: keeps "active".
    plan, state = spothedge.decide(obs([0, 2, 0], lost=[2, 0, 0]), params, state, 0.0)
    assert state.active == (False, True, True)
    # 2 new nodes: the active zone holding none (2) first, then a random active zone (1 or 2); never zone 0.
    assert plan.spot[0] == 0 and plan.spot[2] >= 1 and sum(plan.spot) == 4
    # All zones preempted (at most min(1, 3 - 3) = 0 active): all become active again.
    _, state = spothedge.decide(obs([0, 0, 0], lost=[1, 1, 1]), params, state, 30.0)
    assert state.active == (True, True, True)


@pytest.mark.parametrize("desired,base,pct,expected", [
    (4, 0, 30, (2, 2)),    # ceil(4 x 0.3 = 1.2) = 2 on-demand
    (10, 0, 30, (3, 7)),   # ceil(3.0) = 3
    (4, 1, 30, (2, 2)),    # 1 + ceil(3 x 0.3 = 0.9) = 2
    (3, 5, 30, (3, 0)),    # base above desired: all on-demand
    (5, 0, 0, (0, 5)),
], ids=["seed 30% of 4", "30% of 10", "base 1", "base covers all", "0%"])
def test_ess_split(desired, base, pct, expected):
    assert ess.split(desired, ess.EssParams(on_demand_base=base, on_demand_percentage=pct)) == expected


def test_ess_pools_compensation_and_remedy():
    params = ess.EssParams(overprovision=1, spot_pools=2)  # desired 4 -> 2 on-demand (30% rounded up), 2 spot
    prices = [0.9, 0.3, 0.5]
    state = ess.initial_state(params, ["a", "b", "c"], 0)
    # COST_OPTIMIZED: zone 1 cheapest, then 2, then 0. Two pools: zones 1 and 2, one spot each.
    plan, _ = ess.decide(obs([0, 0, 0], prices=prices), params, state, 0.0)
    assert plan.spot == (0, 1, 1) and plan.on_demand >= 2
    # Zone 1 just refused: the pools become zones 2 and 0; held 1 in zone 2 -> 1 more spot in zone 0.
    plan, _ = ess.decide(obs([0, 0, 1], failed=[0, 1, 0], prices=prices), params, state, 30.0)
    assert plan.spot == (1, 0, 1) and plan.on_demand >= 2
    # Without remedy a node under notice still counts as held: no replacement, no compensation.
    plan, _ = ess.decide(obs([1, 0, 0], noticed=[0, 1, 0], prices=prices),
                         params.model_copy(update={"spot_remedy": False}), state, 60.0)
    assert plan == Plan(2, (1, 0, 0))
    # With remedy it is replaced at once, in the cheapest pool.
    plan, _ = ess.decide(obs([1, 0, 0], noticed=[0, 1, 0], prices=prices), params, state, 60.0)
    assert plan.spot == (1, 1, 0)
    # Every zone refusing: compensation covers all the spot with on-demand, 2 + 2.
    plan, _ = ess.decide(obs([0, 0, 0], failed=[1, 1, 1], prices=prices), params, state, 90.0)
    assert plan.on_demand == 4


# -- tidal -----------------------------------------------------------------------------------------------------------
def _tidal(o, state=None, now=0.0, **kw):
    params = tidal.TidalParams(**kw)
    state = state or tidal.initial_state(params, [z.name for z in o.zones], 0)
    return tidal.decide(o, params, state, now)


def test_tidal_starts_with_on_demand_alongside_unproven_spot():
    plan, _ = _tidal(obs([0, 0, 0], [0, 0, 0]))
    assert plan == Plan(on_demand=3, spot=(1, 1, 1))


def test_tidal_does_not_launch_on_demand_for_cold_spot_but_keeps_what_covers_it():
    _, state = _tidal(obs([0, 0, 0], [0, 0, 0]))
    # 30 s later: 3 spot held, none ready yet; 3 on-demand held (cold too): kept while spot is not ready.
    plan, state = _tidal(obs([1, 1, 1], [0, 0, 0], od_held=3), state, 30.0)
    assert plan.on_demand == 3
    # Spot ready: on-demand released.
    plan, state = _tidal(obs([1, 1, 1], [1, 1, 1], od_held=3, od_ready=3), state, 150.0, outage_value=0.0)
    assert plan.on_demand == 0 and plan.spot == (1, 1, 1)
    # A cold spot replacement with no on-demand held: no on-demand is launched for it.
    plan, _ = _tidal(obs([1, 1, 1], [1, 1, 0]), state, 180.0, outage_value=0.0)
    assert plan.on_demand == 0


def test_tidal_backs_off_a_refusing_zone_and_learns_its_capacity():
    _, state = _tidal(obs([0, 0, 0], [0, 0, 0]))
    plan, state = _tidal(obs([1, 0, 1], failed=[0, 1, 0]), state, 30.0, outage_value=0.0)
    # Zone 1 refused: retry no sooner than the 60 s backoff; the missing node goes to another zone.
    assert state.zones[1].retry_at == 90.0 and state.zones[1].cap_hint == 0
    assert plan.spot[1] == 0 and sum(plan.spot) == 3
    # A second refusal in a row doubles the backoff (120 s).
    _, state = _tidal(obs([2, 0, 1], failed=[0, 1, 0]), state, 90.0, outage_value=0.0)
    assert state.zones[1].retry_at == 90.0 + 120.0


def test_tidal_hedges_a_lone_zone_that_keeps_losing_nodes():
    zone_names = ["a"]
    params = tidal.TidalParams(outage_value=10.0)
    state = tidal.initial_state(params, zone_names, 0)
    now, plan = 0.0, None
    # A single zone that takes a node back every 5 minutes: its loss rate is learned and on-demand hedges it.
    for step in range(60):
        lost = 1 if step % 10 == 9 else 0
        plan, state = tidal.decide(Observation(3, (ZoneView("a", 3 - lost, 3 - lost, lost, 0),), plan.on_demand
                                               if plan else 0, plan.on_demand if plan else 0), params, state, now)
        now += 30.0
    assert plan.on_demand == 3


def test_tidal_is_pure():
    o = obs([1, 1, 1], [1, 1, 1], lost=[0, 1, 0])
    params = tidal.TidalParams()
    state = tidal.initial_state(params, ["a", "b", "c"], 0)
    first = tidal.decide(o, params, state, 10.0)
    assert tidal.decide(o, params, state, 10.0) == first
    assert state == tidal.initial_state(params, ["a", "b", "c"], 0)


def test_registry_names_and_params():
    assert set(POLICIES) == {"on-demand", "spot-only", "even-spread", "round-robin", "spothedge", "ess", "tidal"}
    for name, policy in POLICIES.items():
        params = policy.params()
        state = policy.initial_state(params, ["a", "b"], 0)
        plan, _ = policy.decide(obs([0, 0]), params, state, 0.0)
        assert len(plan.spot) == 2 and plan.on_demand >= 0, name


def test_tidal_learns_exposure_and_loss_shapes():
    params = tidal.TidalParams()
    _, state = _tidal(obs([0, 0], [0, 0]))
    # 30 s holding 2 + 1 nodes; zone 0 then loses 1 of its 2 (partial), zone 1 its only node (whole).
    _, state = tidal.decide(obs([1, 0], [1, 0], lost=[1, 1]), params, state, 30.0)
    assert (state.partial, state.whole) == (1, 1)
    assert sum(state.events) == 2 and sum(state.exposure) == pytest.approx(2 * 30.0)
    assert [m.events for m in state.zones] == [1, 1] and state.zones[0].upset_at == 30.0
