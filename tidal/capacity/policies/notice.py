"""The `tidal-notice` policy: spot across (instance type, zone) pools, replaced when the reclaim notice comes.

Clouds say before they reclaim a spot node (AWS two minutes, GCP 30 s, Alibaba
about five minutes), and interruptions come together by (type, zone). So:
- spot is held in pools of one type in one zone; each new node goes to the
  usable pool holding the fewest of ours, then the zone holding the fewest
  (a loss takes one pool, sometimes one zone), then the cheapest at today's
  price; a pool or zone that lost nodes lately ranks last;
- a node under notice is replaced at once (the Observation shows it apart from
  `held`), so with a notice at least as long as a cold start the replacement
  is ready before the node goes and no spare is held in calm. Where the notice
  leaves no time to retry a refused launch (notice < cold start + one
  decision), a second launch in another zone hedges the replacement until the
  noticed nodes are gone; where it is shorter than a cold start, one spare is
  held (SpotHedge's), since the notice cannot cover the gap;
- a pool that refuses a launch or takes nodes is left alone for a backoff that
  doubles while it keeps doing so (`backoff_seconds` .. `max_backoff_seconds`);
- on-demand only while spot cannot cover: for the target that no usable pool
  can take, or that refused launches left uncovered; for nodes under notice
  whose replacement was refused or has no pool left to try; and, where a
  refused replacement would leave no time to retry, at the notice, unless the
  replacement's pool has shown room for it (held as many of ours since it
  last lost or refused: a pool holding our nodes may be full at exactly what
  it holds, and the policy cannot see capacity). On-demand held stays until
  ready spot covers the target, then goes (spot again).

Pure: it sees the Observation (past and present) and an explicit `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field

from tidal.capacity.policies.types import Observation, Plan, split_key


class NoticeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    notice_seconds: float = Field(default=120.0, ge=0, description="the provider's lead before a reclaim")
    cold_start_seconds: float = Field(default=120.0, ge=0)
    decision_seconds: float = Field(default=30.0, gt=0)
    overprovision: int = Field(default=-1, ge=-1, le=1000,
                               description="spot spares held in calm; -1: 1 where the notice is shorter than a "
                                           "cold start, else 0")
    hedge: bool = Field(default=True, description="a second launch beside a replacement that has no time to retry")
    backoff_seconds: float = Field(default=60.0, gt=0)
    max_backoff_seconds: float = Field(default=1800.0, gt=0)
    recent_seconds: float = Field(default=900.0, ge=0, description="how long a loss marks its pool and zone")
    insure: bool = Field(default=True, description="on-demand stands in for a noticed node whose replacement has "
                                                   "no time to retry and goes to a pool that has not shown room "
                                                   "for it (held as many since its last loss or refusal)")


@dataclass(frozen=True, slots=True)
class PoolMemory:
    retry_at: float = 0.0       # no new launch in the pool before this
    failures: int = 0           # refusals or losses in a row, for the backoff
    lost_at: float | None = None  # the pool's last loss (notice or reclaim) of our nodes
    refused_at: float | None = None  # the pool's last refusal of a launch: it may be full at what it holds
    peak: int = 0               # the most of ours it has held since it last lost or refused: room shown


@dataclass(frozen=True, slots=True)
class NoticeState:
    pools: tuple[PoolMemory, ...]
    zone_of: tuple[str, ...]    # each pool's zone (pools of one zone share its shocks)


def initial_state(params: NoticeParams, zones: Sequence[str], seed: int) -> NoticeState:
    return NoticeState(tuple(PoolMemory() for _ in zones), tuple(split_key(z)[1] for z in zones))


def _learn(observation: Observation, params: NoticeParams, state: NoticeState, now: float) -> list[PoolMemory]:
    out = []
    for z, m in zip(observation.zones, state.pools):
        if z.lost:
            failures = m.failures + 1
            backoff = min(params.max_backoff_seconds, params.backoff_seconds * 2 ** (failures - 1))
            m = PoolMemory(now + backoff, failures, now if z.preempted else m.lost_at,
                           now if z.launch_failed else m.refused_at, z.held)
        else:
            if z.ready and m.failures and now >= m.retry_at:
                m = replace(m, failures=0)  # it gave us a node that came up: trusted again
            if z.held > m.peak:
                m = replace(m, peak=z.held)
        out.append(m)
    return out


def decide(observation: Observation, params: NoticeParams, state: NoticeState,
           now: float) -> tuple[Plan, NoticeState]:
    zones, n = observation.zones, observation.target
    if len(state.pools) != len(zones):
        state = initial_state(params, [z.name for z in zones], 0)
    pools = _learn(observation, params, state, now)
    zone_of = state.zone_of
    recent = {zone_of[i] for i, m in enumerate(pools)
              if m.lost_at is not None and now - m.lost_at < params.recent_seconds}
    lead = params.notice_seconds - params.cold_start_seconds
    spare = params.overprovision if params.overprovision >= 0 else (1 if lead < 0 else 0)
    noticed = sum(z.noticed for z in zones)
    refused_now = sum(z.launch_failed for z in zones)
    short = observation.spot_ready + noticed < n  # cold launches pending (a start, a scale-out, a refusal)
    hedge = 1 if params.hedge and ((noticed and 0 <= lead < params.decision_seconds) or short) else 0
    want = n + spare + hedge

    # Each pool's rank, once per decision (the scale run makes millions of decisions): a recent loss, its zone's
    # recent loss, the price, the order.
    ranks = [(m.lost_at is not None and now - m.lost_at < params.recent_seconds, zone_of[i] in recent,
              zones[i].price, i) for i, m in enumerate(pools)]
    rank = ranks.__getitem__

    usable = [i for i in range(len(zones)) if now >= pools[i].retry_at]
    # Keep what is held beyond `want` only while needed: cold nodes go first, then ready ones, from the
    # worst-ranked pools (a pool that just lost nodes) first.
    spot = [z.held for z in zones]
    extra = sum(spot) - want
    if extra > 0:
        worst_first = sorted(range(len(zones)), key=rank, reverse=True)
        for cold in (True, False):
            for i in worst_first:
                if extra <= 0:
                    break
                cut = min(extra, spot[i] - zones[i].ready if cold else spot[i])
                spot[i] -= cut
                extra -= cut
    per_zone: dict[str, int] = {}
    for i, c in enumerate(spot):
        per_zone[zone_of[i]] = per_zone.get(zone_of[i], 0) + c
    # A pool proves it has capacity by holding our nodes up; one that does not (yet) gets one launch at a time,
    # so two launches refused together by an empty pool do not leave a replacement short.
    proven = [zones[i].ready > 0 and not ranks[i][0] and
              (pools[i].refused_at is None or now - pools[i].refused_at >= params.recent_seconds)
              for i in range(len(zones))]
    # Replacements with no time to retry, and their hedge, go first where capacity has shown itself (each to
    # another pool); a replacement that has no such pool left is covered by on-demand as well (`unsure`).
    urgent = noticed + hedge if lead < params.decision_seconds else 0
    new = max(0, want - sum(spot))
    unsure = min(noticed, new) if urgent else 0
    for k in range(new):
        room = [i for i in usable if proven[i] or zones[i].held or spot[i] == zones[i].held]
        if not room:
            break
        best = min(room, key=lambda i: (k < urgent and not (proven[i] and spot[i] == zones[i].held),
                                        spot[i], per_zone[zone_of[i]], ranks[i]))
        # A replacement is sure where the pool has shown room for it: it held as many of ours since it last lost
        # or refused (a pool holding our nodes may be full at exactly that, as capacity that moves a node at a
        # time often is; the policy cannot see capacity, only what it was given).
        if k < (urgent if params.insure else noticed) and urgent and proven[best] and \
                spot[best] == zones[best].held and (not params.insure or spot[best] < pools[best].peak):
            unsure -= 1
        spot[best] += 1
        per_zone[zone_of[best]] += 1
    placed = sum(spot)
    # On-demand: the target, or a hedge, that no usable pool can take now; nodes under notice whose replacement
    # was refused, has no proven pool to go to, or cannot be ready in time; and what is held, until ready spot
    # covers the target.
    on_demand = max(0, n - placed, want - placed if short or hedge else 0)
    if noticed and (refused_now or not any(proven[i] for i in usable) or (lead < 0 and spare == 0)):
        on_demand = max(on_demand, min(noticed, n - observation.spot_ready))
    on_demand = max(on_demand, min(max(0, unsure), n - observation.spot_ready))
    # Short of the target with launches refused and no pool that has shown capacity (a start where most pools are
    # empty): on-demand for what no accepted launch covers, rather than probing the untried pools one at a time
    # while the target waits. Where a proven pool is left, spot is retried there.
    if short and refused_now and not any(proven[i] for i in usable):
        on_demand = max(on_demand, n - observation.spot_held)
    on_demand = max(on_demand, min(observation.on_demand_held, n - observation.spot_ready))
    return (Plan(on_demand=max(0, min(n, on_demand)), spot=tuple(spot)),
            NoticeState(tuple(pools), zone_of))
