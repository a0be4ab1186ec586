"""Provider presets: the node affinity and tolerations a slice gets on each provider (pure)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tidal.backends.kubernetes import render
from tidal.backends.kubernetes.contexts import Context, ContextKind
from tidal.backends.kubernetes.nodes import billing_of
from tidal.backends.kubernetes.presets import preset
from tidal.backends.kubernetes.render import Placement, RenderOptions
from tidal.spec import ServiceSpec

SPEC = ServiceSpec(name="bert", version="v1", model_path="/models/bert")


CUSTOM = Context(name="x", kind=ContextKind.KUBERNETES, namespace="a", provider="custom",
                 capacity_label="example.com/lifecycle", spot_value="spot", on_demand_value="normal",
                 spot_taint="example.com/lifecycle=spot:NoExecute")
CUSTOM_NO_OD = CUSTOM.model_copy(update={"on_demand_value": "", "spot_taint": "example.com/spot:NoSchedule"})


def labels_of(provider: str | Context):
    return provider.node_labels() if isinstance(provider, Context) else preset(provider)


def slice_pod(provider: str | Context, billing: str) -> dict:
    opts = RenderOptions(labels=labels_of(provider))
    return render.deployment(SPEC, opts, 1, None, placement=Placement(billing, "z1"))["spec"]["template"]["spec"]


def capacity_term(pod: dict) -> dict:
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    return terms[0]["matchExpressions"][0]


@pytest.mark.parametrize("provider, spot, on_demand, spot_tolerates", [
    ("karpenter", ("karpenter.sh/capacity-type", "In", ["spot"]),
     ("karpenter.sh/capacity-type", "In", ["on-demand"]), None),
    ("eks", ("eks.amazonaws.com/capacityType", "In", ["SPOT"]),
     ("eks.amazonaws.com/capacityType", "In", ["ON_DEMAND"]), None),
    ("gke", ("cloud.google.com/gke-spot", "In", ["true"]),
     ("cloud.google.com/gke-spot", "NotIn", ["true"]), "cloud.google.com/gke-spot"),
    ("aks", ("kubernetes.azure.com/scalesetpriority", "In", ["spot"]),
     ("kubernetes.azure.com/scalesetpriority", "NotIn", ["spot"]), "kubernetes.azure.com/scalesetpriority"),
    ("ack", ("node.alibabacloud.com/spot-strategy", "In", ["SpotWithPriceLimit", "SpotAsPriceGo"]),
     ("node.alibabacloud.com/spot-strategy", "In", ["NoSpot"]), None),
    (CUSTOM, ("example.com/lifecycle", "In", ["spot"]), ("example.com/lifecycle", "In", ["normal"]),
     "example.com/lifecycle"),
    (CUSTOM_NO_OD, ("example.com/lifecycle", "In", ["spot"]), ("example.com/lifecycle", "NotIn", ["spot"]),
     "example.com/spot"),
])
def test_presets(provider, spot, on_demand, spot_tolerates):
    for billing, expected in (("spot", spot), ("on-demand", on_demand)):
        pod = slice_pod(provider, billing)
        term = capacity_term(pod)
        assert (term["key"], term["operator"], term["values"]) == expected
        tolerations = [t["key"] for t in pod.get("tolerations", [])]
        assert tolerations == ([spot_tolerates] if billing == "spot" and spot_tolerates else [])


def test_custom_spot_taint_becomes_the_toleration():
    assert slice_pod(CUSTOM, "spot")["tolerations"] == [
        {"key": "example.com/lifecycle", "operator": "Equal", "value": "spot", "effect": "NoExecute"}]
    assert slice_pod(CUSTOM_NO_OD, "spot")["tolerations"] == [
        {"key": "example.com/spot", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize("provider, labels, billing", [
    ("ack", {"node.alibabacloud.com/spot-strategy": "SpotAsPriceGo"}, "spot"),
    ("ack", {"node.alibabacloud.com/spot-strategy": "SpotWithPriceLimit"}, "spot"),
    ("ack", {"node.alibabacloud.com/spot-strategy": "NoSpot"}, "on-demand"),
    ("ack", {}, ""),                     # a controller too old to label: neither, so not usable
    (CUSTOM, {"example.com/lifecycle": "spot"}, "spot"),
    (CUSTOM, {"example.com/lifecycle": "normal"}, "on-demand"),
    (CUSTOM, {}, ""),
    (CUSTOM_NO_OD, {}, "on-demand"),
])
def test_node_billing(provider, labels, billing):
    assert billing_of(labels, labels_of(provider)) == billing


@pytest.mark.parametrize("fields, error", [
    ({}, "custom provider needs --capacity-label KEY and --spot-value"),
    ({"capacity_label": "a/b"}, "custom provider needs --capacity-label KEY and --spot-value"),
    ({"capacity_label": "a/b", "spot_value": "x", "on_demand_value": "x"}, "must differ"),
    ({"capacity_label": "a/b", "spot_value": "x", "spot_taint": "a/b=x"}, "expected KEY=VALUE:EFFECT"),
    ({"capacity_label": "a/b", "spot_value": "x", "spot_taint": "=x:NoSchedule"}, "expected KEY=VALUE:EFFECT"),
    ({"capacity_label": "a/b", "spot_value": "x", "spot_taint": "a/b=x:Never"}, "expected KEY=VALUE:EFFECT"),
])
def test_custom_provider_refuses_incomplete_labels(fields, error):
    with pytest.raises(ValidationError, match=error):
        Context(name="x", kind=ContextKind.KUBERNETES, namespace="a", provider="custom", **fields)


def test_a_preset_takes_no_custom_label():
    with pytest.raises(ValidationError, match="provider ack is a preset"):
        Context(name="x", kind=ContextKind.KUBERNETES, namespace="a", provider="ack", capacity_label="a/b")


def test_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        Context(name="x", kind=ContextKind.KUBERNETES, namespace="a", provider="nope")
