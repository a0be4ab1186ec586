"""Autoscaling decisions: services, their HPA documents and the gateway's QPS in; desired counts, records, events out."""

from dataclasses import replace

import pytest

from tidal.control.commands import Event, Note, SaveAutoscaler, SetDesired
from tidal.control.decide import autoscaling
from tidal.control.records import AutoscalerMemory
from tidal.control.snapshot import Autoscaler
from tidal.states import ReplicaState as S

from .build import NOW, replica, service, snap

NAME = "bert-tfserving"
HPA = {
    "apiVersion": "autoscaling/v2beta1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "hpa"},
    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                "name": "bert-tfserving-202107141745-tensorflow-serving"},
             "minReplicas": 1, "maxReplicas": 10,
             "metrics": [{"type": "External", "external": {
                 "metricName": "sls_ingress_qps",
                 "metricSelector": {"matchLabels": {
                     "sls.ingress.route": "default-bert-tfserving-202107141745-tensorflow-serving-8501"}},
                 "targetAverageValue": 10}}]}}
BURST = {**HPA, "metadata": {"name": "hpa", "annotations": {"autoscaling.tidal.dev/burst": "true"}}}
WINDOW = 30.0


def world(document=HPA, desired=1, ready=1, memory=None):
    return snap(services=[service(NAME, desired=desired)],
                replicas=[replica(f"r{i}", S.READY, f"n{i}", service=NAME) for i in range(ready)],
                autoscalers={NAME: Autoscaler(document, None, memory)})


def decide(s, qps, memory=None):
    return autoscaling.decide(s, {(NAME, w): v for w, v in qps.items()}, memory or autoscaling.AutoscalingMemory(),
                              WINDOW, lambda x: x)


def of(cmds, cls):
    return [c for c in cmds if isinstance(c, cls)]


HPA_CASES = [
    # (id, desired, ready, QPS over the HPA's window, expected desired or None)
    ("40 QPS at 10 per replica: 4", 1, 1, 40.0, 4),
    ("100 QPS from 1: the legacy scale-up limit, max(2 x 1, 4)", 1, 1, 100.0, 4),
    ("100 QPS from 4: 8", 4, 4, 100.0, 8),
    ("within tolerance: no change", 4, 4, 41.0, None),
    ("no load, first sync: the down-stabilization window holds 4", 4, 4, 0.0, None),
]


@pytest.mark.parametrize("desired, ready, qps, want", [c[1:] for c in HPA_CASES], ids=[c[0] for c in HPA_CASES])
def test_hpa_sync(desired, ready, qps, want):
    result = decide(world(desired=desired, ready=ready), {WINDOW: qps})
    sets = of(result.commands, SetDesired)
    assert [c.desired for c in sets] == ([want] if want is not None else [])
    (save,) = of(result.commands, SaveAutoscaler)
    assert save.status.qps == qps and save.memory.hpa.recommendations
    assert result.burst_tick_seconds is None


def test_a_rescale_says_why_with_the_qps():
    result = decide(world(), {WINDOW: 40.0})
    assert of(result.commands, SetDesired) == [SetDesired(NAME, 4, Event(
        "SuccessfulRescale", f"service/{NAME}",
        "New size: 4; reason: external metric sls_ingress_qps(sls.ingress.route=default-bert-tfserving-"
        "202107141745-tensorflow-serving-8501) above target (QPS 40.0)"))]


def test_the_hpa_syncs_once_per_period():
    first = decide(world(), {WINDOW: 40.0})
    assert decide(replace(world(), now=NOW + 14), {WINDOW: 40.0}, first.memory).commands == []
    assert of(decide(replace(world(), now=NOW + 15), {WINDOW: 40.0}, first.memory).commands, SaveAutoscaler)


def test_scale_in_waits_out_the_stored_history():
    # The history kept in the store (a restart loses nothing): 4 recommended 200 s ago.
    up = decide(world(desired=4, ready=4), {WINDOW: 40.0})
    memory = of(up.commands, SaveAutoscaler)[0].memory
    later = replace(world(desired=4, ready=4, memory=memory), now=NOW + 200)
    assert of(decide(later, {WINDOW: 0.0}).commands, SetDesired) == []
    gone = replace(world(desired=4, ready=4, memory=memory), now=NOW + 301)
    assert [c.desired for c in of(decide(gone, {WINDOW: 0.0}).commands, SetDesired)] == [1]


def test_an_unreadable_document_is_reported_and_the_service_kept():
    result = decide(world(document={"kind": "HorizontalPodAutoscaler"}), {})
    (note,) = result.commands
    assert isinstance(note, Note) and note.event.kind == "FailedGetScale"


def test_burst_mode_panics_within_a_tick():
    # Stable window 60 s at 3.3 QPS, panic window 6 s at 14.7 for 1 ready replica: panic, 2 replicas.
    result = decide(world(BURST), {WINDOW: 4.5, 60.0: 3.3, 6.0: 14.7})
    assert result.burst_tick_seconds == 2.0
    assert of(result.commands, SetDesired) == [SetDesired(NAME, 2, Event(
        "SuccessfulRescale", f"service/{NAME}",
        "New size: 2; reason: burst: panic window QPS 14.7 (stable window 3.3) for 1 ready replica(s)"))]
    assert [n.event.kind for n in of(result.commands, Note)] == ["BurstPanic"]
    last = of(result.commands, SaveAutoscaler)[-1]
    assert last.status.reason == "BurstPanic" and last.status.burst.panicking


def test_burst_mode_without_a_qps_average_value_says_so_once():
    doc = {**BURST, "spec": {**BURST["spec"], "metrics": [{"type": "Resource", "resource": {
        "name": "cpu", "targetAverageUtilization": 50}}]}}
    first = decide(world(doc), {})
    assert [n.event.kind for n in of(first.commands, Note)] == ["BurstUnavailable"]
    again = decide(replace(world(doc), now=NOW + 15), {}, first.memory)
    assert of(again.commands, Note) == []


def test_windows_are_read_in_real_seconds():
    from tidal.autoscaling.hpafile import parse_hpa
    assert autoscaling.windows(parse_hpa(HPA), 30.0, lambda s: s / 20) == [1.5]
    assert autoscaling.windows(parse_hpa(BURST), 30.0, lambda s: s) == [30.0, 60.0, 6.0]
    assert isinstance(AutoscalerMemory().hpa.recommendations, tuple)


def test_a_gateway_that_cannot_be_reached_is_a_missing_metric_not_zero_load():
    # 4 replicas, a later sync, no QPS key at all (the gateway process is down): the HPA records the metric error
    # and keeps 4; at 0 QPS the same sync would recommend fewer once the stabilization window allowed it.
    result = decide(world(desired=4, ready=4), {})
    assert of(result.commands, SetDesired) == []
    (save,) = of(result.commands, SaveAutoscaler)
    assert save.status.desired == 4 and "unable to get external metric" in save.status.message
