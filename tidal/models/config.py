"""Model-server configuration: models, version policies, batching and runtime options, and TF Serving's config files."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError, model_validator

from tidal.errors import UserError
from tidal.models import textproto
from tidal.models.textproto import Ident, Message, TextFormatError


class VersionPolicy(BaseModel):
    """Which of the versions found under a base path are served (TF Serving's ServableVersionPolicy)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["latest", "all", "specific"] = "latest"
    num_versions: PositiveInt = 1
    versions: tuple[NonNegativeInt, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data):
        # YAML and CLI may give arena's string form: version_policy: "latest:2"
        if isinstance(data, str):
            try:
                policy = cls.parse(data)
            except UserError as e:
                raise ValueError(str(e)) from None
            return {"kind": policy.kind, "num_versions": policy.num_versions, "versions": policy.versions}
        return data

    @model_validator(mode="after")
    def _check(self) -> "VersionPolicy":
        if self.kind == "specific" and not self.versions:
            raise ValueError("a 'specific' version policy needs at least one version")
        if self.kind != "specific" and self.versions:
            raise ValueError(f"versions are only allowed with a 'specific' policy, not '{self.kind}'")
        return self

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        """arena's --version-policy strings: `latest`, `latest:N`, `specific:N[,M...]`, `all`."""
        s = text.strip()
        kind, _, arg = s.partition(":")
        kind = kind.strip().lower()
        arg = arg.strip()
        if kind == "latest":
            if not arg:
                return cls()
            if not re.fullmatch(r"\d+", arg) or int(arg) < 1:
                raise UserError(f"bad version policy {text!r}: 'latest:N' needs a whole number N >= 1")
            return cls(kind="latest", num_versions=int(arg))
        if kind == "all":
            if arg:
                raise UserError(f"bad version policy {text!r}: 'all' takes no argument")
            return cls(kind="all")
        if kind == "specific":
            parts = [p.strip() for p in arg.split(",")] if arg else []
            if not parts or not all(re.fullmatch(r"\d+", p) for p in parts):
                raise UserError(
                    f"bad version policy {text!r}: 'specific:V[,V...]' needs version numbers, e.g. specific:1,2")
            return cls(kind="specific", versions=tuple(sorted({int(p) for p in parts})))
        raise UserError(f"bad version policy {text!r}: expected latest, latest:N, specific:V[,V...] or all")

    def __str__(self) -> str:
        if self.kind == "latest":
            return "latest" if self.num_versions == 1 else f"latest:{self.num_versions}"
        if self.kind == "specific":
            return "specific:" + ",".join(str(v) for v in self.versions)
        return "all"


class ModelConfig(BaseModel):
    """One served model: where its versions live and which of them to serve."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    base_path: str = Field(min_length=1)
    platform: str = ""  # TF Serving's model_platform; the runtime is chosen by the files
    version_policy: VersionPolicy = VersionPolicy()
    version_labels: dict[str, NonNegativeInt] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if "/" in self.name or ":" in self.name:
            raise ValueError(f"model name {self.name!r} may not contain '/' or ':'")
        for label in self.version_labels:
            if not label:
                raise ValueError("a version label may not be empty")
        return self


class BatchingOptions(BaseModel):
    """Dynamic batching knobs, with TF Serving's BatchingParameters defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    max_batch_size: PositiveInt = 1000
    batch_timeout_micros: NonNegativeInt = 0
    max_enqueued_batches: PositiveInt = 10
    # None: as many concurrent batches as the cores allow given the runtime's intra-op threads.
    num_batch_threads: PositiveInt | None = None
    allowed_batch_sizes: tuple[PositiveInt, ...] = ()
    pad_variable_length_inputs: bool = False
    # TF Serving's large-batch splitting: a request of up to max_batch_size rows is cut into pieces of at
    # most max_execution_batch_size rows, which batch with others; without it a larger request is refused.
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: PositiveInt | None = None
    # Tidal's own: batching nobody asked for (TF Serving batches only with --enable_batching) must not
    # refuse what an unbatched server runs, so a request over max_batch_size then runs alone.
    oversize_runs_alone: bool = False
    # Tidal's own: a batch whose measured run time is below this runs on the event loop,
    # saving a thread handoff for tiny models.
    inline_threshold_micros: NonNegativeInt = 200

    @model_validator(mode="after")
    def _check(self) -> "BatchingOptions":
        sizes = self.allowed_batch_sizes
        if self.max_execution_batch_size is not None and not self.enable_large_batch_splitting:
            raise ValueError("max_execution_batch_size needs enable_large_batch_splitting: true")
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:])):
                raise ValueError("allowed_batch_sizes must be strictly increasing")
            if sizes[-1] != self.execution_batch_size:
                raise ValueError(
                    f"the last entry of allowed_batch_sizes ({sizes[-1]}) must equal "
                    f"{'max_execution_batch_size' if self.enable_large_batch_splitting else 'max_batch_size'} "
                    f"({self.execution_batch_size})")
        return self

    @property
    def execution_batch_size(self) -> int:
        """The most rows one run takes: max_execution_batch_size when splitting, else max_batch_size."""
        if self.enable_large_batch_splitting:
            return self.max_execution_batch_size or self.max_batch_size
        return self.max_batch_size


