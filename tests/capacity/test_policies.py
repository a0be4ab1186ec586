"""Unit tables for the capacity policies: each reference policy's rule, with the arithmetic written out."""

from __future__ import annotations

import dataclasses

import pytest

from tidal.capacity.policies import POLICIES, Observation, Plan, ZoneView
from tidal.capacity.policies import ess, even_spread, keyed_random, on_demand, placement, round_robin, spot_only
from tidal.capacity.policies import hedge, spothedge, spothedge_lean, tidal


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


# -- spothedge-lean ---------------------------------------------------------------------------------------------------
LEAN = spothedge_lean.SpotHedgeLeanParams()


def _lean(o, state=None, **state_fields):
    state = state or spothedge_lean.initial_state(LEAN, [z.name for z in o.zones], 0)
    return spothedge_lean.decide(o, LEAN, dataclasses.replace(state, **state_fields), 0.0)


@pytest.mark.parametrize("held,ready,od_held,expected_od", [
    ([0, 0, 0], [0, 0, 0], 0, 3),   # nothing held: 4 new spot, on-demand for the target alongside (min(3, 4 - 0))
    ([2, 1, 0], [2, 1, 0], 0, 1),   # one new spot launch: one on-demand alongside (SpotHedge: 4 - 3 = 1 too)
    ([2, 1, 1], [2, 1, 0], 0, 0),   # a cold spare held: ready spot covers N, no on-demand (SpotHedge: 1)
    ([2, 1, 1], [1, 1, 0], 2, 1),   # held on-demand stays while ready spot (2) is short of N: 3 - 2 = 1
    ([2, 1, 1], [2, 1, 1], 3, 0),   # all ready: on-demand released
], ids=["start", "one relaunch", "cold spare", "keep held on-demand", "release"])
def test_spothedge_lean_on_demand_covers_the_target_not_the_spare(held, ready, od_held, expected_od):
    plan, _ = _lean(obs(held, ready, od_held=od_held, od_ready=od_held))
    assert plan.on_demand == expected_od and sum(plan.spot) == 4


def test_spothedge_lean_places_spot_exactly_as_spothedge():
    # Same active set, same random draws: the same zones, over a run of losses and refusals.
    sh = spothedge.initial_state(spothedge.SpotHedgeParams(), "abcd", 7)
    lean = spothedge_lean.initial_state(LEAN, "abcd", 7)
    looks = [obs([0, 0, 0, 0]), obs([1, 1, 1, 1]), obs([0, 1, 1, 1], lost=[1, 0, 0, 0]),
             obs([1, 0, 1, 1], failed=[0, 1, 0, 0]), obs([2, 0, 0, 1], lost=[0, 0, 1, 0])]
    for o in looks:
        a, sh = spothedge.decide(o, spothedge.SpotHedgeParams(), sh, 0.0)
        b, lean = spothedge_lean.decide(o, LEAN, lean, 0.0)
        assert a.spot == b.spot and sh.active == lean.active and sh.key == lean.key


@pytest.mark.parametrize("held,lost,failed,emptied,partial,expected_spot", [
    # Zones 1 and 2 just lost nodes: zone 0 is the only one active, and holds all the spot.
    ([3, 0, 0], [0, 1, 1], [0, 0, 0], 3, 0, (3, 0, 0)),   # 3 losses seen emptying a zone, none partial: no spare
    ([3, 0, 0], [0, 1, 1], [0, 0, 0], 0, 0, (4, 0, 0)),   # too few seen (the 2 here): SpotHedge's spare
    ([3, 0, 0], [0, 1, 1], [0, 0, 0], 5, 1, (4, 0, 0)),   # a zone was once cut down but not out: the spare helps
    ([3, 0, 0], [0, 0, 0], [0, 1, 1], 5, 0, (3, 0, 0)),   # refusals by empty zones count as neither kind
], ids=["lone zone that empties: no spare", "too little evidence", "partial losses seen", "lone after refusals"])
def test_spothedge_lean_drops_the_spare_beside_a_lone_zone_only_on_evidence(held, lost, failed, emptied, partial,
                                                                            expected_spot):
    plan, state = _lean(obs(held, lost=lost, failed=failed), emptied=emptied, partial=partial)
    assert state.active == (True, False, False) and plan.spot == expected_spot


