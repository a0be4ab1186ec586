"""Invariants of every capacity policy over random looks at a pool: a well-formed plan that asks for the target."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tidal.capacity.policies import POLICIES, Observation, ZoneView


@st.composite
def looks(draw):
    """A few successive looks at one pool (1-5 zones), each with any mix of held, ready, lost and refused nodes."""
    zones = draw(st.integers(1, 5))
    target = draw(st.integers(0, 12))
    out = []
    for _ in range(draw(st.integers(1, 8))):
        views = []
        for i in range(zones):
            held = draw(st.integers(0, 20))
            views.append(ZoneView(f"z{i}", held, draw(st.integers(0, held)), draw(st.integers(0, 5)),
                                  draw(st.integers(0, 5)), draw(st.integers(0, 3)),
                                  draw(st.sampled_from([0.2, 1.0, 2.5]))))
        od_held = draw(st.integers(0, 12))
        out.append(Observation(target=target, zones=tuple(views), on_demand_held=od_held,
                               on_demand_ready=draw(st.integers(0, od_held)), on_demand_price=3.0))
    return out


@pytest.mark.parametrize("name", sorted(POLICIES))
@settings(max_examples=60, deadline=None)
@given(seq=looks(), seed=st.integers(0, 2**31 - 1), gap=st.floats(1.0, 900.0))
def test_every_policy_plans_the_target_and_is_pure(name, seq, seed, gap):
    policy = POLICIES[name]
    params = policy.params()
    state = policy.initial_state(params, [z.name for z in seq[0].zones], seed)
    for i, observation in enumerate(seq):
        now = i * gap
        plan, after = policy.decide(observation, params, state, now)
        again, after_again = policy.decide(observation, params, state, now)
        assert (plan, after) == (again, after_again)  # a pure function of its inputs: retries are safe
        assert len(plan.spot) == len(observation.zones)
        assert all(isinstance(n, int) and n >= 0 for n in plan.spot) and plan.on_demand >= 0
        # Spot the pool may not get is covered by on-demand in the policies that fall back; the others hold N + k.
        assert sum(plan.spot) + plan.on_demand >= observation.target
        state = after


@settings(max_examples=200, deadline=None)
@given(seq=looks(), seed=st.integers(0, 2**31 - 1))
def test_tidal_places_spot_as_spothedge_and_never_holds_more_on_demand(seq, seed):
    # What makes `tidal` never dearer than SpotHedge, run by run: from the same looks, the same spot plan (zones,
    # random draws, active set) and at most SpotHedge's on-demand.
    sh, ours = POLICIES["spothedge"], POLICIES["tidal"]
    sh_params, our_params = sh.params(), ours.params()
    zones = [z.name for z in seq[0].zones]
    sh_state, our_state = sh.initial_state(sh_params, zones, seed), ours.initial_state(our_params, zones, seed)
    for i, observation in enumerate(seq):
        a, sh_state = sh.decide(observation, sh_params, sh_state, i * 30.0)
        b, our_state = ours.decide(observation, our_params, our_state, i * 30.0)
        assert a.spot == b.spot and b.on_demand <= a.on_demand
        assert (our_state.active, our_state.key) == (sh_state.active, sh_state.key)