class RuntimeOptions(BaseModel):
    """Settings every runtime honours; 0 threads means the runtime's own default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    intra_op_threads: NonNegativeInt = 0
    inter_op_threads: NonNegativeInt = 0
    # The SavedModel meta graph to load (TF Serving's --saved_model_tags, comma-separated there).
    saved_model_tags: tuple[str, ...] = ("serve",)


def usable_cores() -> int:
    """Cores this process may run on: honours taskset and cgroup pinning, unlike os.cpu_count."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---- TF Serving's text formats -------------------------------------------------------------


def _fail(source: str, line: int, message: str) -> UserError:
    return UserError(f"{source}:{line}: {message}")


def _parse(text: str, source: str) -> Message:
    try:
        return textproto.parse(text)
    except TextFormatError as e:
        raise _fail(source, e.line, e.detail) from None


def _string(f: textproto.Field, source: str) -> str:
    if isinstance(f.value, Message) or isinstance(f.value, Ident) or not isinstance(f.value, str):
        raise _fail(source, f.line, f"'{f.name}' must be a quoted string")
    return f.value


def _int(f: textproto.Field, source: str) -> int:
    if isinstance(f.value, bool) or not isinstance(f.value, int):
        raise _fail(source, f.line, f"'{f.name}' must be a whole number")
    return f.value


def _bool(f: textproto.Field, source: str) -> bool:
    if isinstance(f.value, Ident) and f.value in ("true", "True", "t"):
        return True
    if isinstance(f.value, Ident) and f.value in ("false", "False", "f"):
        return False
    if isinstance(f.value, int) and not isinstance(f.value, bool) and f.value in (0, 1):
        return bool(f.value)
    raise _fail(source, f.line, f"'{f.name}' must be true or false")


def _message(f: textproto.Field, source: str) -> Message:
    if not isinstance(f.value, Message):
        raise _fail(source, f.line, f"'{f.name}' must be a message in braces: {f.name} {{ ... }}")
    return f.value


def _unknown(f: textproto.Field, where: str, known: tuple[str, ...], source: str) -> UserError:
    return _fail(source, f.line, f"unknown field '{f.name}' in {where} (expected one of: {', '.join(known)})")


def _once(seen: set[str], f: textproto.Field, source: str) -> None:
    if f.name in seen:
        raise _fail(source, f.line, f"'{f.name}' given more than once")
    seen.add(f.name)


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


_POLICY_FIELDS = ("latest", "all", "specific")


def _version_policy(msg: Message, source: str) -> VersionPolicy:
    if len(msg.fields) != 1:
        raise _fail(source, msg.line, "model_version_policy needs exactly one of: latest, all, specific")
    f = msg.fields[0]
    body = _message(f, source)
    if f.name == "latest":
        num = 1
        for g in body.fields:
            if g.name != "num_versions":
                raise _unknown(g, "latest", ("num_versions",), source)
            num = _int(g, source)
            if num < 1:
                raise _fail(source, g.line, "num_versions must be at least 1")
        return VersionPolicy(kind="latest", num_versions=num)
    if f.name == "all":
        for g in body.fields:
            raise _unknown(g, "all", (), source)
        return VersionPolicy(kind="all")
    if f.name == "specific":
        versions = []
        for g in body.fields:
            if g.name != "versions":
                raise _unknown(g, "specific", ("versions",), source)
            v = _int(g, source)
            if v < 0:
                raise _fail(source, g.line, "versions must not be negative")
            versions.append(v)
        if not versions:
            raise _fail(source, f.line, "specific { } needs at least one 'versions: N'")
        return VersionPolicy(kind="specific", versions=tuple(sorted(set(versions))))
    raise _unknown(f, "model_version_policy", _POLICY_FIELDS, source)


