"""Provider presets: how each provisioner labels (and taints) spot and on-demand nodes, as `NodeLabels`."""

from __future__ import annotations

from tidal.backends.kubernetes.render import NodeLabels

# An empty on_demand_value means on-demand nodes carry no such label: they are matched as "not spot".
PRESETS: dict[str, NodeLabels] = {
    # Karpenter on any cloud: karpenter.sh/capacity-type is spot or on-demand (https://karpenter.sh/docs/concepts/
    # scheduling/, "Well-Known Labels"); Karpenter adds no taint of its own.
    "karpenter": NodeLabels(capacity_label="karpenter.sh/capacity-type", spot_value="spot",
                            on_demand_value="on-demand"),
    # EKS managed node groups label their nodes eks.amazonaws.com/capacityType SPOT or ON_DEMAND
    # (https://docs.aws.amazon.com/eks/latest/userguide/managed-node-groups.html, "Managed node group capacity types").
    "eks": NodeLabels(capacity_label="eks.amazonaws.com/capacityType", spot_value="SPOT", on_demand_value="ON_DEMAND"),
    # GKE Spot VMs: nodes labelled cloud.google.com/gke-spot=true; a spot node pool may carry the taint
    # cloud.google.com/gke-spot=true:NoSchedule (https://cloud.google.com/kubernetes-engine/docs/how-to/spot-vms).
    "gke": NodeLabels(capacity_label="cloud.google.com/gke-spot", spot_value="true", on_demand_value="",
                      spot_taints=({"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
                                    "effect": "NoSchedule"},)),
    # AKS spot node pools: label kubernetes.azure.com/scalesetpriority=spot and the taint
    # kubernetes.azure.com/scalesetpriority=spot:NoSchedule (https://learn.microsoft.com/en-us/azure/aks/spot-node-pool).
    "aks": NodeLabels(capacity_label="kubernetes.azure.com/scalesetpriority", spot_value="spot", on_demand_value="",
                      spot_taints=({"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal",
                                    "value": "spot", "effect": "NoSchedule"},)),
}
DEFAULT_PRESET = "karpenter"


def preset(name: str) -> NodeLabels:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r} (known: {', '.join(sorted(PRESETS))})") from None