@pytest.mark.parametrize("desired,base,pct,expected", [
    (4, 0, 30, (2, 2)),    # ceil(4 x 0.3 = 1.2) = 2 on-demand
    (10, 0, 30, (3, 7)),   # ceil(3.0) = 3
    (4, 1, 30, (2, 2)),    # 1 + ceil(3 x 0.3 = 0.9) = 2
    (3, 5, 30, (3, 0)),    # base above desired: all on-demand
    (5, 0, 0, (0, 5)),
], ids=["seed 30% of 4", "30% of 10", "base 1", "base covers all", "0%"])
def test_ess_split(desired, base, pct, expected):
    assert ess.split(desired, ess.EssParams(on_demand_base=base, on_demand_percentage=pct)) == expected


INF = float("inf")
ESS = ess.EssParams()  # the reference pool: 30% on-demand above a base of 0, 2 spot pools, compensate, remedy, 45 s refusals
# Prices for the tables below: zone 0 cheapest, then 1, then 2; so the two pools are zones 0 and 1 unless one refuses.
CHEAP = [0.3, 0.5, 0.9]


def _ess(o, refused=(-INF, -INF, -INF), now=100.0, **kw):
    return ess.decide(o, ESS.model_copy(update=kw), ess.EssState(tuple(refused)), now)


@pytest.mark.parametrize("o,refused,kw,expected", [
    # target 10 -> split (3, 7); 7 spot over pools {0, 1}, fewest first: 4 + 3. On-demand: the share 3 and
    # nothing for the 7 spot this very decision asks for (the old rule added 7 - 0 held = 7 on-demand).
    (obs([0, 0, 0], target=10, od_held=1, prices=CHEAP), None, {}, Plan(3, (4, 3, 0))),
    # target 6 -> split (ceil(1.8) = 2, 4); 4 spot as 2 + 2 (was Plan(6, (2, 2, 0))).
    (obs([0, 0, 0], target=6, od_held=1, prices=CHEAP), None, {}, Plan(2, (2, 2, 0))),
    # Zone 0 refused 4 launches: pools {1, 2}; held 3 in zone 1 -> the 4 more go 3 to zone 2, 1 to zone 1 (fewest
    # first, ties to the cheaper): (0, 4, 3). On-demand 3: the other zones take all 7.
    (obs([0, 3, 0], failed=[4, 0, 0], target=10, od_held=3, prices=CHEAP), None, {}, Plan(3, (0, 4, 3))),
    # Zone 0 reclaimed 2 of its 4: it keeps the 2 it holds; the 2 lost go fewest first over pools {1, 2} from
    # (2, 3, 0): zone 2 -> 1, zone 2 -> 2, giving (2, 3, 2). On-demand 3.
    (obs([2, 3, 0], lost=[2, 0, 0], target=10, od_held=3, prices=CHEAP), None, {}, Plan(3, (2, 3, 2))),
    # Zone 0 refused until 130 > now 100 (no loss reported now): still skipped, 7 over {1, 2} = 4 + 3.
    (obs([0, 0, 0], target=10, prices=CHEAP), (130.0, -INF, -INF), {}, Plan(3, (0, 4, 3))),
    # At now 100 = refused_until the zone is usable again: pools {0, 1}.
    (obs([0, 0, 0], target=10, prices=CHEAP), (100.0, -INF, -INF), {}, Plan(3, (4, 3, 0))),
    # No fallback: zones 0 and 1 refusing leave one pool (zone 2), which takes all 7; on-demand 3.
    (obs([0, 0, 0], target=10, prices=CHEAP), (130.0, 130.0, -INF), {}, Plan(3, (0, 0, 7))),
    # Every zone refusing: no spot placed, so on-demand covers all 7: 3 + (7 - 0) = 10.
    (obs([0, 0, 0], target=10, od_held=3, prices=CHEAP), (130.0, 130.0, 130.0), {}, Plan(10, (0, 0, 0))),
    # Every zone refusing, 2 spot still held in zone 1: they stay; on-demand for the other 5: 3 + (7 - 2) = 8.
    (obs([0, 2, 0], target=10, od_held=3, prices=CHEAP), (130.0, 130.0, 130.0), {}, Plan(8, (0, 2, 0))),
    # Spot back (no zone refusing), 10 on-demand held, no spot yet: 7 spot launched, and the 7 compensating
    # on-demand stay until the spot is held: min(10 - 3 on-demand above the share, 7 - 0 spot held) = 7 -> 10.
    (obs([0, 0, 0], target=10, od_held=10, prices=CHEAP), None, {}, Plan(10, (4, 3, 0))),
    # Next decision, the 7 spot held: min(10 - 3, 7 - 7) = 0 -> on-demand back to its share, 3.
    (obs([4, 3, 0], target=10, od_held=10, prices=CHEAP), None, {}, Plan(3, (4, 3, 0))),
    # Half way: 5 of 7 spot held: min(7, 7 - 5) = 2 compensating on-demand stay: 3 + 2 = 5.
    (obs([4, 1, 0], target=10, od_held=10, prices=CHEAP), None, {}, Plan(5, (4, 3, 0))),
    # A scale-out never keeps on-demand it does not hold: od_held 1 < share 3: min(1 - 3, 7) < 0 -> 3.
    (obs([1, 0, 0], target=10, od_held=1, prices=CHEAP), None, {}, Plan(3, (4, 3, 0))),
    # Without compensate_with_on_demand every zone refusing leaves only the share: 3 on-demand, no spot.
    (obs([0, 0, 0], target=10, od_held=3, prices=CHEAP), (130.0, 130.0, 130.0),
     {"compensate_with_on_demand": False}, Plan(3, (0, 0, 0))),
    # Overprovision 1, target 3: desired 4 -> (ceil(1.2) = 2, 2). Without remedy a node under notice (zone 1)
    # still counts as held: held (1, 1, 0) = 2 wanted, nothing new; the plan leaves the noticed one out: (1, 0, 0).
    (obs([1, 0, 0], noticed=[0, 1, 0], od_held=2, prices=[0.9, 0.3, 0.5]), None,
     {"overprovision": 1, "spot_remedy": False}, Plan(2, (1, 0, 0))),
    # With remedy it is replaced at once, in the cheapest pool holding fewest (zone 1): (1, 1, 0); on-demand 2.
    (obs([1, 0, 0], noticed=[0, 1, 0], od_held=2, prices=[0.9, 0.3, 0.5]), None,
     {"overprovision": 1}, Plan(2, (1, 1, 0))),
], ids=["scale-out 1->10: share only", "scale-out 1->6: share only", "zone refused: spot in the others",
        "zone reclaimed: spot in the others", "refusal lasts", "refusal expires", "no fallback to refusing zones",
        "all refusing: on-demand for all spot", "all refusing: on-demand for the spot not held",
        "spot back: on-demand stays until spot held", "spot held: swapped back", "swap back half way",
        "scale-out keeps no on-demand it lacks", "no compensation", "no remedy: noticed counts as held",
        "remedy: noticed replaced"])
