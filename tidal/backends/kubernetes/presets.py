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
    # ACK (Alibaba Cloud, the reference procedure's cluster): its cloud-controller-manager labels every node
    # node.alibabacloud.com/spot-strategy with the ECS instance's spot strategy, NoSpot for pay-as-you-go and
    # SpotWithPriceLimit or SpotAsPriceGo for spot instances (cloud-controller-manager release notes, v2.10.2:
    # https://www.alibabacloud.com/help/en/ack/product-overview/cloud-controller-manager; the values are
    # CreateClusterNodePool's spot_strategy: https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/
    # developer-reference/api-create-node-pools). ACK documents no taint of its own on spot node pools (a pool's
    # taints are the user's: use the custom preset to tolerate one); older controllers set no such label at all,
    # which `tidal context add` reports as a cluster without the provider's labels.
    "ack": NodeLabels(capacity_label="node.alibabacloud.com/spot-strategy", spot_value="SpotWithPriceLimit",
                      also_spot=("SpotAsPriceGo",), on_demand_value="NoSpot"),
}
DEFAULT_PRESET = "karpenter"
# The custom preset takes its label, values and spot taint from the context (`tidal context add --provider custom
# --capacity-label KEY --spot-value V [--on-demand-value V] [--spot-taint KEY=VALUE:EFFECT]`).
CUSTOM = "custom"
PROVIDERS = (*sorted(PRESETS), CUSTOM)
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def preset(name: str) -> NodeLabels:
    if name == CUSTOM:
        raise ValueError("the custom provider takes its labels from the context: give --capacity-label and "
                         "--spot-value")
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown provider {name!r} (known: {', '.join(PROVIDERS)})") from None


def parse_taint(text: str) -> dict:
    """KEY=VALUE:EFFECT or KEY:EFFECT (kubectl taint's form) as the toleration a spot pod needs."""
    head, sep, effect = text.rpartition(":")
    key, eq, value = head.partition("=")
    if not sep or not key or effect not in TAINT_EFFECTS:
        raise ValueError(f"spot taint {text!r}: expected KEY=VALUE:EFFECT with EFFECT one of "
                         f"{', '.join(TAINT_EFFECTS)}")
    if eq:
        return {"key": key, "operator": "Equal", "value": value, "effect": effect}
    return {"key": key, "operator": "Exists", "effect": effect}


def custom(capacity_label: str, spot_value: str, on_demand_value: str = "", spot_taint: str = "") -> NodeLabels:
    if not capacity_label or not spot_value:
        raise ValueError("the custom provider needs --capacity-label KEY and --spot-value VALUE "
                         "(the label and value the cluster's spot nodes carry)")
    if spot_value == on_demand_value:
        raise ValueError(f"--spot-value and --on-demand-value are both {spot_value!r}: they must differ")
    return NodeLabels(capacity_label=capacity_label, spot_value=spot_value, on_demand_value=on_demand_value,
                      spot_taints=(parse_taint(spot_taint),) if spot_taint else ())
