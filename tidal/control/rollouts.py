"""The rollout actions people take (start a canary, set weights, promote, roll back) and the rollout's JSON view.

Each action checks its input against the service's current rollout record and
either refuses in one line, changing nothing, or hands typed commands to the
executor, under the reconciler's lock (so a pass never sees half of it). What
happens after (steps, guards, promotion) is tidal.control.decide.rollout's.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from tidal.control.commands import Command, Event, SaveRollout
from tidal.control.decide import rollout as decide
from tidal.control.decide.replicas import release_hash
from tidal.control.operations import Done, decode
from tidal.control.releases import Phase, Rollout, RolloutRequest, load, parse_weights, releases
from tidal.errors import FailedPrecondition, InvalidArgument, NotFound
from tidal.spec import Admission, ServiceSpec
from tidal.states import ReplicaState


class Rollouts:
    """Build with the reconciler (its store, clock, lock and executor) and the loop's wake-up."""

    def __init__(self, core, wake, admission: Admission | None = None) -> None:
        self.core = core
        self.store = core.store
        self.wake = wake
        self.admission = admission or Admission()

    def current(self, name: str) -> Rollout | None:
        self.store.get_service(name)  # NotFound first
        return load(self.store.get_rollout_record(name), name)

    def _active(self, name: str, what: str) -> Rollout:
        r = self.current(name)
        if r is None or not r.active:
            raise FailedPrecondition(
                f"service {name} has no canary {what} (it runs one release, "
                f"{self.store.get_service(name).spec.release}; start one with "
                f"`tidal serve update {name} --canary-traffic-percent 10 --model-path ...`)")
        return r

    async def _carry(self, commands: list[Command]) -> None:
        self.core.executor.run(commands)
        self.wake()

    # -- actions
    async def start(self, name: str, body: Mapping[str, Any]) -> Done:
        async with self.core.lock:
            row = self.store.get_service(name)
            found = self.current(name)
            if found is not None and found.active:
                raise FailedPrecondition(f"service {name} already has a rollout in progress ({found.progress()}): "
                                         f"promote it or roll it back first")
            req = decode(RolloutRequest, body)
            now = self.core.clock.now()
            stable = row.spec
            changes = dict(req.changes)
            changes.setdefault("version", time.strftime("%Y%m%d%H%M%S", time.gmtime(now)))
            canary = decode(ServiceSpec, {**stable.model_dump(), **changes, "name": name}, self.admission)
            if canary.release == stable.release:
                raise InvalidArgument(f"the canary needs a version other than the stable release's "
                                      f"({stable.version}): give --version")
            if stable.model_path and not canary.model_path:
                raise InvalidArgument("the canary needs --model-path")
            r = Rollout(service=name, stable=stable, canary=canary,
                        phase=Phase.PROGRESSING if req.steps else Phase.MANUAL, weight=req.canary_traffic_percent,
                        mirror=req.mirror, steps=req.steps, bake_seconds=req.bake, guards=req.guards,
                        started_at=now)
            how = (f"steps {','.join(map(str, r.steps))}% baking {r.bake_seconds:g}s each" if r.steps
                   else "weights set by hand")
            mirror = f", {r.mirror}% mirrored to it" if r.mirror else ""
            await self._carry([SaveRollout(r, Event(
                "RolloutStarted", f"service/{name}",
                f"canary {canary.release} beside {stable.release} at {r.weight}%{mirror} ({how})"))])
            return Done(name, f"service {name}: canary {canary.release} started at {r.weight}% beside "
                              f"{stable.release} ({how}{mirror})")

    async def traffic(self, name: str, body: Mapping[str, Any]) -> Done:
        async with self.core.lock:
            r = self._active(name, "to send traffic to")
            weights = body.get("weights") if isinstance(body, Mapping) else None
            if not isinstance(weights, Mapping) or not weights:
                raise InvalidArgument("give each release's weight, e.g. {\"weights\": {\"REL\": 90, \"REL2\": 10}}")
            try:
                canary = parse_weights(dict(weights), r)
            except LookupError as exc:
                raise NotFound(str(exc.args[0])) from None
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
            now = self.core.clock.now()
            stepping = " (its steps stop: weights are set by hand now)" if r.phase == Phase.PROGRESSING else ""
            updated = r.model_copy(update={"weight": canary, "phase": Phase.MANUAL, "step_started_at": now})
            text = f"{r.stable.release}={100 - canary}, {r.canary.release}={canary}"
            await self._carry([SaveRollout(updated, Event("RolloutTraffic", f"service/{name}",
                                                          f"weights set: {text}{stepping}"))])
            return Done(name, f"service {name}: {text}{stepping}")

    async def promote(self, name: str) -> Done:
        async with self.core.lock:
            r = self._active(name, "to promote")
            await self._carry(decide.promote(r, self.core.clock.now(), "promoted by hand"))
            return Done(name, f"service {name}: {r.canary.release} promoted; {r.stable.release}'s replicas drain "
                              f"as the new release carries the service")

    async def rollback(self, name: str) -> Done:
        async with self.core.lock:
            r = self._active(name, "to roll back")
            await self._carry(decide.rollback(r, self.core.clock.now(), "rolled back by hand"))
            return Done(name, f"service {name}: back on {r.stable.release}; {r.canary.release}'s replicas finish "
                              f"their requests, then stop")


def view(r: Rollout | None, replicas: list, counts: list | None, desired: int | None = None) -> dict | None:
    """The API's `rollout` of a service: phase, progress, each release's weight, replicas (and, given the
    service's desired count, the replicas each release is sized to) and guard counts."""
    if r is None:
        return None
    by = {s.release: s for s in counts or ()}
    sized = {} if desired is None else {rel.key: rel.replicas for rel in releases(r.stable, desired, r)}
    out = []
    for spec, weight in ((r.stable, 100 - r.weight), (r.canary, r.weight)):
        key = release_hash(spec)
        mine = [x for x in replicas if x.release == key and x.state in ReplicaState.ACTIVE]
        s = by.get(spec.release)
        out.append({"name": spec.release, "version": spec.version, "model_path": spec.model_path, "image": spec.image,
                    "weight": weight if r.active else (100 if spec is (r.canary if r.phase == Phase.PROMOTED
                                                                       else r.stable) else 0),
                    "replicas": len(mine), "ready": sum(1 for x in mine if x.state == ReplicaState.READY),
                    "wanted": sized.get(key),
                    "counts": s.to_dict() if s is not None else None})
    return {"phase": str(r.phase), "progress": r.progress(), "stable": r.stable.release, "canary": r.canary.release,
            "weight": r.weight, "mirror": r.mirror, "steps": list(r.steps), "step": r.step,
            "bake_seconds": r.bake_seconds, "step_started_at": r.step_started_at,
            "guards": r.guards.model_dump(), "started_at": r.started_at, "finished_at": r.finished_at,
            "reason": r.reason, "releases": out}