def test_ess_rules(o, refused, kw, expected):
    plan, _ = _ess(o, refused or (-INF, -INF, -INF), **kw)
    assert plan == expected


@pytest.mark.parametrize("o,before,kw,after", [
    # A launch failure or a reclaim in a zone: refused until now + 45 = 145; other zones keep theirs.
    (obs([0, 0, 0], failed=[0, 2, 0]), (-INF, 120.0, -INF), {}, (-INF, 145.0, -INF)),
    (obs([0, 0, 0], lost=[1, 0, 0]), (-INF, 120.0, -INF), {}, (145.0, 120.0, -INF)),
    # The window is the param: 100 + 10 = 110.
    (obs([0, 0, 0], lost=[0, 0, 1]), (-INF, -INF, -INF), {"unavailable_seconds": 10.0}, (-INF, -INF, 110.0)),
    # A notice alone is no loss (the control plane reports the reclaim as `preempted` when the notice comes).
    (obs([1, 0, 0], noticed=[1, 0, 0]), (-INF, -INF, -INF), {}, (-INF, -INF, -INF)),
], ids=["launch failed", "reclaimed", "custom window", "notice only"])
def test_ess_refused_until(o, before, kw, after):
    _, state = _ess(o, before, **kw)
    assert state == ess.EssState(after)


