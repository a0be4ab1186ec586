"""The declared configuration of Tidal's objects, once, as pydantic models shared by YAML, CLI and API."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tidal.models.config import VersionPolicy  # the model server's own, so both read a policy the same way

NAME_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a DNS-1123 label, as Kubernetes names are
MODEL_NAME_RE = r"^[a-zA-Z0-9_-]+$"

_MEMORY_UNITS = {"": 1 / (1024 * 1024), "k": 1000 / 1048576, "ki": 1 / 1024, "m": 1e6 / 1048576, "mi": 1.0,
                 "g": 1e9 / 1048576, "gi": 1024.0, "t": 1e12 / 1048576, "ti": 1024.0 * 1024}


def parse_memory_mib(text: str | int | float | None) -> float:
    """Kubernetes-style quantity ("512Mi", "2Gi", "1G", bytes) -> MiB."""
    if text is None or text == "":
        return 0.0
    if isinstance(text, (int, float)):
        return float(text) / (1024 * 1024)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]i?)?\s*", str(text))
    if not m:
        raise ValueError(f"invalid memory quantity {text!r} (expected e.g. 512Mi, 2Gi)")
    return float(m.group(1)) * _MEMORY_UNITS[(m.group(2) or "").lower()]


def parse_key_values(items: list[str] | None, what: str) -> dict[str, str]:
    """["k=v", ...] -> {k: v}, with a clear error for an item without '='."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ValueError(f"invalid {what} {part!r}: expected KEY=VALUE")
            k, v = part.split("=", 1)
            if not k.strip():
                raise ValueError(f"invalid {what} {part!r}: empty key")
            out[k.strip()] = v.strip()
    return out


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VolumeMount(_Spec):
    volume: str = Field(min_length=1)
    mount: str = Field(pattern=r"^/")

    @classmethod
    def parse(cls, text: str) -> "VolumeMount":
        if ":" not in text:
            raise ValueError(f"invalid --data {text!r}: expected VOLUME:MOUNT_PATH (e.g. model-pvc:/models)")
        volume, mount = text.split(":", 1)
        return cls(volume=volume, mount=mount)


class ServiceSpec(_Spec):
    """An inference service: arena's `serve` flags."""
    name: str = Field(pattern=NAME_RE, max_length=40)
    version: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=20)
    type: Literal["tensorflow", "onnx"] = "tensorflow"
    image: str = ""
    gpus: int = Field(default=0, ge=0)
    cpu: float = Field(default=0.0, ge=0)
    memory_mib: float = Field(default=0.0, ge=0)
    replicas: int = Field(default=1, ge=0, le=1000)
    data: list[VolumeMount] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    port: int = Field(default=8500, ge=1, le=65535)
    restful_port: int = Field(default=8501, ge=1, le=65535)
    model_name: str = Field(default="", pattern=r"^([a-zA-Z0-9_-]+)?$")
    model_path: str = ""
    model_config_file: str = ""
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)

    @model_validator(mode="after")
    def _needs_model(self) -> "ServiceSpec":
        if not self.model_path and not self.model_config_file:
            raise ValueError("--model-path is required without --model-config-file")
        if self.model_path and not self.model_name:
            self.model_name = self.name  # arena names the model after the service when not told
        return self

    @property
    def release(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def workload(self) -> str:
        return f"{self.release}-{self.type}-serving"


class NodePoolSpec(_Spec):
    """An elastic node pool with capacity.md's knobs (Alibaba ESS / AWS MixedInstancesPolicy)."""
    name: str = Field(pattern=NAME_RE, max_length=40)
    labels: dict[str, str] = Field(default_factory=dict)
    spot: bool = False
    # A name in tidal.capacity.policies.POLICIES (checked when the pool is created).
    policy: str | None = Field(default=None, pattern=r"^[a-z][-a-z0-9]*$")
    # The policy's own parameters (e.g. tidal's outage_value), over those the pool's fields give it.
    policy_params: dict[str, float | int | bool | str] = Field(default_factory=dict, max_length=32)
    on_demand_base: int = Field(default=0, ge=0, le=1000)
    on_demand_percentage: int = Field(default=100, ge=0, le=100)
    spot_pools: int = Field(default=1, ge=1, le=10)
    compensate_with_on_demand: bool = False
    spot_remedy: bool = False
    multi_zone: Literal["cost-optimized", "balance", "priority"] = "priority"
    instance_types: list[str] = Field(default_factory=list)
    zones: list[str] = Field(default_factory=list)
    min_nodes: int = Field(default=0, ge=0, le=1000)
    max_nodes: int = Field(default=10, ge=0, le=1000)
    scale_in_after_seconds: float = Field(default=600.0, ge=0)
    notice_seconds: float = Field(default=120.0, ge=0)
    spot_trace: str = ""

    @field_validator("instance_types", "zones", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @model_validator(mode="after")
    def _check(self) -> "NodePoolSpec":
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"--min ({self.min_nodes}) is above --max ({self.max_nodes})")
        if self.policy is None:
            self.policy = "ess" if self.spot else "on-demand"
        if not self.spot and self.policy != "on-demand":
            raise ValueError(f"policy {self.policy!r} needs a spot pool (--spot)")
        return self


class VolumeSpec(_Spec):
    """A named model store: any fsspec URL (file://, s3://, oss://, gs://); credentials live in the secret store."""
    name: str = Field(pattern=NAME_RE, max_length=63)
    url: str = Field(min_length=1)
    endpoint: str = ""
    options: str = ""
    secret: str = ""  # name of an entry in the 0600 secret store, never the secret itself

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError(f"invalid volume URL {v!r}: expected a scheme such as file://, s3://, oss://")
        return v.rstrip("/") if not v.endswith(":///") else v
