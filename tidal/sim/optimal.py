"""The offline optimum of the protocol: an integer program that knows the whole trace (a lower bound, not a policy).

Variables per tick t: spot held s[z,t] (integer, at most the zone's capacity)
and on-demand held o[t] (integer); ready r[z,t] <= s[z,t'] for every t' in
t-d..t and q[t] <= o[t'] likewise (continuous: at an optimum they equal the
window minimum, an integer). Constraint: sum_z r[z,t] + q[t] >= N for every t
in [d, T) (availability 100%). Objective: the protocol's cost, sum over t in
[d, T) of spot price x s + on-demand price x o. Solved with CBC through PuLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import numpy as np

from tidal.errors import TidalError
from tidal.sim.protocol import ProtocolSettings, RepeatResult, score


@dataclass(frozen=True)
class OptimalSolution:
    spot_held: np.ndarray
    on_demand_held: np.ndarray


def solve(capacity: np.ndarray, settings: ProtocolSettings, time_limit_seconds: float = 120.0,
          gap: float = 0.0, prices: np.ndarray | None = None) -> OptimalSolution:
    """`capacity` is zones x ticks (spot pools x ticks); `prices`, the same shape, the spot price of each pool at
    each tick (default: the settings' one price). Returns held counts per tick."""
    import pulp  # imported here: only the `optimal` baseline needs the solver

    with warnings.catch_warnings():
        # PuLP 3 announces its 4.0 API; the calls used here work in both.
        warnings.simplefilter("ignore", DeprecationWarning)
        return _solve(pulp, capacity, settings, time_limit_seconds, gap, prices)


def _solve(pulp, capacity: np.ndarray, settings: ProtocolSettings, time_limit_seconds: float,
           gap: float, prices: np.ndarray | None = None) -> OptimalSolution:

    n_zones, ticks = capacity.shape
    d, n = settings.cold_start_ticks, settings.target
    # Holding more than N spot in a zone never helps: N ready nodes are all availability asks for.
    upper = np.minimum(capacity, n)
    prob = pulp.LpProblem("spot_optimal", pulp.LpMinimize)
    s = {(z, t): pulp.LpVariable(f"s_{z}_{t}", 0, int(upper[z, t]), cat="Integer")
         for z in range(n_zones) for t in range(ticks)}
    o = {t: pulp.LpVariable(f"o_{t}", 0, n, cat="Integer") for t in range(ticks)}
    r = {(z, t): pulp.LpVariable(f"r_{z}_{t}", 0, n) for z in range(n_zones) for t in range(d, ticks)}
    q = {t: pulp.LpVariable(f"q_{t}", 0, n) for t in range(d, ticks)}
    price = np.full(capacity.shape, settings.spot_price) if prices is None else prices
    prob += (pulp.lpSum(float(price[z, t]) * s[z, t] for z in range(n_zones) for t in range(d, ticks))
             + pulp.lpSum(settings.on_demand_price * o[t] for t in range(d, ticks)))
    for t in range(d, ticks):
        for back in range(d + 1):
            for z in range(n_zones):
                prob += r[z, t] <= s[z, t - back]
            prob += q[t] <= o[t - back]
        prob += pulp.lpSum(r[z, t] for z in range(n_zones)) + q[t] >= n
    solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_seconds, gapRel=gap or None)
    status = prob.solve(solver)
    if pulp.LpStatus[status] not in ("Optimal",) and prob.sol_status not in (pulp.LpSolutionIntegerFeasible,):
        raise TidalError(f"the optimal baseline's integer program ended {pulp.LpStatus[status]}")
    held = np.array([[round(s[z, t].value() or 0) for z in range(n_zones)] for t in range(ticks)], dtype=np.int64)
    od = np.array([round(o[t].value() or 0) for t in range(ticks)], dtype=np.int64)
    return OptimalSolution(held, od)


def run_repeat(capacity: np.ndarray, settings: ProtocolSettings, time_limit_seconds: float = 120.0) -> RepeatResult:
    sol = solve(capacity, settings, time_limit_seconds)
    availability, relative_cost, ready = score(sol.spot_held, sol.on_demand_held, settings)
    return RepeatResult(availability, relative_cost, sol.spot_held, sol.on_demand_held, ready)
