"""The fuller spot model: typed traces, notices per provider, (type, zone) pools, refused launches, moving prices,
the correlated generator and the optimum under it; `tidal simulate spot --model fuller`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tidal.capacity.policies import POLICIES, pool_params
from tidal.cli import main
from tidal.errors import UserError
from tidal.sim import fuller, synthetic, traces

T = 240


def step_trace(drop_at: int = 100, pools: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Capacity 4 everywhere; pool 0 drops to 0 at `drop_at` and comes back 40 ticks later."""
    cap = np.full((pools, T), 4, dtype=np.int64)
    cap[0, drop_at:drop_at + 40] = 0
    return cap, np.ones((pools, T))


def run(name, cap, prices, offers, **kw):
    settings = fuller.FullerSettings(**kw)
    over = {"notice_seconds": settings.notice_seconds} if "notice_seconds" in POLICIES[name].params.model_fields else {}
    return fuller.run_repeat(cap, prices, offers, POLICIES[name], pool_params(name, {}, over), 0, settings)


def test_with_an_aws_notice_the_replacement_is_ready_before_the_node_goes():
    cap, prices = step_trace()
    offers = fuller.Offers(("z0", "z1", "z2"))
    aws = run("tidal-notice", cap, prices, offers)
    assert aws.availability == 1.0
    # After the start spot replaced spot: on-demand stood in for one node only while its replacement was cold.
    assert aws.on_demand_held[10:].max() <= 1 and aws.on_demand_held[10:].sum() <= 5
    assert aws.on_demand_held[120:].sum() == 0
    # No notice: the same policy loses the node's replacement time.
    none = run("tidal-notice", cap, prices, offers, notice_seconds=0.0)
    assert none.availability < 1.0


def test_a_replacement_in_a_pool_full_at_what_it_holds_is_covered_by_on_demand_at_the_notice():
    # Every pool holds exactly one of ours and can take no more; pool 0 drops. The replacement goes where capacity
    # has shown itself and is refused: with a notice as long as a cold start there is no time to retry, so only
    # on-demand launched at the notice is ready when the node goes.
    cap = np.full((3, T), 1, dtype=np.int64)
    cap[0, 100:140] = 0
    prices = np.ones((3, T))
    offers = fuller.Offers(("z0", "z1", "z2"))
    insured = run("tidal-notice", cap, prices, offers)
    assert insured.ready[4:].min() >= 3 and insured.availability == 1.0
    name = "tidal-notice"
    params = pool_params(name, {}, {"notice_seconds": 120.0, "insure": False})
    bare = fuller.run_repeat(cap, prices, offers, POLICIES[name], params, 0, fuller.FullerSettings())
    assert bare.availability < 1.0


def test_spothedge_as_published_learns_of_a_loss_when_the_node_is_gone():
    cap, prices = step_trace()
    offers = fuller.Offers(("z0", "z1", "z2"))
    blind = run("spothedge", cap, prices, offers)
    told = run("spothedge", cap, prices, offers, notice_blind=frozenset())
    assert told.availability >= blind.availability


def test_pools_by_type_and_zone_and_prices_that_move():
    # Two types in two zones; type b is dearer. tidal-notice spreads one node per pool, the cheap pools first, and
    # moves to b when a drops everywhere.
    offers = fuller.Offers(("z1", "z2", "z1", "z2"), ("a", "a", "b", "b"))
    cap = np.full((4, T), 4, dtype=np.int64)
    cap[0:2, 120:] = 0  # type a goes everywhere at once (a type shock)
    prices = np.array([[1.0] * T, [1.0] * T, [1.5] * T, [1.5] * T])
    r = run("tidal-notice", cap, prices, offers)
    assert r.availability == 1.0
    assert r.spot_held[100].tolist() in ([1, 1, 1, 0], [1, 1, 0, 1])  # one per pool, both cheap ones first
    assert r.spot_held[200, 2:].sum() >= 3  # then b
    # The cost counts each tick's price: b costs 1.5 per node-tick.
    assert r.relative_cost > 3 * 1.0 * (T - 4) / (3 * 3.0 * (T - 4)) - 1e-9


