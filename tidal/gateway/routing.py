"""Request routing: which service a request is for, by Host header, path prefix or model name.

Order, first match wins:
1. Host header (port ignored, case-insensitive): `NAME.<domain>` (`bert.localhost:8501`)
   or any extra host given for the service; the path passes through unchanged.
2. Path prefix `<prefix>NAME/...` (`/services/bert/v1/models/bert:predict`); the
   prefix and name are stripped (`/services/bert` alone becomes `/`).
3. The model name in a TF Serving or V2 path (`/v1/models/NAME[/...|:verb]`,
   `/v2/models/NAME[/...]`); the path passes through unchanged, so a client points at
   the gateway exactly as at TF Serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from tidal.errors import AlreadyExists

_MODEL_PREFIXES = ("/v1/models/", "/v2/models/")
_SEEN_HOSTS_MAX = 4096


@dataclass(frozen=True)
class RouteSpec:
    """How one service is addressed."""

    name: str
    hosts: tuple[str, ...] = ()
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class RouteTable:
    """An immutable snapshot of every service's addresses; rebuilt on each change."""

    hosts: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    names: frozenset[str] = frozenset()
    prefix: str = "/services/"
    # Host header as sent -> service or None; a memo of `normalize_host` lookups, since
    # clients send the same few Host values over and over.
    seen_hosts: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)


def normalize_host(host: str) -> str:
    """Lower-case, without port or trailing dot. IPv6 literals keep their brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end >= 0 else host
    colon = host.find(":")
    if colon >= 0:
        host = host[:colon]
    return host.rstrip(".")


def build_table(services: Iterable[RouteSpec], *, domain: str = "localhost",
                prefix: str = "/services/") -> RouteTable:
    """Index the services' hosts and models; two services claiming one raises `AlreadyExists`."""
    hosts: dict[str, str] = {}
    models: dict[str, str] = {}
    names: set[str] = set()
    for spec in services:
        names.add(spec.name)
        for host in (f"{spec.name}.{domain}", *spec.hosts):
            key = normalize_host(host)
            owner = hosts.setdefault(key, spec.name)
            if owner != spec.name:
                raise AlreadyExists(f"host {key!r} is already routed to service {owner!r}")
        for model in spec.models:
            owner = models.setdefault(model, spec.name)
            if owner != spec.name:
                raise AlreadyExists(f"model {model!r} is already served by service {owner!r}")
    return RouteTable(hosts, models, frozenset(names), prefix)


def model_in_path(path: str) -> str | None:
    """The model name in a TF Serving or V2 model path, else None."""
    for p in _MODEL_PREFIXES:
        if path.startswith(p):
            start = len(p)
            end = len(path)
            for sep in (":", "/"):
                i = path.find(sep, start)
                if 0 <= i < end:
                    end = i
            return path[start:end] or None
    return None


def resolve(table: RouteTable, host: str | None, path: str) -> tuple[str, str] | None:
    """(service, upstream path) for a request, or None when no service matches."""
    if host:
        seen = table.seen_hosts
        if host in seen:
            name = seen[host]
        else:
            name = table.hosts.get(normalize_host(host))
            if len(seen) < _SEEN_HOSTS_MAX:
                seen[host] = name
        if name is not None:
            return name, path
    prefix = table.prefix
    if path.startswith(prefix):
        slash = path.find("/", len(prefix))
        name = path[len(prefix):] if slash < 0 else path[len(prefix):slash]
        if name in table.names:
            return name, "/" if slash < 0 else path[slash:]
        return None
    model = model_in_path(path)
    if model is not None:
        name = table.models.get(model)
        if name is not None:
            return name, path
    return None