_CONFIG_FIELDS = ("name", "base_path", "model_platform", "model_type", "model_version_policy",
                  "version_labels", "logging_config")


def _model_config(msg: Message, source: str) -> ModelConfig:
    values: dict = {}
    labels: dict[str, int] = {}
    seen: set[str] = set()
    for f in msg.fields:
        if f.name == "name":
            _once(seen, f, source)
            values["name"] = _string(f, source)
        elif f.name == "base_path":
            _once(seen, f, source)
            values["base_path"] = _string(f, source)
        elif f.name == "model_platform":
            _once(seen, f, source)
            values["platform"] = _string(f, source)
        elif f.name == "model_type":
            # Deprecated in TF Serving in favour of model_platform; TENSORFLOW means 'tensorflow'.
            _once(seen, f, source)
            if not isinstance(f.value, Ident):
                raise _fail(source, f.line, "'model_type' must be an enum name such as TENSORFLOW")
            values.setdefault("platform", "tensorflow" if f.value == "TENSORFLOW" else str(f.value).lower())
        elif f.name == "model_version_policy":
            _once(seen, f, source)
            values["version_policy"] = _version_policy(_message(f, source), source)
        elif f.name == "version_labels":
            entry = _message(f, source)
            key = value = None
            for g in entry.fields:
                if g.name == "key":
                    key = _string(g, source)
                elif g.name == "value":
                    value = _int(g, source)
                else:
                    raise _unknown(g, "version_labels", ("key", "value"), source)
            if not key or value is None:
                raise _fail(source, f.line, "version_labels needs a non-empty 'key' and a 'value'")
            if key in labels:
                raise _fail(source, f.line, f"version label '{key}' given more than once")
            if value < 0:
                raise _fail(source, f.line, f"version label '{key}' points at a negative version")
            labels[key] = value
        elif f.name == "logging_config":
            _message(f, source)  # accepted for compatibility; request logging is configured elsewhere
        else:
            raise _unknown(f, "config", _CONFIG_FIELDS, source)
    for required in ("name", "base_path"):
        if required not in values:
            raise _fail(source, msg.line, f"config is missing '{required}'")
    values["version_labels"] = labels
    try:
        return ModelConfig(**values)
    except ValidationError as e:
        raise _fail(source, msg.line, _validation_message(e)) from None


def parse_model_config_list(text: str, source: str = "<model config>") -> list[ModelConfig]:
    """TF Serving's --model_config_file: `model_config_list { config { ... } ... }`."""
    top = _parse(text, source)
    configs: list[ModelConfig] = []
    seen_list = False
    for f in top.fields:
        if f.name == "custom_model_config":
            raise _fail(source, f.line, "custom_model_config is not supported; use model_config_list")
        if f.name != "model_config_list":
            raise _unknown(f, "the model server config", ("model_config_list",), source)
        if seen_list:
            raise _fail(source, f.line, "'model_config_list' given more than once")
        seen_list = True
        for g in _message(f, source).fields:
            if g.name != "config":
                raise _unknown(g, "model_config_list", ("config",), source)
            cfg = _model_config(_message(g, source), source)
            if any(c.name == cfg.name for c in configs):
                raise _fail(source, g.line, f"model '{cfg.name}' is configured more than once")
            configs.append(cfg)
    if not seen_list:
        raise _fail(source, 1, "expected 'model_config_list { config { ... } }'")
    return configs


_WRAPPED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
            "max_execution_batch_size")
_BATCHING_FIELDS = _WRAPPED + ("allowed_batch_sizes", "pad_variable_length_inputs", "thread_pool_name",
                               "enable_large_batch_splitting")
# BatchingParameters' priority-queue fields: refused by name rather than taken and ignored.
_PRIORITY_FIELDS = ("low_priority_max_batch_size", "low_priority_batch_timeout_micros",
                    "low_priority_max_enqueued_batches", "low_priority_allowed_batch_sizes",
                    "mixed_priority_batching_policy", "batch_padding_policy")


