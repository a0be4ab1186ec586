"""Rollout decisions: a snapshot with a rollout record and the gateway's counts of each release, at `now`, in;
commands out. Guards, steps and bake times, promotion, rollback; and the releases' replicas and routes."""

from dataclasses import replace
from types import MappingProxyType

import pytest

from tidal.control.commands import CreateReplica, DrainReplica, Event, PromoteRelease, Route, SaveRollout
from tidal.control.decide import replicas, rollout as decide, routing
from tidal.control.decide.replicas import release_hash
from tidal.control.releases import Guards, Phase, Rollout, releases, share
from tidal.control.settings import ControlSettings
from tidal.gateway.releases import ReleaseStats
from tidal.states import ReplicaState as S

from .build import NOW, replica, service, snap

STABLE = service("s", desired=4, version="1")
CANARY = STABLE.spec.model_copy(update={"version": "2", "model_path": "/models/m2"})
G = Guards(max_error_rate=0.05, max_p90_ratio=2.0, min_requests=20)


def roll(**kw) -> Rollout:
    base = dict(service="s", stable=STABLE.spec, canary=CANARY, phase=Phase.PROGRESSING, weight=10,
                steps=(10, 50, 100), bake_seconds=300.0, step_started_at=NOW - 100, guards=G, started_at=NOW - 200)
    return Rollout(**{**base, **kw})


def canary_ready(state=S.READY):
    return replica("c1", state, "n1", release=release_hash(CANARY))


def with_rollout(r: Rollout, reps=(), desired=4):
    s = snap(services=[replace(STABLE, desired=desired)], replicas=[replica("s1", S.READY, "n1"), *reps])
    return replace(s, rollouts=MappingProxyType({"s": r}))


def stats(release, requests, errors=0, p90=0.01, classes=None):
    return ReleaseStats(release, requests, errors, p90, classes or {})


def counts(canary=None, stable=None):
    out = {}
    if canary is not None:
        out["s-2"] = canary
    if stable is not None:
        out["s-1"] = stable
    return {"s": out}


def ev(kind, message):
    return Event(kind, "service/s", message)


JUDGE = [
    ("too few canary answers are not judged (19 of 20 needed), even all failed",
     G, stats("s-2", 19, errors=19), stats("s-1", 500), None),
    ("error rate 3/60 = 5.0% is not above 5%", G, stats("s-2", 60, errors=3), stats("s-1", 500), None),
    ("error rate 4/60 = 6.7% is above 5%", G, stats("s-2", 60, errors=4), stats("s-1", 500),
     "error rate 6.7% (4 of 60) is above 5.0%"),
    ("p90 0.25 s above the absolute 0.2 s", Guards(max_p90_seconds=0.2), stats("s-2", 50, p90=0.25), None,
     "p90 latency 250 ms is above 200 ms"),
    ("p90 30 ms vs stable 10 ms: 3x, but within the 50 ms slack: passes", G, stats("s-2", 50, p90=0.03),
     stats("s-1", 50, p90=0.01), None),
    ("p90 300 ms vs stable 100 ms: above max(2 x 100, 100 + 50) = 200 ms", G, stats("s-2", 50, p90=0.3),
     stats("s-1", 50, p90=0.1), "p90 latency 300 ms is more than 2x the stable release's 100 ms"),
    ("p90 ratio needs the stable release judged too (10 answers < 20)", G, stats("s-2", 50, p90=0.3),
     stats("s-1", 10, p90=0.1), None),
    ("class shares: canary 70% class 1 vs stable 50%: 20 points > 10", Guards(max_class_shift=0.1),
     stats("s-2", 100, classes={"0": 30, "1": 70}), stats("s-1", 100, classes={"0": 50, "1": 50}),
     "class 0 is 30% of the canary's answers against 50% of the stable release's (more than 10% apart)"),
    ("class shares 55% vs 50%: within 10 points", Guards(max_class_shift=0.1),
     stats("s-2", 100, classes={"0": 45, "1": 55}), stats("s-1", 100, classes={"0": 50, "1": 50}), None),
]


@pytest.mark.parametrize("case,guards,canary,stable,verdict", JUDGE, ids=[c[0] for c in JUDGE])
def test_guards(case, guards, canary, stable, verdict):
    assert decide.judge(guards, canary, stable) == verdict


