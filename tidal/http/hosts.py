"""Which Host names a server answers to: the guard against DNS rebinding for local, unauthenticated pages."""

from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

# Names a local server always serves; the bind address and configured names are added to these.
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
ENV_VAR = "TIDAL_ALLOWED_HOSTS"
WILDCARDS = ("0.0.0.0", "::", "")


def host_name(header: str) -> str:
    """The name in a Host header, without port, brackets, case or a trailing dot: '[::1]:80' -> '::1'."""
    h = header.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        h = h[1:end] if end > 0 else h[1:]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class HostAllowList:
    """Names a server answers to. A request for any other name is a page on another site reaching in.

    A browser page can only read a local server through a name it controls (DNS rebinding points
    that name at 127.0.0.1); an IP-literal Host is same-origin with the server itself, so a server
    bound to every address (0.0.0.0) may also answer to IP literals without opening that hole.
    """

    __slots__ = ("names", "allow_ip_literals")

    def __init__(self, names: Iterable[str], allow_ip_literals: bool = False) -> None:
        self.names = frozenset(host_name(n) for n in names if n and n.strip())
        self.allow_ip_literals = allow_ip_literals

    def allows(self, header: str | None) -> bool:
        # HTTP/1.0 clients may send no Host; a browser always sends one, so its absence is not the attack.
        if header is None:
            return True
        name = host_name(header)
        return name in self.names or (self.allow_ip_literals and _is_ip(name))

    @classmethod
    def for_bind(cls, bind_host: str, extra: Iterable[str] = (), env: Mapping[str, str] | None = None
                 ) -> "HostAllowList":
        """localhost, 127.0.0.1, ::1, the bind address, `extra`, and the comma-separated names in TIDAL_ALLOWED_HOSTS."""
        names = [*LOCAL_NAMES, *extra]
        if bind_host not in WILDCARDS:
            names.append(bind_host)
        if env is not None:
            names.extend(n.strip() for n in env.get(ENV_VAR, "").split(","))
        return cls(names, allow_ip_literals=bind_host in WILDCARDS)