def parse_batching_parameters(text: str, source: str = "<batching parameters>") -> BatchingOptions:
    """TF Serving's --batching_parameters_file (BatchingParameters); unset fields keep TF's defaults."""
    top = _parse(text, source)
    values: dict = {}
    sizes: list[int] = []
    seen: set[str] = set()
    for f in top.fields:
        if f.name in _WRAPPED:
            _once(seen, f, source)
            if isinstance(f.value, Message):
                # The proto wraps these in google.protobuf.Int64Value: `max_batch_size { value: 128 }`.
                inner = f.value.fields
                if len(inner) != 1 or inner[0].name != "value":
                    raise _fail(source, f.line, f"expected '{f.name} {{ value: N }}'")
                n = _int(inner[0], source)
            else:
                n = _int(f, source)
            if n < 0 or (n == 0 and f.name != "batch_timeout_micros"):
                raise _fail(source, f.line, f"'{f.name}' must be {'>= 0' if f.name == 'batch_timeout_micros' else '>= 1'}")
            values[f.name] = n
        elif f.name == "allowed_batch_sizes":
            n = _int(f, source)
            if n < 1:
                raise _fail(source, f.line, "allowed_batch_sizes entries must be >= 1")
            sizes.append(n)
        elif f.name in ("pad_variable_length_inputs", "enable_large_batch_splitting"):
            _once(seen, f, source)
            if isinstance(f.value, Message):  # google.protobuf.BoolValue
                inner = f.value.fields
                if len(inner) != 1 or inner[0].name != "value":
                    raise _fail(source, f.line, f"expected '{f.name} {{ value: true }}'")
                values[f.name] = _bool(inner[0], source)
            else:
                values[f.name] = _bool(f, source)
        elif f.name in _PRIORITY_FIELDS:
            raise _fail(source, f.line, f"'{f.name}' (priority batching) is not supported: Tidal has one queue "
                                        "per signature; remove it")
        elif f.name == "thread_pool_name":
            _once(seen, f, source)
            if isinstance(f.value, Message):
                continue  # a name for TF's thread pool; Tidal's pool is per model
            _string(f, source)
        else:
            raise _unknown(f, "batching parameters", _BATCHING_FIELDS, source)
    if sizes:
        values["allowed_batch_sizes"] = tuple(sizes)
    try:
        return BatchingOptions(**values)
    except ValidationError as e:
        raise _fail(source, 1, _validation_message(e)) from None


def _read(path: str) -> str:
    import fsspec

    try:
        with fsspec.open(path, "r", encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None


class MonitoringOptions(BaseModel):
    """TF Serving's --monitoring_config_file: where Prometheus metrics are served."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enable: bool = False
    path: str = "/monitoring/prometheus/metrics"


def parse_monitoring_config(text: str, source: str = "<monitoring config>") -> MonitoringOptions:
    """`prometheus_config { enable: true path: "/metrics/path" }` (MonitoringConfig)."""
    top = _parse(text, source)
    values: dict = {}
    for f in top.fields:
        if f.name != "prometheus_config":
            raise _unknown(f, "the monitoring config", ("prometheus_config",), source)
        for g in _message(f, source).fields:
            if g.name == "enable":
                values["enable"] = _bool(g, source)
            elif g.name == "path":
                path = _string(g, source)
                if not path.startswith("/") or path.startswith(("/v1/", "/v2/")) or path in ("/v1", "/v2"):
                    raise _fail(source, g.line, f"path {path!r} must start with '/' and not be under /v1 or /v2")
                values["path"] = path
            else:
                raise _unknown(g, "prometheus_config", ("enable", "path"), source)
    return MonitoringOptions(**values)


def load_monitoring_config_file(path: str) -> MonitoringOptions:
    return parse_monitoring_config(_read(path), source=path)


def read_text(path: str) -> str:
    """A config file's text (a path or an fsspec URL); UserError in one line when it cannot be read."""
    return _read(path)


def load_model_config_file(path: str) -> list[ModelConfig]:
    return parse_model_config_list(_read(path), source=path)


def load_batching_parameters_file(path: str) -> BatchingOptions:
    return parse_batching_parameters(_read(path), source=path)
