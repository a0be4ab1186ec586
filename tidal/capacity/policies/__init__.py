"""The capacity policies, one implementation each, and the registry the control plane and the simulator read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from tidal.capacity.policies import (ess, even_spread, hedge, notice, on_demand, round_robin, spot_only, spothedge,
                                     spothedge_lean, tidal)
from tidal.capacity.policies.types import Observation, Plan, PolicyDef, ZoneView

POLICIES: dict[str, PolicyDef] = {
    "on-demand": PolicyDef("on-demand", on_demand.OnDemandParams, on_demand.initial_state, on_demand.decide,
                           "on-demand only (the cost baseline)"),
    "spot-only": PolicyDef("spot-only", spot_only.SpotOnlyParams, spot_only.initial_state, spot_only.decide,
                           "N+k spot in the cheapest zones, no on-demand"),
    "even-spread": PolicyDef("even-spread", even_spread.EvenSpreadParams, even_spread.initial_state,
                             even_spread.decide, "N+k spot, new nodes in the zone holding the fewest"),
    "round-robin": PolicyDef("round-robin", round_robin.RoundRobinParams, round_robin.initial_state,
                             round_robin.decide, "N+k spot, new nodes placed round robin over zones"),
    "spothedge": PolicyDef("spothedge", spothedge.SpotHedgeParams, spothedge.initial_state, spothedge.decide,
                           "SkyServe's SpotHedge: N+k spot spread over active zones, dynamic on-demand fallback"),
    "spothedge-lean": PolicyDef("spothedge-lean", spothedge_lean.SpotHedgeLeanParams, spothedge_lean.initial_state,
                                spothedge_lean.decide, "SpotHedge's placement and spare, on-demand only for the "
                                "target, no spare beside a lone zone that empties at once"),
    "ess": PolicyDef("ess", ess.EssParams, ess.initial_state, ess.decide,
                     "the reference procedure's node pool: base + % on-demand, spot pools, compensate with on-demand"),
    "tidal": PolicyDef("tidal", tidal.TidalParams, tidal.initial_state, tidal.decide,
                       "Tidal's default: SpotHedge's spot and spare, on-demand only where it can keep the pool "
                       "serving"),
    "tidal-hedge": PolicyDef("tidal-hedge", hedge.HedgeParams, hedge.initial_state, hedge.decide,
                             "a spare sized by the pool's record of losses: none in calm (cheaper, bets on calm)"),
    "tidal-notice": PolicyDef("tidal-notice", notice.NoticeParams, notice.initial_state, notice.decide,
                              "spot over (instance type, zone) pools, replaced when the reclaim notice comes; "
                              "on-demand only while spot cannot cover", by_type=True, acts_on_notice=True),
}

def pool_params(policy: str, fields: dict[str, Any], overrides: dict[str, Any]) -> BaseModel:
    """A pool's parameters for its policy: the pool's fields of the same names, then its `policy_params`.
    Raises ValueError, with a one-line reason, for a parameter the policy does not have or a bad value."""
    params = POLICIES[policy].params
    unknown = sorted(set(overrides) - set(params.model_fields))
    if unknown:
        raise ValueError(f"policy {policy!r} has no parameter {', '.join(map(repr, unknown))} "
                         f"(it has: {', '.join(params.model_fields)})")
    given = {k: v for k, v in fields.items() if k in params.model_fields}
    given.update(overrides)
    try:
        return params.model_validate(given)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"policy {policy!r}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


__all__ = ["POLICIES", "Observation", "Plan", "PolicyDef", "ZoneView", "pool_params"]
