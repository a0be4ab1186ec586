"""The gateway's compiled data plane (`tidal-edge`): where its binary is, and the command its coordinator runs.

With the `edge` engine the supervised gateway process stays the coordinator and the one
source of the gateway's behaviour: it keeps the route table, the control endpoints, the
queue of a service at zero and every rarer case, on a private port of 127.0.0.1. One
`tidal-edge` process serves the public port in the place of a worker (same channel, same
frames, see `tidal.gateway.workers`): it answers TF Serving and V2 requests for a service
with one release and a ready replica itself, counting them as a worker does, and passes
every other request to the coordinator's private port, where it is answered and counted.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tidal.errors import UserError
from tidal.gateway.config import GatewaySettings

EDGE_ENV = "TIDAL_EDGE_BIN"  # the binary itself, instead of the tool cache's


def edge_path(env: dict | None = None) -> Path:
    """Where the binary is looked for: $TIDAL_EDGE_BIN, else the tool cache `scripts/edge.sh` builds into."""
    env = os.environ if env is None else env
    given = env.get(EDGE_ENV)
    if given:
        return Path(given)
    tools = env.get("TIDAL_TOOLS") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                   "tidal", "bin")
    return Path(tools) / "tidal-edge"


def find_edge(env: dict | None = None) -> Path | None:
    path = edge_path(env)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _sources_key(sources: Path) -> str | None:
    """The key `scripts/edge.sh` stores beside the binary it built from `sources` (a hash of them), or None."""
    try:
        files = [sources / "Cargo.toml", sources / "Cargo.lock",
                 *sorted(sources.glob("src/**/*.rs"), key=lambda f: str(f.relative_to(sources)).encode())]
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()[:16]


def auto_edge(env: dict | None = None, sources: Path | None = None) -> Path | None:
    """The binary for the `auto` engine: one built from this source tree's edge/ (its key matches), else None.

    A binary the sources no longer match (built before an update) or one beside an installed package with no
    sources to check it against is not used by `auto`; `--gateway-engine edge` still takes it."""
    path = find_edge(env)
    sources = Path(__file__).resolve().parents[2] / "edge" if sources is None else sources
    if path is None or not (sources / "Cargo.toml").is_file():
        return None
    try:
        built = path.with_name(path.name + ".key").read_text().strip()
    except OSError:
        return None
    return path if built == _sources_key(sources) else None


def require_edge(env: dict | None = None) -> Path:
    """The binary, or a `UserError` of one line saying how to get it."""
    path = find_edge(env)
    if path is None:
        raise UserError(f"the gateway engine 'edge' needs the tidal-edge binary, not found at {edge_path(env)}: "
                        f"build it with scripts/edge.sh (needs cargo), or set {EDGE_ENV}")
    return path


def edge_argv(binary: Path, *, listen_fd: int, channel_fd: int, admin_port: int, threads: int, index: int,
              settings: GatewaySettings) -> list[str]:
    return [str(binary), "--listen-fd", str(listen_fd), "--channel-fd", str(channel_fd),
            "--admin-port", str(admin_port), "--threads", str(threads), "--index", str(index),
            "--settings", settings.model_dump_json()]