def test_ess_one_call_per_tick_against_capacities():
    """The expected sequence, one decision per 30 s tick, each plan clipped to the zones' capacities."""
    params = ess.EssParams()
    state = ess.initial_state(params, ["z0", "z1", "z2"], 0)
    held, od, failed = [0, 0, 0], 1, [0, 0, 0]

    def tick(now, target, caps):
        nonlocal state, held, od, failed
        o = Observation(target=target, on_demand_held=od, zones=tuple(
            ZoneView(f"z{i}", held[i], held[i], 0, failed[i], 0, p) for i, p in enumerate(CHEAP)))
        plan, state = ess.decide(o, params, state, now)
        now_held = [min(s, c) for s, c in zip(plan.spot, caps)]
        failed = [s - h for s, h in zip(plan.spot, now_held)]
        held, od = now_held, plan.on_demand
        return plan

    # 1 -> 10, spot everywhere: (3, 7) at once.
    assert tick(0, 10, [99, 99, 99]) == Plan(3, (4, 3, 0))
    # Zone 0 drops to 0 and refuses its 4 at 30; at 60 (refused until 30 + 45 = 75) they go to zones 1 and 2.
    tick(30, 10, [0, 99, 99])
    assert tick(60, 10, [0, 0, 0]) == Plan(3, (0, 4, 3))
    # Zones 1 and 2 drop to 0 too (refused until 90 + 45 = 135): every zone refusing, on-demand 3 + 7.
    assert tick(90, 10, [0, 0, 0]) == Plan(10, (0, 0, 0))
    # Zone 0's refusal ran out at 75: spot is tried there again, and the 7 on-demand held stay while it is only
    # planned (min(10 - 3, 7 - 0) = 7), so the failed retry costs no on-demand cold start.
    assert tick(120, 10, [0, 0, 0]) == Plan(10, (7, 0, 0))
    # Zone 0 refused again (until 165); zones 1 and 2 usable again at 150 and have spot back.
    assert tick(150, 10, [99, 99, 99]) == Plan(10, (0, 4, 3))
    # The 7 spot held: swapped back to the share.
    assert tick(180, 10, [99, 99, 99]) == Plan(3, (0, 4, 3))


# -- tidal -----------------------------------------------------------------------------------------------------------
def _tidal(o, params=tidal.TidalParams(), **state_fields):
    state = tidal.initial_state(params, [z.name for z in o.zones], 0)
    return tidal.decide(o, params, dataclasses.replace(state, **state_fields), 0.0)


@pytest.mark.parametrize("held,ready,od_held,od_ready,expected_od", [
    ([0, 0, 0], [0, 0, 0], 0, 0, 3),  # nothing held: 4 new spot, on-demand for the target alongside (SpotHedge: 3)
    ([2, 1, 0], [2, 1, 0], 0, 0, 1),  # one new spot launch: one on-demand alongside it (SpotHedge: 4 - 3 = 1)
    ([2, 1, 1], [2, 1, 0], 0, 0, 0),  # the launch was taken, a cold spare: ready spot covers N (SpotHedge: 1)
    ([2, 1, 1], [2, 1, 0], 1, 0, 0),  # on-demand still cold goes too: it would be ready no sooner than the spare
    ([2, 1, 1], [1, 1, 0], 2, 0, 1),  # held on-demand stays while ready spot (2) is short of N: 3 - 2 = 1
    ([2, 1, 1], [2, 1, 0], 1, 1, 1),  # ready on-demand is the spare until the spot one is ready (spothedge-lean: 0)
    ([2, 1, 1], [2, 1, 1], 1, 1, 0),  # all spot ready: on-demand released
], ids=["start", "one relaunch", "cold spare", "cold on-demand goes", "keep for the target", "ready spare stays",
        "release"])
def test_tidal_on_demand_covers_the_target_and_a_ready_spare(held, ready, od_held, od_ready, expected_od):
    o = obs(held, ready, od_held=od_held, od_ready=od_ready)
    plan, _ = _tidal(o)
    sh, _ = spothedge.decide(o, spothedge.SpotHedgeParams(), spothedge.initial_state(spothedge.SpotHedgeParams(),
                                                                                     "abc", 0), 0.0)
    assert plan.on_demand == expected_od <= sh.on_demand and plan.spot == sh.spot


