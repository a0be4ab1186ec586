"""Burst (panic) mode: one named case per rule, arithmetic written out; a 2 -> 40 QPS step tick by tick."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tidal.autoscaling.burst import BurstState, decide, initial_state, overlay, qps_target
from tidal.autoscaling.hpa import HPAState, decide as hpa_decide
from tidal.autoscaling.metrics import Metrics
from tidal.autoscaling.spec import BurstSettings
from tidal.autoscaling.hpafile import parse_hpa
from tidal.clock import FakeClock

NOW = FakeClock().now()
ON = BurstSettings(enabled=True)
TARGET = 10.0  # QPS per replica, the reference procedure's targetAverageValue


@dataclass(frozen=True)
class Case:
    name: str
    stable_qps: float
    panic_qps: float
    ready: int
    expected: int
    reason: str
    state: BurstState = field(default_factory=BurstState)
    settings: BurstSettings = ON
    max_replicas: int = 2**31 - 1


CASES = [
    Case("stable-mode-follows-the-stable-window", 35, 35, 4, 4, "Stable"),
    # ceil(35 / 10) = 4 wanted; panic 4 / 4 ready = 1.0 < 2.0 -> stable -> 4
    Case("panic-starts-at-200-percent", 5, 20, 1, 2, "PanicStarted"),
    # panic ceil(20 / 10) = 2; 2 / 1 ready = 2.0 >= 2.0 -> panic -> max(stable ceil(0.5) = 1, 2) = 2
    Case("below-200-percent-does-not-panic", 10, 30, 2, 1, "Stable"),
    # panic ceil(30 / 10) = 3; 3 / 2 = 1.5 < 2.0 -> stable ceil(10 / 10) = 1 (>= floor(2 / 2) = 1)
    Case("panic-never-scales-down", 20, 20, 8, 8, "Panicking", BurstState(NOW - 10, 8)),
    # 2 wanted, rate floor(8 / 2) = 4; panic since 10 s < 60 s -> hold the highest panic count, 8
    Case("new-trigger-extends-the-panic", 100, 100, 4, 10, "PanicExtended", BurstState(NOW - 50, 4)),
    # ceil(100 / 10) = 10; 10 / 4 = 2.5 >= 2 -> panic time moves to now -> max(10, 4) = 10
    Case("panic-ends-a-stable-window-after-the-last-trigger", 20, 20, 8, 4, "PanicEnded", BurstState(NOW - 61, 8)),
    # last trigger 61 s ago > 60 s -> stable: ceil(20 / 10) = 2, but at most 2x down: floor(8 / 2) = 4
    Case("panic-holds-at-exactly-one-stable-window", 20, 20, 8, 8, "Panicking", BurstState(NOW - 60, 8)),
    # panic time + 60 s is not before now -> still panicking -> 8
    Case("scale-down-at-most-2x", 5, 5, 10, 5, "Stable"),
    # ceil(5 / 10) = 1 wanted; floor(10 / 2) = 5
    Case("scale-up-at-most-1000x", 20_000, 20_000, 1, 1000, "PanicStarted"),
    # ceil(20000 / 10) = 2000 wanted; ceil(1000 * 1) = 1000
    Case("scale-up-rate-setting", 100, 100, 1, 2, "PanicStarted", settings=BurstSettings(max_scale_up_rate=2)),
    # ceil(100 / 10) = 10 wanted; ceil(2 * 1) = 2; panic: 10 / 1 >= 2
    Case("zero-ready-counts-as-one", 0, 15, 0, 2, "PanicStarted"),
    # ready max(1, 0) = 1; panic ceil(15 / 10) = 2; 2 / 1 = 2 >= 2 -> 2
    Case("max-replicas-clamps", 500, 500, 2, 10, "PanicStarted", max_replicas=10),
    # ceil(500 / 10) = 50, within 1000x; maxReplicas 10 -> 10
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_burst_decision(case: Case):
    d, state = decide(case.settings, TARGET, case.stable_qps, case.panic_qps, case.ready, case.state, NOW,
                      max_replicas=case.max_replicas)
    assert (d.desired_replicas, d.reason) == (case.expected, case.reason), d.message
    assert d.panicking == (state.panic_since is not None)


def test_step_from_2_to_40_qps_reaches_4_replicas_within_6_seconds():
    """Window averages of a step at t=0 from 2 to 40 QPS, sampled at Knative's 2 s ticks."""
    def avg(window: float, t: float) -> float:
        after = min(t, window)
        return (2 * (window - after) + 40 * after) / window

    clock, state, ready, seen = FakeClock(), BurstState(), 1, []
    for t in (2, 4, 6, 8):
        clock.advance(2)
        d, state = decide(ON, TARGET, avg(60, t), avg(6, t), ready, state, clock.now())
        ready = d.desired_replicas
        seen.append((t, d.desired_replicas, d.reason))
    # t=2: panic (2*4 + 40*2) / 6 = 14.67 -> 2; 2 / 1 >= 2 -> panic at 2
    # t=4: (2*2 + 40*4) / 6 = 27.33 -> 3; 3 / 2 = 1.5 (no new trigger) but panicking -> 3
    # t=6: 40 -> 4; t=8: 4, held
    assert seen == [(2, 2, "PanicStarted"), (4, 3, "Panicking"), (6, 4, "Panicking"), (8, 4, "Panicking")]


def test_restart_with_several_replicas_starts_in_panic():
    assert initial_state(3, NOW) == BurstState(panic_since=NOW, max_panic_replicas=3)
    assert initial_state(1, NOW) == BurstState()
    d, _ = decide(ON, TARGET, 0, 0, 3, initial_state(3, NOW), NOW + 2)
    assert d.desired_replicas == 3  # no history yet: hold what runs


def test_qps_target_of_the_seed_hpa():
    seed = Path(__file__).resolve().parents[2] / "examples" / "reference-procedure" / "hpa.yaml"
    assert qps_target(parse_hpa(yaml.safe_load(seed.read_text()))) == 10.0


def test_overlay_raises_hpa_while_panicking_and_waits_for_a_fresh_hpa_sync():
    seed = parse_hpa(yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "reference-procedure" / "hpa.yaml").read_text()))
    hpa_rec, _ = hpa_decide(seed, Metrics(external={"sls_ingress_qps": 2}), HPAState(), 1, NOW)
    panic, _ = decide(ON, TARGET, 3, 40, 1, BurstState(), NOW)
    # panicking at ceil(40 / 10) = 4 > HPA's 1 -> 4
    assert overlay(hpa_rec, panic, 1) == (4, "BurstPanic")
    calm, _ = decide(ON, TARGET, 3, 3, 4, BurstState(), NOW)
    # the HPA's 1 was decided for 1 replica, not the 4 running now -> hold 4 until the next HPA sync
    assert overlay(hpa_rec, calm, 4) == (4, "AwaitingSync")
    assert overlay(hpa_rec, calm, 1) == (1, hpa_rec.reason)
