"""Tidal's policies against SpotHedge on synthetic traces nobody tuned on (the protocol, 3 repeats to stay fast)."""

from __future__ import annotations

import numpy as np
import pytest

from tidal.capacity.policies import POLICIES
from tidal.sim import synthetic, traces
from tidal.sim.protocol import ProtocolSettings, run_trace


def _runs(trace, names=("spothedge", "tidal", "tidal-hedge"), repeats=3):
    expanded = traces.expand(trace, 30)
    caps = [traces.window(expanded, o, 2880) for o in traces.offsets(expanded, 2880, repeats, 0)]
    return {name: run_trace(caps, trace.zones, POLICIES[name], POLICIES[name].params(), ProtocolSettings())
            for name in names}


def _means(trace):
    return {name: (r.availability.mean(), r.relative_cost.mean()) for name, r in _runs(trace).items()}


def test_always_available_costs_spothedges_spare_or_bets_on_calm():
    out = _means(synthetic.constant_trace(3, synthetic.UNLIMITED))
    # SpotHedge holds N + 1 = 4 spot always, and so does `tidal`: a causal policy that held less here would be less
    # available than SpotHedge on a trace that starts the same and then loses a node. Both start on-demand alongside
    # spot and release it once spot is ready: 3 on-demand are charged for tick d = 4 only. Over the 2876 measured
    # ticks, relative to 3 x 3 x 2876:
    spothedge = (1.0, pytest.approx((4 * 2876 + 3 * 3) / (9 * 2876)))
    assert out["spothedge"] == spothedge and out["tidal"] == spothedge
    # `tidal-hedge` starts the same (its prior makes a spare worth it) and drops the spare once the calm it has seen
    # outweighs the prior, after about eight hours (the prior is 4 losses a day per zone, weighed as one event):
    # ~930 spare node-ticks, 3.6% of the on-demand cost on top of the N spot.
    floor = (3 * 2876 + 3 * 3) / (9 * 2876)
    assert out["tidal-hedge"][0] == 1.0 and floor + 0.025 < out["tidal-hedge"][1] < floor + 0.045


def test_never_available_falls_back_to_on_demand_from_the_start():
    out = _means(synthetic.constant_trace(3, 0))
    assert all(v == (1.0, pytest.approx(1.0)) for v in out.values())


@pytest.mark.parametrize("trace", [
    synthetic.markov_trace(synthetic.MarkovZones(mean_up_points=100, mean_down_points=30), 1),
    synthetic.markov_trace(synthetic.MarkovZones(zones=3, mean_up_points=20, mean_down_points=5,
                                                 up_capacity=synthetic.UNLIMITED), 8),
    synthetic.lognormal_trace(4, 20, 20, 1.2, 6, 11, partial=0.2),
    synthetic.walk_trace(3, 8, 0.2, 13, crash=0.003),
], ids=["4 per zone on/off", "zones that empty at once", "log-normal, partial", "random walk"])
def test_tidal_is_spothedge_run_by_run_for_less(trace):
    out = _runs(trace, ("spothedge", "tidal"))
    sh, ours = out["spothedge"], out["tidal"]
    for a, b in zip(sh.repeats, ours.repeats):
        # The same spot nodes in the same zones at every tick, never more on-demand, so never dearer; and, on
        # these traces, ready as often (on-demand it does not hold could only have mattered after a second loss
        # within one cold start of a spare that is itself cold).
        assert np.array_equal(a.spot_held, b.spot_held) and (b.on_demand_held <= a.on_demand_held).all()
        assert b.availability == a.availability and b.relative_cost <= a.relative_cost
    assert ours.relative_cost.mean() < sh.relative_cost.mean()


@pytest.mark.parametrize("spec,seed", [
    (synthetic.MarkovZones(mean_up_points=100, mean_down_points=30), 1),
    (synthetic.MarkovZones(zones=2, mean_up_points=80, mean_down_points=40), 4),
], ids=["3 independent on/off zones", "2 zones"])
def test_tidal_hedge_costs_less_at_about_the_same_availability(spec, seed):
    out = _means(synthetic.markov_trace(spec, seed))
    (sh_a, sh_c), (t_a, t_c) = out["spothedge"], out["tidal-hedge"]
    assert t_c < sh_c - 0.03
    assert t_a >= sh_a - 0.005


@pytest.mark.parametrize("spec,seed", [
    (synthetic.MarkovZones(zones=3, mean_up_points=20, mean_down_points=5, up_capacity=synthetic.UNLIMITED), 8),
    (synthetic.MarkovZones(mean_up_points=100, mean_down_points=30), 1),
], ids=["zones that empty at once", "4 nodes per zone"])
def test_spothedge_lean_is_spothedge_with_less_on_demand_and_no_useless_spare(spec, seed):
    out = _runs(synthetic.markov_trace(spec, seed), ("spothedge", "spothedge-lean"))
    sh, lean = out["spothedge"], out["spothedge-lean"]
    # Run by run: never more spot held than SpotHedge's N + 1 at any tick, and cheaper in every repeat.
    for a, b in zip(sh.repeats, lean.repeats):
        assert b.spot_held.sum(axis=1).max() <= 4 and b.relative_cost < a.relative_cost
    # Once a spare is dropped the two draw different random zones, so three repeats differ by chance (a few tenths
    # of a point); the paired comparison over 60 runs is benchmarks/sim/synthetic_table.py.
    assert lean.availability.mean() >= sh.availability.mean() - 0.005


def test_tidal_in_the_fuller_model_holds_spothedges_spot_for_less():
    # Scale-outs, 120 s notices and refused launches (the scale run's model, 6 services x 12 h). Guaranteed: the
    # same spot (so the same preemptions and refusals) and never dearer. Not guaranteed: availability, because with
    # many nodes a second loss within a spare's cold start is likelier (docs/capacity-policy.md gives the gaps
    # measured); this is a regression bound of a tenth of a point.
    from tidal.sim import workload
    from tidal.sim.fleet import FleetSettings, run_service
    trace = synthetic.markov_trace(synthetic.MarkovZones(zones=10, points=1200, mean_up_points=100,
                                                         mean_down_points=30, up_capacity=8, partial=0.1), 0)
    expanded = traces.expand(trace, 30)
    ticks = 1440
    settings = FleetSettings(tick_seconds=30.0, notice_seconds=120.0, launch_failure_rate=0.02, max_replicas=20)
    rates = workload.diurnal(60, 0.5, ticks * 30)
    ready = {"spothedge": 0, "tidal": 0}
    cheaper = 0
    for i, offset in enumerate(traces.offsets(expanded, ticks, 6, 0)):
        arrivals = workload.arrivals(rates, 30, ticks, np.random.default_rng(i))
        sh, ours = (run_service(traces.window(expanded, offset, ticks), trace.zones, arrivals, POLICIES[name],
                                POLICIES[name].params(), settings, i) for name in ("spothedge", "tidal"))
        assert sh.preemptions == ours.preemptions and sh.launch_failures == ours.launch_failures
        assert ours.cost <= sh.cost
        cheaper += ours.cost < sh.cost
        ready["spothedge"] += int((sh.ready >= sh.desired).sum())
        ready["tidal"] += int((ours.ready >= ours.desired).sum())
    assert cheaper >= 3 and ready["tidal"] >= ready["spothedge"] - 0.001 * 6 * ticks
