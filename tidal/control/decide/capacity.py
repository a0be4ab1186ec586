"""Capacity (pure): per node pool, demand -> the pool's policy -> its Plan -> LaunchNode / TerminateNode / DrainNode.

tidal.capacity decides (demand, observe, the policy) and turns the Plan into
commands with the executor every Plan goes through, the simulator's too
(`tidal.capacity.executor`: the diff, the launch budget under `max_nodes`,
refused launches skipped for a while and fed back as failures). This module
wraps those commands in the control plane's (events, the replicas a drain moves)
as one `CarryOutPool`, keeps a drained node cordoned while its pool still sheds
it, and marks nodes empty or busy for scale-in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from tidal.capacity.catalog import Catalog
from tidal.capacity.executor import Ledger, pool_commands
from tidal.capacity.nodepool import Drain, Launch, PoolNode, Terminate, demand, observe, pool_zones, shedding
from tidal.capacity.policies import POLICIES, pool_params
from tidal.capacity.policies.persist import encode_state, load_or_initial
from tidal.control.commands import (CarryOutPool, Command, DrainNode, Event, LaunchNode, LaunchRefused, MarkEmpty,
                                    Preempted, SavePolicyState, StopReplica, TerminateNode, Uncordon, Warn)
from tidal.control.decide.replicas import requests_of
from tidal.control.settings import ControlSettings
from tidal.control.snapshot import Snapshot
from tidal.scheduling import matches
from tidal.spec import NodePoolSpec
from tidal.states import NodeState, ReplicaState as S


@dataclass(frozen=True)
class PoolMemory:
    state: object = None
    zones: tuple[str, ...] | None = None  # the zones `state` follows (None: not loaded yet)
    ledger: Ledger = field(default_factory=Ledger)  # losses and refusals since the last decision (the executor's)
    last_plan: dict | None = None
    shedding: frozenset[str] = frozenset()


def empty_since(snap: Snapshot) -> dict[str, float | None]:
    """Each ready node's empty_since as it should be now: None while any replica is bound to it."""
    busy = {r.node for r in snap.replicas if r.node}
    out = {}
    for n in snap.nodes:
        if n.state == NodeState.READY:
            out[n.name] = None if n.name in busy else (n.empty_since if n.empty_since is not None else snap.now)
    return out


def track_empty(snap: Snapshot) -> list[Command]:
    return [MarkEmpty(name, since) for name, since in empty_since(snap).items()
            if since != snap.node(name).empty_since]


def decide(snap: Snapshot, catalog: Catalog, memory: Mapping[str, PoolMemory],
           settings: ControlSettings) -> tuple[list[Command], dict[str, PoolMemory]]:
    out = track_empty(snap)  # placements made this pass make nodes busy before any is judged empty
    empty = empty_since(snap)
    memories = dict(memory)
    for pool in snap.pools.values():
        cmds, memories[pool.name] = _pool(snap, catalog, pool, memory.get(pool.name, PoolMemory()), empty, settings)
        out += cmds
    return out, memories


