"""What the control-plane commands share: the API client, output formats (table, json, yaml), time display."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Iterable

import yaml

from tidal.control.client import ApiClient
from tidal.errors import UserError


def client() -> ApiClient:
    """The API of the control plane in TIDAL_HOME, once it is the one acting on the context this command chose."""
    from tidal.control.home import Home
    home = Home.from_env()
    if not os.environ.get("TIDAL_API"):
        same_context(home)
    return ApiClient.for_home(home)


def same_context(home) -> None:
    """A home runs one control plane, on the context current when it started: a command for another context
    (--context, TIDAL_CONTEXT, `tidal context use`) gets one line instead of the wrong cluster's answer."""
    running = (home.read_address() or {}).get("context")
    if running is None:  # none running (ApiClient says so), or one that predates contexts in its address
        return
    from tidal.backends.kubernetes.contexts import ContextStore
    wanted = ContextStore(home.root, os.environ).current_name()
    if wanted != running:
        raise UserError(f"the control plane running here acts on context {running}, not {wanted}: "
                        f"`tidal --context {running} down`, then `tidal --context {wanted} up`")


def add_output(parser, choices=("table", "json", "yaml"), default="table") -> None:
    parser.add_argument("-o", "--output", choices=list(choices) + (["wide"] if "wide" not in choices else []),
                        default=default, help="output format (default: %(default)s)")


def emit(data: Any, fmt: str) -> bool:
    """Print data as json/yaml and return True; False when the caller prints its table."""
    if fmt == "json":
        print(json.dumps(data, indent=2, sort_keys=False))
        return True
    if fmt == "yaml":
        print(yaml.safe_dump(data, sort_keys=False).rstrip())
        return True
    return False


def table(headers: list[str], rows: Iterable[Iterable[Any]], out=None) -> None:
    out = out or sys.stdout
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), file=out)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def clock_time(t: float | None) -> str:
    if t is None:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(t))


def key_values(items: list[str] | None, what: str) -> dict[str, str]:
    from tidal.spec import parse_key_values
    try:
        return parse_key_values(items, what)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def labels_text(labels: dict | None) -> str:
    """Labels as people write them, `k=v,k2=v2` (the order given); "-" when there are none."""
    return ",".join(f"{k}={v}" for k, v in (labels or {}).items()) or "-"


def money(x: float | None) -> str:
    return "" if x is None else f"${x:,.4f}"