def test_tidal_places_spot_exactly_as_spothedge():
    # Same active set, same random draws: the same zones, over a run of losses and refusals.
    sh = spothedge.initial_state(spothedge.SpotHedgeParams(), "abcd", 7)
    ours = tidal.initial_state(tidal.TidalParams(), "abcd", 7)
    looks = [obs([0, 0, 0, 0]), obs([1, 1, 1, 1]), obs([0, 1, 1, 1], lost=[1, 0, 0, 0]),
             obs([1, 0, 1, 1], failed=[0, 1, 0, 0]), obs([2, 0, 0, 1], lost=[0, 0, 1, 0])]
    for o in looks:
        a, sh = spothedge.decide(o, spothedge.SpotHedgeParams(), sh, 0.0)
        b, ours = tidal.decide(o, tidal.TidalParams(), ours, 0.0)
        assert a.spot == b.spot and sh.active == ours.active and sh.key == ours.key


@pytest.mark.parametrize("last_target,growing,ready,expected_od", [
    # Target 4, 5 spot held (2, 2, 1): the spare is the one not ready.
    (4, False, [2, 1, 1], 0),   # steady: a cold spare gets no on-demand
    (3, False, [2, 1, 1], 1),   # scale-out 3 -> 4: the ready spare is target now; SpotHedge's 5 - 4 = 1 covers
    (4, True, [2, 1, 1], 1),    # still catching up: it stays
    (4, True, [2, 2, 1], 0),    # caught up (5 ready): growth over
    (5, True, [2, 1, 1], 0),    # scaled in again: growth over
    (0, False, [2, 1, 1], 0),   # the first target is no scale-out
], ids=["steady", "scale-out", "catching up", "caught up", "scaled in", "first target"])
def test_tidal_covers_the_new_spare_after_a_scale_out(last_target, growing, ready, expected_od):
    plan, state = _tidal(obs([2, 2, 1], ready, target=4), target=last_target, growing=growing)
    assert plan.on_demand == expected_od and plan.spot == (2, 2, 1) and state.target == 4
    assert state.growing == (expected_od == 1)


@pytest.mark.parametrize("losses,exposure_days,expected_od", [
    (0, 0.0, 0),      # the prior: 4 losses a day per node; 4 ready x 150 s x 4.6e-5/s = 0.03 expected: no cover
    (6, 1.0, 0),      # 7 losses over 1 + 0.25 node-days: 6.5e-5/s x 4 x 150 s = 0.04
    (60, 1.0, 1),     # 61 over 1.25: 5.6e-4/s x 4 x 150 s = 0.34 >= 0.1: the cold spare is covered, as SpotHedge does
], ids=["prior only", "calm pool", "churning pool"])
def test_tidal_covers_a_cold_spare_only_where_a_second_loss_within_a_cold_start_is_likely(losses, exposure_days,
                                                                                         expected_od):
    # 5 spot held, 4 ready (target 4): SpotHedge would hold 1 on-demand for the cold spare.
    plan, state = _tidal(obs([2, 2, 1], [2, 1, 1], target=4), target=4, losses=losses,
                         exposure=exposure_days * 86400.0)
    assert plan.on_demand == expected_od and plan.spot == (2, 2, 1)


@pytest.mark.parametrize("evidence,lost,emptied,partial,expected_spot", [
    # Zones 1 and 2 just lost nodes: zone 0 is the only one active, and holds all the spot.
    (0, [0, 2, 2], 5, 0, (4, 0, 0)),   # off by default: SpotHedge's spare, whatever was seen
    (3, [0, 2, 1], 2, 0, (3, 0, 0)),   # zone 1 lost both its nodes: the third such loss, none partial: no spare
    (3, [0, 1, 1], 2, 0, (4, 0, 0)),   # zones that held one node say nothing of whole-zone losses: still 2
    (3, [0, 2, 2], 5, 1, (4, 0, 0)),   # a zone was once cut down but not out: the spare helps
], ids=["default: off", "evidence reached", "one-node losses do not count", "partial losses seen"])
def test_tidal_lone_zone_rule_is_opt_in_and_counts_only_whole_multi_node_losses(evidence, lost, emptied, partial,
                                                                                expected_spot):
    plan, state = _tidal(obs([3, 0, 0], lost=lost), tidal.TidalParams(lone_evidence=evidence), emptied=emptied,
                         partial=partial)
    assert state.active == (True, False, False) and plan.spot == expected_spot


# -- tidal-hedge -----------------------------------------------------------------------------------------------------
def _hedge(o, state=None, now=0.0, **kw):
    params = hedge.HedgeParams(**kw)
    state = state or hedge.initial_state(params, [z.name for z in o.zones], 0)
    return hedge.decide(o, params, state, now)