STEPS = [
    ("waiting for a ready canary: nothing, the bake has not begun",
     roll(step_started_at=None), [canary_ready(S.STARTING)], counts(), []),
    ("the canary is ready: the first step's bake starts now",
     roll(step_started_at=None), [canary_ready()], counts(),
     [SaveRollout(roll(step_started_at=NOW), ev("RolloutStep", "step 1/3: canary s-2 at 10% (bakes 300s)"))]),
    ("baked 100 of 300 s: nothing", roll(), [canary_ready()], counts(stats("s-2", 50), stats("s-1", 500)), []),
    ("baked 300 of 300 s with guards passing: step 2 at 50%",
     roll(step_started_at=NOW - 300), [canary_ready()], counts(stats("s-2", 50), stats("s-1", 500)),
     [SaveRollout(roll(step=1, weight=50, step_started_at=NOW),
                  ev("RolloutStep", "step 2/3: canary s-2 at 50% (step 1 baked 300s, guards passed)"))]),
    ("the last step baked: promoted",
     roll(step=2, weight=100, step_started_at=NOW - 301), [canary_ready()], counts(stats("s-2", 50)),
     [PromoteRelease("s", CANARY),
      SaveRollout(roll(step=2, weight=100, step_started_at=NOW - 301, phase=Phase.PROMOTED, finished_at=NOW,
                       reason="all 3 steps baked"),
                  ev("RolloutPromoted", "s-2 promoted over s-1: all 3 steps baked"))]),
    ("a failing guard rolls back at once, mid-bake, whatever the step",
     roll(step=1, weight=50), [canary_ready()], counts(stats("s-2", 40, errors=20), stats("s-1", 500)),
     [SaveRollout(roll(step=1, weight=0, phase=Phase.ROLLED_BACK, finished_at=NOW,
                       reason="guard failed: error rate 50.0% (20 of 40) is above 5.0%"),
                  ev("RolloutRolledBack", "s-2 rolled back to s-1 at 50%: guard failed: error rate 50.0% "
                                          "(20 of 40) is above 5.0%"))]),
    ("a manual rollout never steps, but its guards still roll back",
     roll(phase=Phase.MANUAL, steps=(), step_started_at=NOW - 10_000), [canary_ready()],
     counts(stats("s-2", 40), stats("s-1", 500)), []),
    ("the gateway could not be reached: nothing judged, nothing moved on (even a baked step)",
     roll(step_started_at=NOW - 1000), [canary_ready()], {}, []),
    ("a finished rollout is only a record", roll(phase=Phase.ROLLED_BACK), [canary_ready()],
     counts(stats("s-2", 40, errors=40)), []),
]


@pytest.mark.parametrize("case,r,reps,seen,expected", STEPS, ids=[c[0] for c in STEPS])
def test_steps(case, r, reps, seen, expected):
    assert decide.decide(with_rollout(r, reps), seen) == expected


@pytest.mark.parametrize("desired,percent,floor,expected", [
    (4, 10, 1, 1),    # ceil(0.4) = 1
    (4, 90, 1, 4),    # ceil(3.6) = 4
    (10, 25, 1, 3),   # ceil(2.5) = 3
    (4, 0, 1, 1),     # a release at 0% stays warm with one
    (0, 50, 1, 0),    # scaled to zero: every release is
])
def test_each_release_is_sized_on_its_share(desired, percent, floor, expected):
    assert share(desired, percent, floor) == expected


def test_a_canary_gets_its_own_replicas_beside_the_stable_ones():
    r = roll(weight=25)
    rels = releases(STABLE.spec, 4, r)
    assert [(x.name, x.weight, x.replicas) for x in rels] == [("s-1", 75, 3), ("s-2", 25, 1)]
    s = with_rollout(r, desired=4)
    cmds, _ = replicas.lifecycle(s, ControlSettings(), replicas.ReplicaMemory())
    # Stable holds 1 of 3, the canary 0 of 1.
    assert cmds == [CreateReplica("s", STABLE.spec.workload, release_hash(STABLE.spec))] * 2 + \
        [CreateReplica("s", CANARY.workload, release_hash(CANARY))]


def test_a_rolled_back_canary_drains_at_once_and_a_promoted_one_replaces_the_old_release_as_it_is_ready():
    back = with_rollout(roll(phase=Phase.ROLLED_BACK, weight=0), [canary_ready()], desired=1)
    cmds, _ = replicas.lifecycle(back, ControlSettings(drain_seconds=10), replicas.ReplicaMemory())
    assert cmds == [DrainReplica("c1", NOW + 10, Event("ReplicaDraining", "replica/c1", "its release was rolled back"),
                                 reason="its release was rolled back")]
    # Promoted: the service runs the canary's spec now; its ready replica lets the old one go.
    promoted = snap(services=[replace(STABLE, spec=CANARY, desired=1)],
                    replicas=[replica("s1", S.READY, "n1", release=release_hash(STABLE.spec)), canary_ready()])
    cmds, _ = replicas.lifecycle(promoted, ControlSettings(drain_seconds=10), replicas.ReplicaMemory())
    assert [type(c).__name__ for c in cmds] == ["DrainReplica"] and cmds[0].replica == "s1"


def test_routes_carry_each_endpoints_release_and_the_split():
    s = with_rollout(roll(weight=10, mirror=5, guards=Guards(max_class_shift=0.2)), [canary_ready()])
    (route,) = [c for c in routing.route(s, frozenset()) if isinstance(c, Route)]
    assert {(e.id, e.release) for e in route.endpoints} == {("s1", "s-1"), ("c1", "s-2")}
    assert route.releases.weights == {"s-1": 90, "s-2": 10}
    assert (route.releases.stable, route.releases.mirror, route.releases.mirror_percent,
            route.releases.classes) == ("s-1", "s-2", 5, True)
    done = with_rollout(roll(phase=Phase.ROLLED_BACK), [canary_ready()])
    (route,) = [c for c in routing.route(done, frozenset()) if isinstance(c, Route)]
    assert route.releases is None and {e.release for e in route.endpoints} == {""}


def test_a_backend_finds_each_releases_spec_by_key_or_name():
    from tidal.control.releases import release_spec, spec_for
    r = roll()
    assert spec_for(STABLE.spec, r, release_hash(CANARY)) == CANARY
    assert spec_for(STABLE.spec, r, release_hash(STABLE.spec)) == STABLE.spec
    assert release_spec(STABLE.spec, r, "s-2") == CANARY
    assert release_spec(STABLE.spec, r, "s-1") == STABLE.spec and release_spec(STABLE.spec, None, "s-2") == STABLE.spec
    # Promoted: the service's spec is the canary's; both names find it.
    assert release_spec(CANARY, roll(phase=Phase.PROMOTED), "s-2") == CANARY