def test_refused_launches_are_retried_elsewhere_and_on_demand_covers_what_spot_cannot():
    offers = fuller.Offers(("z0", "z1", "z2"))
    cap = np.zeros((3, T), dtype=np.int64)
    r = run("tidal-notice", cap, np.ones((3, T)), offers)
    # The first decision cannot know no pool has capacity: on-demand comes one decision later, and stays.
    assert r.ready[5:].min() >= 3 and r.spot_held.sum() == 0 and r.on_demand_held[10:].min() == 3
    r = run("tidal-notice", np.full((3, T), 4, dtype=np.int64), np.ones((3, T)), offers, launch_failure_rate=0.3)
    assert r.availability > 0.95


def test_the_optimum_is_a_lower_bound_at_full_availability():
    cap, prices = step_trace(pools=2)
    offers = fuller.Offers(("z0", "z1"))
    settings = fuller.FullerSettings()
    best = fuller.optimal_repeat(cap, prices, settings)
    assert best.availability == 1.0
    for name in ("tidal-notice", "spothedge", "ess"):
        assert run(name, cap, prices, offers).relative_cost >= best.relative_cost - 1e-9


def test_notice_capacity_lets_a_node_serve_out_its_notice():
    cap = np.array([[4, 4, 0, 0, 0, 0]])
    assert fuller.notice_capacity(cap, 2).tolist() == [[4, 4, 4, 4, 0, 0]]


def test_correlated_generator_drops_pools_together_by_zone_and_type(tmp_path):
    spec = synthetic.CorrelatedPools(points=2000, mean_up_points=1e9, zone_shock=0.01, type_shock=0.0)
    trace = synthetic.correlated_trace(spec, 3)
    data = np.stack(trace.data)
    zones = np.array(trace.series_zones)
    down = data == 0
    # With no pool's own events and no type shocks, every drop is a zone's: all its types at once.
    for z in set(trace.series_zones):
        rows = down[zones == z]
        assert (rows.all(axis=0) == rows.any(axis=0)).all() and rows.any()
    assert (np.stack(trace.prices) <= spec.on_demand_price).all()
    # Written and read back: types, zones, prices and the on-demand price survive.
    back = traces.load_spot_traces(synthetic.write_trace(trace, str(tmp_path)))
    assert back.instance_types == trace.instance_types and back.series_zones == trace.series_zones
    assert back.on_demand_price == 3.0 and np.allclose(back.prices[0], trace.prices[0], atol=1e-4)


def test_published_traces_run_as_one_type():
    trace = traces.load_spot_traces("aws1")
    offers = fuller.offers_of(trace)
    assert offers.instance_types is None and len(offers.zones) == 3
    (cap, prices), = fuller.windows(trace, 30.0, 600, 1, 0)
    assert cap.shape == prices.shape == (3, 600) and (prices == 1).all()


@pytest.mark.parametrize("doc,words", [
    ({"metadata": {"gap_seconds": 300, "instance_type": "a"}, "data": [1, 2]}, "name both instance_type and zone"),
    ({"metadata": {"gap_seconds": 300}, "data": [1, 2], "prices": [1]}, "one non-negative number per data point"),
])
def test_bad_typed_trace_files_are_one_line(tmp_path, doc, words):
    (tmp_path / "x.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match=words):
        traces.load_spot_traces(str(tmp_path))


def test_cli_fuller_model(capsys, tmp_path):
    trace = synthetic.correlated_trace(synthetic.CorrelatedPools(points=200, zones=2, types=("a", "b")), 0)
    directory = synthetic.write_trace(trace, str(tmp_path))
    assert main(["simulate", "spot", "--traces", directory, "--model", "fuller", "--provider", "gcp", "--policy",
                 "tidal-notice", "--repeats", "1", "--ticks", "400", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["policy"] == "tidal-notice" and 0 < doc["relative_cost"] < 2
    assert main(["simulate", "spot", "--traces", directory, "--model", "fuller", "--policy", "tidal-notice",
                 "--notice", "-5", "--ticks", "400"]) == 2
    assert "--notice" in capsys.readouterr().err