def test_hedge_starts_with_on_demand_alongside_unproven_spot():
    # Before any loss is seen, the prior (4 losses a day per zone) makes one spare worth its price: N + 1 spot,
    # fewest per zone first; none of it confirmed yet, so N on-demand start alongside.
    plan, _ = _hedge(obs([0, 0, 0], [0, 0, 0]))
    assert plan == Plan(on_demand=3, spot=(2, 1, 1))


def test_hedge_keeps_on_demand_until_ready_spot_takes_its_place():
    _, state = _hedge(obs([0, 0, 0], [0, 0, 0]))
    # 30 s later: the spot launches were confirmed (held) but are cold: the on-demand held stays.
    plan, state = _hedge(obs([2, 1, 1], [0, 0, 0], od_held=3), state, 30.0)
    assert plan.on_demand == 3
    # Spot ready: on-demand released.
    plan, state = _hedge(obs([2, 1, 1], [2, 1, 1], od_held=3, od_ready=3), state, 150.0)
    assert plan == Plan(on_demand=0, spot=(2, 1, 1))
    # Only 2 spot ready of 3 held (one cold): one held on-demand node stays for it, no new one is launched.
    plan, _ = _hedge(obs([1, 1, 1], [1, 1, 0], od_held=1, od_ready=1), state, 180.0, outage_value=0.0)
    assert plan == Plan(on_demand=1, spot=(1, 1, 1))
    plan, _ = _hedge(obs([1, 1, 1], [1, 1, 0]), state, 180.0, outage_value=0.0)
    assert plan == Plan(on_demand=0, spot=(1, 1, 1))


def test_hedge_backs_off_a_refusing_zone_and_learns_its_capacity():
    _, state = _hedge(obs([0, 0, 0], [0, 0, 0]))
    plan, state = _hedge(obs([1, 0, 1], failed=[0, 1, 0]), state, 30.0, outage_value=0.0)
    # Zone 1 refused: retry no sooner than the 60 s backoff; the missing node goes to another zone, with
    # on-demand alongside it until the launch is confirmed.
    assert state.zones[1].retry_at == 90.0 and state.zones[1].cap_hint == 0
    assert plan == Plan(on_demand=1, spot=(2, 0, 1))
    # A second refusal in a row doubles the backoff (120 s).
    _, state = _hedge(obs([2, 0, 1], failed=[0, 1, 0]), state, 90.0, outage_value=0.0)
    assert state.zones[1].retry_at == 90.0 + 120.0


def _calm_day(params):
    """A day holding one ready node in each of three zones without a loss."""
    state = hedge.initial_state(params, ["a", "b", "c"], 0)
    now, plan = 0.0, None
    for i in range(2880):
        plan, state = hedge.decide(obs([1, 1, 1] if i else [0, 0, 0], [1, 1, 1] if i > 5 else [0, 0, 0]),
                                   params, state, now)
        now += 30.0
    return plan, state, now


def test_hedge_spare_follows_the_learned_risk():
    params = hedge.HedgeParams()
    plan, state, now = _calm_day(params)
    # A calm day: the learned loss rate is low, the spare is not worth its price.
    assert plan == Plan(on_demand=0, spot=(1, 1, 1))
    # Zone b takes its node: it backs off; a spare goes to a calm zone, on-demand alongside until confirmed.
    plan, state = hedge.decide(obs([1, 0, 1], [1, 0, 1], lost=[0, 1, 0]), params, state, now)
    assert plan == Plan(on_demand=1, spot=(2, 0, 1))
    # With outage_value 0 the cheapest cover wins; with a huge one, the most spares allowed (max_spare).
    assert hedge.decide(obs([1, 1, 1]), params.model_copy(update={"outage_value": 0.0}), state, now)[0] \
        == Plan(on_demand=0, spot=(1, 1, 1))
    big = params.model_copy(update={"outage_value": 1e9})
    assert sum(hedge.decide(obs([1, 1, 1]), big, state, now)[0].spot) == 3 + big.max_spare


