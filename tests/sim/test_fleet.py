"""The fuller model: queueing arithmetic, notices, launch failures, the autoscaler's replica count."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tidal.capacity.policies import POLICIES
from tidal.sim import queueing, workload
from tidal.sim.fleet import FleetSettings, run_service


@pytest.mark.parametrize("rate,servers,service,slo,expected", [
    # M/M/1: response time ~ Exp(mu - lambda): P(T <= t) = 1 - exp(-(20 - 10) x 0.1) = 1 - e^-1.
    (10.0, 1, 0.05, 0.1, 1 - math.exp(-1.0)),
    (0.0, 1, 0.05, 0.1, 1.0),          # no load
    (25.0, 1, 0.05, 0.1, 0.0),          # overloaded (lambda >= mu)
    (10.0, 0, 0.05, 0.1, 0.0),          # nobody serving
], ids=["M/M/1", "idle", "overloaded", "no servers"])
def test_within_slo(rate, servers, service, slo, expected):
    assert queueing.within_slo(rate, servers, service, slo) == pytest.approx(expected)


def test_erlang_c_and_mean_latency():
    assert queueing.erlang_c(1, 0.5) == pytest.approx(0.5)            # M/M/1: P(wait) = rho
    assert queueing.erlang_c(2, 1.0) == pytest.approx(1 / 3)          # c = 2, a = 1: 1/3
    assert queueing.mean_latency(10.0, 1, 0.05) == pytest.approx(0.1)  # 1 / (mu - lambda) = 1 / 10
    # More servers at the same load: more requests within the SLO.
    assert queueing.within_slo(30, 4, 0.05, 0.1) > queueing.within_slo(30, 2, 0.05, 0.1)


def test_workload_shapes(tmp_path):
    assert workload.bursts(1, 9, 10, 3, 12).tolist() == [9, 9, 9, 1, 1, 1, 1, 1, 1, 1, 9, 9]
    path = tmp_path / "rates.csv"
    path.write_text("second,rate\n0,5\n1,7\n")
    assert workload.from_csv(str(path)).tolist() == [5.0, 7.0]
    counts = workload.arrivals(np.array([5.0, 7.0]), 2, 3, np.random.default_rng(0))
    assert counts.shape == (3,) and counts.sum() > 0


def _always(zones, ticks, value=1000):
    return np.full((zones, ticks), value)


def test_autoscaler_sizes_the_fleet_and_spot_serves_it():
    settings = FleetSettings(tick_seconds=10, max_replicas=20)
    ticks = 360  # one hour
    arrivals = np.full(ticks, 35 * 10)  # 35 requests/s -> ceil(35 / 10) = 4 replicas
    policy = POLICIES["spot-only"]
    r = run_service(_always(3, ticks), ["a", "b", "c"], arrivals, policy, policy.params(overprovision=0), settings)
    assert r.desired[-1] == 4 and r.ready[-1] == 4
    assert r.preemptions == 0 and r.launch_failures == 0 and r.relative_cost == pytest.approx(1 / 3)
    assert r.slo_attainment > 0.9


def test_a_noticed_node_serves_and_is_billed_until_its_notice_ends_and_failures_are_counted():
    settings = FleetSettings(tick_seconds=10, cold_start_seconds=20, notice_seconds=60, min_replicas=2)
    ticks = 60
    capacity = _always(1, ticks, 2)
    capacity[0, 30:] = 1  # the zone takes one node back at tick 30 (10 s ticks)
    policy = POLICIES["spot-only"]
    r = run_service(capacity, ["a"], np.zeros(ticks, dtype=np.int64), policy, policy.params(overprovision=0),
                    settings)
    assert r.preemptions == 1
    assert r.launch_failures > 0        # the replacement is refused: the zone holds 1 now
    # No replacement can start, so the noticed node's replica serves on (as the control plane keeps it) until
    # the notice's last 10 s (the margin): ticks 30-34 of its 60 s notice; it goes at tick 36.
    assert r.ready[29] == 2 and list(r.ready[30:35]) == [2] * 5 and r.ready[35] == 1
    # Billed: 2 nodes for ticks 0-29 and the noticed one until its notice ends (60 s = 6 ticks), 1 after.
    assert r.cost == pytest.approx(2 * 30 + 1 * 30 + 6)
