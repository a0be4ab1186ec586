"""Contexts: where Tidal's commands act (`local`, this machine, or a Kubernetes cluster named by a kubeconfig).

Contexts live in TIDAL_HOME/contexts.json (0600). A context points at a kubeconfig and never copies what is in
it (tokens, keys). TIDAL_CONTEXT, when set, overrides the context chosen with `tidal context use`.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tidal.errors import NotFound, UserError
from tidal.files import write_private

if TYPE_CHECKING:
    from tidal.backends.kubernetes.render import NodeLabels

LOCAL = "local"
CONTEXT_ENV = "TIDAL_CONTEXT"
FILE_NAME = "contexts.json"


class ContextKind(StrEnum):
    LOCAL = "local"
    KUBERNETES = "kubernetes"


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    kind: ContextKind = ContextKind.LOCAL
    kubeconfig: str = ""       # an absolute path; empty: the client's default (KUBECONFIG, ~/.kube/config)
    kube_context: str = ""     # a context in that kubeconfig; empty: its current-context
    namespace: str = ""
    image: str = ""            # the image that runs `tidal model-server` in the cluster
    provider: str = "karpenter"  # a preset in tidal.backends.kubernetes.presets: how nodes say spot or on-demand
    # The custom provider's own label, values and spot taint (KEY=VALUE:EFFECT); empty for the presets.
    capacity_label: str = ""
    spot_value: str = ""
    on_demand_value: str = ""
    spot_taint: str = ""

    @model_validator(mode="after")
    def _provider(self) -> "Context":
        from tidal.backends.kubernetes.presets import CUSTOM, preset
        if self.provider != CUSTOM:
            preset(self.provider)
            if self.capacity_label or self.spot_value or self.on_demand_value or self.spot_taint:
                raise ValueError(f"provider {self.provider} is a preset: --capacity-label, --spot-value, "
                                 f"--on-demand-value and --spot-taint are for --provider custom")
        self.node_labels()
        return self

    def node_labels(self) -> "NodeLabels":
        """How this cluster's nodes say spot or on-demand: the provider's preset, or the custom label."""
        from tidal.backends.kubernetes.presets import CUSTOM, custom, preset
        if self.provider == CUSTOM:
            return custom(self.capacity_label, self.spot_value, self.on_demand_value, self.spot_taint)
        return preset(self.provider)

    @property
    def is_kubernetes(self) -> bool:
        return self.kind is ContextKind.KUBERNETES


LOCAL_CONTEXT = Context(name=LOCAL)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current: str = LOCAL
    contexts: list[Context] = Field(default_factory=list)


class ContextStore:
    def __init__(self, root: Path, env: Mapping[str, str] | None = None) -> None:
        self.path = root / FILE_NAME
        self.env = os.environ if env is None else env

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ContextStore":
        from tidal.control.home import Home
        return cls(Home.from_env(env).root, env)

    def _load(self) -> _File:
        try:
            return _File.model_validate_json(self.path.read_text())
        except FileNotFoundError:
            return _File()
        except (OSError, ValidationError, ValueError) as exc:
            raise UserError(f"{self.path} cannot be read ({str(exc).splitlines()[0]}): fix or remove it") from None

    def _save(self, f: _File) -> None:
        write_private(self.path, json.dumps(f.model_dump(mode="json"), indent=2) + "\n")

    def list(self) -> list[Context]:
        return [LOCAL_CONTEXT, *sorted(self._load().contexts, key=lambda c: c.name)]

    def get(self, name: str) -> Context:
        for c in self.list():
            if c.name == name:
                return c
        raise NotFound(f"context {name!r} not found (tidal context list shows them)")

    def current_name(self) -> str:
        return self.env.get(CONTEXT_ENV, "").strip() or self._load().current

    def current(self) -> Context:
        return self.get(self.current_name())

    def add(self, context: Context) -> None:
        if context.name == LOCAL:
            raise UserError("context 'local' is built in (this machine) and cannot be replaced")
        f = self._load()
        f.contexts = [c for c in f.contexts if c.name != context.name] + [context]
        self._save(f)

    def use(self, name: str) -> Context:
        context = self.get(name)
        f = self._load()
        f.current = name
        self._save(f)
        return context

    def remove(self, name: str) -> None:
        self.get(name)
        if name == LOCAL:
            raise UserError("context 'local' is built in and cannot be removed")
        f = self._load()
        f.contexts = [c for c in f.contexts if c.name != name]
        if f.current == name:
            f.current = LOCAL
        self._save(f)