def test_hedge_spares_are_on_demand_where_spot_cannot_be_had():
    params = hedge.HedgeParams(outage_value=1e6)
    # Two zones that refused their next node (their capacities, 2 and 1, are known until the backoff ends): the
    # spares the risk asks for are on-demand (SpotHedge's fallback, for the spares too): two, so that losing
    # zone a's two nodes still leaves three.
    state = hedge.initial_state(params, ["a", "b"], 0)
    _, state = hedge.decide(Observation(3, (ZoneView("a", 0, 0), ZoneView("b", 0, 0))), params, state, 0.0)
    plan, _ = hedge.decide(Observation(3, (ZoneView("a", 2, 2, 0, 1), ZoneView("b", 1, 1, 0, 1)), 0, 0),
                           params, state, 30.0)
    assert plan == Plan(on_demand=2, spot=(2, 1))


def test_hedge_buys_no_spare_beside_nodes_all_in_one_zone():
    params = hedge.HedgeParams(outage_value=1e6)
    # A lone zone holding the target: a loss there is valued as taking all its nodes, which one or two spares
    # cannot cover (three on-demand would, but the policy never hedges a whole zone with on-demand).
    state = hedge.initial_state(params, ["a"], 0)
    _, state = hedge.decide(Observation(3, (ZoneView("a", 0, 0),)), params, state, 0.0)
    plan, _ = hedge.decide(Observation(3, (ZoneView("a", 3, 3, 0, 1),), 0, 0), params, state, 30.0)
    assert plan == Plan(on_demand=0, spot=(3,))


def test_hedge_is_pure():
    o = obs([1, 1, 1], [1, 1, 1], lost=[0, 1, 0])
    params = hedge.HedgeParams()
    state = hedge.initial_state(params, ["a", "b", "c"], 0)
    first = hedge.decide(o, params, state, 10.0)
    assert hedge.decide(o, params, state, 10.0) == first
    assert state == hedge.initial_state(params, ["a", "b", "c"], 0)


def test_registry_names_and_params():
    assert set(POLICIES) == {"on-demand", "spot-only", "even-spread", "round-robin", "spothedge", "spothedge-lean",
                             "ess", "tidal-hedge", "tidal", "tidal-notice"}
    for name, policy in POLICIES.items():
        params = policy.params()
        state = policy.initial_state(params, ["a", "b"], 0)
        plan, _ = policy.decide(obs([0, 0]), params, state, 0.0)
        assert len(plan.spot) == 2 and plan.on_demand >= 0, name


def test_hedge_learns_exposure_and_loss_shapes():
    params = hedge.HedgeParams()
    _, state = _hedge(obs([0, 0], [0, 0]))
    # 30 s holding 2 + 1 nodes; zone 0 then loses 1 of its 2 (partial), zone 1 its only node (whole).
    _, state = hedge.decide(obs([1, 0], [1, 0], lost=[1, 1]), params, state, 30.0)
    assert (state.partial, state.whole) == (1, 1)
    assert sum(state.events) == 2 and sum(state.exposure) == pytest.approx(2 * 30.0)
    assert [m.events for m in state.zones] == [1, 1] and state.zones[0].upset_at == 30.0


def test_hedge_backoff_stays_bounded_after_thousands_of_refusals():
    # A zone that has refused for weeks: the doubling is capped, not an overflow that takes the control plane down.
    params = hedge.HedgeParams()
    state = hedge.initial_state(params, ["a", "b"], 0)
    state = dataclasses.replace(state, zones=(dataclasses.replace(state.zones[0], failures=5000), state.zones[1]))
    _, state = hedge.decide(obs([0, 1], failed=[1, 0]), params, state, 100.0)
    assert state.zones[0].retry_at == 100.0 + params.max_backoff_seconds



def test_pool_params_take_the_pool_fields_then_policy_params():
    from tidal.capacity.policies import pool_params
    # ESS reads the pool's own knobs by name; policy_params override them.
    params = pool_params("ess", {"on_demand_base": 2, "on_demand_percentage": 30, "name": "p"},
                         {"on_demand_base": 1})
    assert (params.on_demand_base, params.on_demand_percentage) == (1, 30)
    with pytest.raises(ValueError, match="policy 'ess' has no parameter 'outage_value'"):
        pool_params("ess", {}, {"outage_value": 3})
    with pytest.raises(ValueError, match="policy 'tidal-hedge': max_spare:"):
        pool_params("tidal-hedge", {}, {"max_spare": -1})
    with pytest.raises(ValueError, match="policy 'tidal' has no parameter 'max_spare'"):
        pool_params("tidal", {}, {"max_spare": 1})
