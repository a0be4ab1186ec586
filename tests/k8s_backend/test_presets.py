"""Provider presets: the node affinity and tolerations a slice gets on each provider (pure)."""

from __future__ import annotations

import pytest

from tidal.backends.kubernetes import render
from tidal.backends.kubernetes.contexts import Context, ContextKind
from tidal.backends.kubernetes.presets import preset
from tidal.backends.kubernetes.render import Placement, RenderOptions
from tidal.spec import ServiceSpec

SPEC = ServiceSpec(name="bert", version="v1", model_path="/models/bert")


def slice_pod(provider: str, billing: str) -> dict:
    opts = RenderOptions(labels=preset(provider))
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
])
def test_presets(provider, spot, on_demand, spot_tolerates):
    for billing, expected in (("spot", spot), ("on-demand", on_demand)):
        pod = slice_pod(provider, billing)
        term = capacity_term(pod)
        assert (term["key"], term["operator"], term["values"]) == expected
        tolerations = [t["key"] for t in pod.get("tolerations", [])]
        assert tolerations == ([spot_tolerates] if billing == "spot" and spot_tolerates else [])


def test_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        Context(name="x", kind=ContextKind.KUBERNETES, namespace="a", provider="nope")