def _pool(snap: Snapshot, catalog: Catalog, pool: NodePoolSpec, mem: PoolMemory, empty: dict[str, float | None],
          settings: ControlSettings) -> tuple[list[Command], PoolMemory]:
    now = snap.now
    out: list[Command] = []
    rows = snap.pool_nodes(pool.name)
    nodes = [PoolNode(n.name, n.zone, n.instance_type, n.billing, str(n.state), n.launched_at,
                      empty.get(n.name, n.empty_since), bool(n.cordoned)) for n in rows]
    wants = [requests_of(snap.services[r.service].spec) for r in snap.in_state(S.PENDING)
             if r.service in snap.services and matches(snap.services[r.service].spec.selector, pool.labels)]
    d = demand(pool, nodes, wants, catalog, now)
    policy = POLICIES[pool.policy]
    zones = tuple(pool_zones(pool, catalog, policy.by_type))
    params = pool_params(pool.policy, pool.model_dump(), pool.policy_params)
    state = mem.state
    if mem.zones != zones:
        # The policy's memory (e.g. SpotHedge's preempted zones) outlives a control-plane restart.
        state, why = load_or_initial(policy, params, zones, snap.policy_states.get(pool.name))
        if why:
            out.append(Warn(f"node pool {pool.name}: {why}"))
    ledger = mem.ledger.expire(now, settings.unavailable_seconds)
    obs = observe(pool, catalog, nodes, d.target, list(zones), d.node_type, *ledger.counts(),
                  settings.cold_start_seconds, now)
    plan, new_state = policy.decide(obs, params, state, now)
    if new_state != mem.state or mem.zones != zones:
        out.append(SavePolicyState(pool.name, encode_state(pool.policy, zones, new_state)))
    shed = frozenset(shedding(plan, list(zones), nodes))
    planned = pool_commands(pool, plan, zones, nodes, catalog, now, d.node_type, ledger,
                            settings.unavailable_seconds)
    gone: set[str] = set()
    by_name = {n.name: n for n in rows}
    actions: list[tuple[Command, ...]] = []
    for dec in planned.commands:
        if isinstance(dec, Launch):
            t = catalog.for_pool(pool).get(dec.instance_type)  # the pool's region's listing of the name
            price = t.price(dec.zone, dec.capacity_type)
            # What the zone holds is counted by the executor at launch: earlier launches may have been refused.
            actions.append((LaunchNode(pool.name, dec.zone, dec.instance_type, dec.capacity_type, t.gpus,
                                       Event("NodeLaunched", "node/{name}",
                                             f"{dec.capacity_type} {dec.instance_type} in {dec.zone} "
                                             f"(${price:.3f}/h) for pool {pool.name}")),))
        elif isinstance(dec, Terminate):
            n = by_name[dec.node]
            gone.add(n.name)
            actions.append((TerminateNode(n.name, dec.reason, Event(
                "NodeTerminated", f"node/{n.name}",
                f"{dec.reason} (lived {now - n.launched_at:.0f}s, {n.billing})")),))
        elif isinstance(dec, Drain):
            reps = [r.id for r in snap.on(dec.node, (S.READY,))]
            # One still starting serves nothing yet: it stops, and its replacement starts on a node the plan keeps.
            stops = tuple(StopReplica(r.id, f"its node {dec.node} is being drained before it was ready",
                                      Event("ReplicaStopped", f"replica/{r.id}",
                                            f"its node {dec.node} is being drained before it was ready"))
                          for r in snap.on(dec.node, (S.STARTING,)))
            actions.append(stops + (DrainNode(dec.node, tuple(reps), Event(
                "NodeDrain", f"node/{dec.node}", f"{dec.reason} ({len(reps)} replica(s))") if reps else None),))
    if planned.commands:
        out.append(CarryOutPool(pool.name, planned, tuple(actions)))
    for n in nodes:
        # Drained for a swap the plan no longer wants: an ordinary node again. One the plan still sheds stays
        # cordoned, so the replicas that just left it are not placed back on it.
        if n.cordoned and n.state == NodeState.READY and n.empty_since is not None and n.name not in gone \
                and n.name not in shed:
            out.append(Uncordon(n.name))
    last_plan = {"time": now, "target": d.target, "on_demand": plan.on_demand, "spot": plan.spot_by_zone(obs),
                 "pending": len(wants)}
    return out, PoolMemory(new_state, zones, ledger.decided(), last_plan, shed)


def feed(memory: Mapping[str, PoolMemory], refused: list[LaunchRefused],
         preempted: list[Preempted]) -> dict[str, PoolMemory]:
    """What the executor learned, for the policy's next observation: refused launches and notices."""
    out = dict(memory)
    for r in refused:
        m = out.get(r.pool, PoolMemory())
        instance_type, zone, capacity_type = r.offering
        out[r.pool] = replace(m, ledger=m.ledger.refusal(Launch(r.pool, zone, instance_type, capacity_type), r.at))
    for p in preempted:
        m = out.get(p.pool, PoolMemory())
        out[p.pool] = replace(m, ledger=m.ledger.preemption(p.zone, 1, p.instance_type))
    return out
