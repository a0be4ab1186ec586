"""Rollouts (pure): guards, steps and bake times move each service's rollout on; typed commands carry it out.

For every rollout in progress, at `now`, with what the gateway counted of each
release since the rollout's current step began:
1. Guards first, in every phase in progress: a canary that answers errors, is
   slower than allowed, or (a classifier) answers classes in other shares than
   the stable release, is rolled back at once, with the verdict as the reason.
   Fewer canary answers than `min_requests` are not judged (a handful of requests
   says nothing).
2. Then the steps (a progressing rollout): the first step's bake starts when the
   canary has a ready replica; a step that has baked for `bake_seconds` moves to
   the next, and the last one promotes the canary. No traffic during a bake is no
   evidence against the canary: the step still moves on (as SageMaker's does when
   no alarm fires).
`promote` and `rollback` are also what `tidal serve promote|rollback` run.
"""

from __future__ import annotations

from typing import Mapping

from tidal.control.commands import Command, Event, PromoteRelease, SaveRollout
from tidal.control.decide.replicas import release_hash
from tidal.control.releases import P90_SLACK_SECONDS, Guards, Phase, Rollout
from tidal.control.snapshot import Snapshot
from tidal.gateway.releases import ReleaseStats
from tidal.states import ReplicaState as S

# Each service's releases' counts (service -> release -> stats), as the gateway answered them; a service
# missing here (the gateway could not be reached) is neither judged nor moved on.
Counts = Mapping[str, Mapping[str, ReleaseStats]]


def decide(snap: Snapshot, counts: Counts) -> list[Command]:
    out: list[Command] = []
    for name, rollout in snap.rollouts.items():
        if not rollout.active or name not in snap.services:
            continue
        stats = counts.get(name)
        if stats is None:
            continue
        verdict = judge(rollout.guards, stats.get(rollout.canary.release), stats.get(rollout.stable.release))
        if verdict is not None:
            out += rollback(rollout, snap.now, f"guard failed: {verdict}")
            continue
        if rollout.phase == Phase.PROGRESSING:
            out += _step(snap, rollout)
    return out


def judge(guards: Guards, canary: ReleaseStats | None, stable: ReleaseStats | None) -> str | None:
    """Why the canary fails its guards (one line), or None while it passes or has too few answers to judge."""
    if canary is None or canary.requests < guards.min_requests:
        return None
    rate = canary.errors / canary.requests
    if rate > guards.max_error_rate:
        return (f"error rate {rate:.1%} ({canary.errors} of {canary.requests}) is above "
                f"{guards.max_error_rate:.1%}")
    p90 = canary.p90
    if p90 is not None and guards.max_p90_seconds is not None and p90 > guards.max_p90_seconds:
        return f"p90 latency {p90 * 1000:.0f} ms is above {guards.max_p90_seconds * 1000:.0f} ms"
    judged = stable is not None and stable.requests >= guards.min_requests
    if p90 is not None and guards.max_p90_ratio is not None and judged and stable.p90 is not None:
        limit = max(stable.p90 * guards.max_p90_ratio, stable.p90 + P90_SLACK_SECONDS)
        if p90 > limit:
            return (f"p90 latency {p90 * 1000:.0f} ms is more than {guards.max_p90_ratio:g}x the stable "
                    f"release's {stable.p90 * 1000:.0f} ms")
    if guards.max_class_shift is not None and judged:
        mine, theirs = sum(canary.classes.values()), sum(stable.classes.values())
        if mine >= guards.min_requests and theirs >= guards.min_requests:
            for cls in sorted(set(canary.classes) | set(stable.classes)):
                a, b = canary.classes.get(cls, 0) / mine, stable.classes.get(cls, 0) / theirs
                if abs(a - b) > guards.max_class_shift:
                    return (f"class {cls} is {a:.0%} of the canary's answers against {b:.0%} of the stable "
                            f"release's (more than {guards.max_class_shift:.0%} apart)")
    return None


def _step(snap: Snapshot, r: Rollout) -> list[Command]:
    now = snap.now
    obj = f"service/{r.service}"
    if r.step_started_at is None:
        key = release_hash(r.canary)
        if not any(x.release == key and x.state == S.READY for x in snap.of(r.service)):
            return []  # the bake counts from the moment the canary can answer
        return [SaveRollout(r.model_copy(update={"step_started_at": now}), Event(
            "RolloutStep", obj, f"step {r.step + 1}/{len(r.steps)}: canary {r.canary.release} at {r.weight}% "
                                f"(bakes {r.bake_seconds:g}s)"))]
    if now - r.step_started_at < r.bake_seconds:
        return []
    if r.step + 1 >= len(r.steps):
        return promote(r, now, f"all {len(r.steps)} steps baked")
    nxt = r.step + 1
    return [SaveRollout(r.model_copy(update={"step": nxt, "weight": r.steps[nxt], "step_started_at": now}), Event(
        "RolloutStep", obj, f"step {nxt + 1}/{len(r.steps)}: canary {r.canary.release} at {r.steps[nxt]}% "
                            f"(step {nxt} baked {now - r.step_started_at:.0f}s, guards passed)"))]


def promote(r: Rollout, now: float, why: str) -> list[Command]:
    """The canary becomes the service's release; the old one's replicas drain as the new ones carry it."""
    done = r.model_copy(update={"phase": Phase.PROMOTED, "weight": 100, "finished_at": now, "reason": why})
    return [PromoteRelease(r.service, r.canary),
            SaveRollout(done, Event("RolloutPromoted", f"service/{r.service}",
                                    f"{r.canary.release} promoted over {r.stable.release}: {why}"))]


def rollback(r: Rollout, now: float, why: str) -> list[Command]:
    """All traffic back to the stable release at once; the canary's replicas finish what they hold, then stop."""
    done = r.model_copy(update={"phase": Phase.ROLLED_BACK, "weight": 0, "finished_at": now, "reason": why})
    return [SaveRollout(done, Event("RolloutRolledBack", f"service/{r.service}",
                                    f"{r.canary.release} rolled back to {r.stable.release} at {r.weight}%: {why}"))]
