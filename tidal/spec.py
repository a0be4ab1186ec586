"""The declared configuration of Tidal's objects, once, as pydantic models shared by YAML, CLI and API."""

from __future__ import annotations

import posixpath
import re
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

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


class Admission(BaseModel):
    """What the operator allows beyond the defaults when user input is admitted.

    User input is validated with `Spec.admit(data, admission)`, which runs the admission rules below;
    a stored row is read back with plain `model_validate`, without them, so a row written under older
    rules still lists and deletes.
    """
    model_config = ConfigDict(frozen=True)
    allow_env: frozenset[str] = frozenset()  # env names refused by default that replicas may still get
    allow_http_volumes: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Admission":
        """From the control plane's environment: TIDAL_ALLOW_ENV=NAME,NAME and TIDAL_ALLOW_HTTP_VOLUMES=1."""
        names = frozenset(n.strip() for n in env.get("TIDAL_ALLOW_ENV", "").split(",") if n.strip())
        http = env.get("TIDAL_ALLOW_HTTP_VOLUMES", "").strip().lower() in ("1", "true", "yes", "on")
        return cls(allow_env=names, allow_http_volumes=http)


_ADMISSION = "admission"  # the validation-context key that carries an Admission


def _admission(info: ValidationInfo) -> Admission | None:
    ctx = info.context
    return ctx.get(_ADMISSION) if isinstance(ctx, dict) else None


# Variables that change how a replica's interpreter or loader finds code: a service could run anything
# with them, so only the operator turns one on (TIDAL_ALLOW_ENV).
DENIED_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON")
DENIED_ENV_NAMES = frozenset({"BASH_ENV", "ENV", "GCONV_PATH", "PERL5LIB", "PERL5OPT", "PERLLIB", "RUBYLIB",
                              "RUBYOPT", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "OPENSSL_CONF",
                              "OPENSSL_MODULES", "MALLOC_CONF", "TMPDIR"})
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_refusal(name: str, allowed: frozenset[str] = frozenset()) -> str | None:
    """Why a service may not set `name` in its replicas' environment, or None when it may."""
    if not _ENV_NAME_RE.fullmatch(name):
        return f"env {name!r} is not a valid variable name (letters, digits and _, not starting with a digit)"
    if name in allowed:
        return None
    upper = name.upper()
    if upper in DENIED_ENV_NAMES or upper.startswith(DENIED_ENV_PREFIXES):
        return (f"env {name} changes how the replica loads code and is refused "
                f"(the operator may allow it: TIDAL_ALLOW_ENV={name} in the control plane's environment)")
    return None


VOLUME_SCHEMES = ("file", "s3", "oss", "gs")  # what the model server reads (fsspec), plus http(s) when allowed


def normal_volume_url(url: str, admission: Admission) -> str:
    """A volume URL inside the rules, normalised (lower-case scheme, no trailing slash, no '.' segments)."""
    scheme, sep, _ = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ValueError(f"invalid volume URL {url!r}: expected a scheme such as file://, s3://, oss://")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    web = scheme in ("http", "https")
    if scheme not in VOLUME_SCHEMES and not web:
        known = ", ".join(s + "://" for s in VOLUME_SCHEMES)
        raise ValueError(f"volume URL scheme {scheme}:// is not supported (use {known})")
    if web and not admission.allow_http_volumes:
        raise ValueError(f"http(s) volumes are off ({url}); the operator may allow them with "
                         f"TIDAL_ALLOW_HTTP_VOLUMES=1 in the control plane's environment")
    if parts.query or parts.fragment:
        raise ValueError(f"volume URL {url!r} may not carry a query or fragment")
    if "@" in parts.netloc:
        raise ValueError(f"volume URL {url!r} carries credentials: give them to the secret store instead "
                         f"(--credentials-from-env)")
    path = parts.path
    if scheme == "file":
        if parts.netloc:
            raise ValueError(f"file URL {url!r} names a host: a file:// URL takes no host (file:///PATH)")
        if not path.startswith("/"):
            raise ValueError(f"a file:// URL needs an absolute path (e.g. file:///srv/models), got {url!r}")
        path = posixpath.normpath(path)
        path = "/" + path.lstrip("/")  # normpath keeps a leading '//'
        return "file://" + path
    if not parts.netloc:
        raise ValueError(f"a {scheme}:// URL needs a bucket (e.g. {scheme}://my-bucket/models), got {url!r}")
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise ValueError(f"volume URL {url!r} may not contain '..'")
    return f"{scheme}://{parts.netloc}" + "".join("/" + s for s in segments)


def _inside(path: str, mount: str) -> bool:
    prefix = mount.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix == ""


def normal_model_path(path: str, mounts: list[str]) -> str:
    """--model-path normalised; within a --data mount it may not climb out of that mount."""
    if not path:
        return path
    if "://" in path:  # a store URL without a mount: no climbing either
        if ".." in path.split("://", 1)[1].split("/"):
            raise ValueError(f"--model-path {path!r} may not contain '..'")
        return path
    raw = path if path.startswith("/") else None
    for mount in sorted(mounts, key=len, reverse=True):
        if raw is not None and _inside(raw, mount):
            prefix = mount.rstrip("/")
            rest = posixpath.normpath(raw[len(prefix):].lstrip("/") or ".")
            if rest == ".." or rest.startswith("../"):
                raise ValueError(f"--model-path {path!r} escapes the mount {mount}")
            return prefix + ("/" + rest if rest != "." else "") or "/"
    if ".." in path.split("/") and mounts:
        raise ValueError(f"--model-path {path!r} may not contain '..'")
    return posixpath.normpath(path)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def admit(cls, data: Any, admission: Admission):
        """Validate user input with the admission rules (stored rows are read without them)."""
        return cls.model_validate(data, context={_ADMISSION: admission})


class VolumeMount(_Spec):
    volume: str = Field(min_length=1)
    mount: str = Field(pattern=r"^/")

    @classmethod
    def parse(cls, text: str) -> "VolumeMount":
        if ":" not in text:
            raise ValueError(f"invalid --data {text!r}: expected VOLUME:MOUNT_PATH (e.g. model-pvc:/models)")
        volume, mount = text.split(":", 1)
        return cls(volume=volume, mount=mount)

    @field_validator("mount")
    @classmethod
    def _mount(cls, v: str, info: ValidationInfo) -> str:
        if _admission(info) is None:
            return v
        if ".." in v.split("/"):
            raise ValueError(f"mount path {v!r} may not contain '..'")
        return "/" + posixpath.normpath(v).lstrip("/")


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

    @model_validator(mode="after")
    def _admitted(self, info: ValidationInfo) -> "ServiceSpec":
        admission = _admission(info)
        if admission is None:
            return self
        for name in self.env:
            why = env_refusal(name, admission.allow_env)
            if why:
                raise ValueError(why)
        self.model_path = normal_model_path(self.model_path, [m.mount for m in self.data])
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
    # The one provider and region the pool lives in (tidal.capacity.catalog); "" until placed at create.
    provider: str = Field(default="", pattern=r"^[a-z0-9-]*$", max_length=40)
    region: str = Field(default="", pattern=r"^[a-z0-9-]*$", max_length=60)
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
    def _url(cls, v: str, info: ValidationInfo) -> str:
        admission = _admission(info)
        return v if admission is None else normal_volume_url(v, admission)

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str, info: ValidationInfo) -> str:
        if v and _admission(info) is not None:
            raise ValueError("secret is the control plane's own: send credentials instead")
        return v
