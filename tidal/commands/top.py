"""`tidal top`: services' traffic and replicas, nodes with their billing and price, and what it all cost."""

from __future__ import annotations

import argparse
import sys
import time

from tidal.commands.common import add_output, client, emit, money, table
from tidal.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example:\n  tidal top\n  tidal top --watch      # redraw every 2 s until Ctrl-C\n"
                     "  tidal top -o json")
    parser.add_argument("-w", "--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                        help="redraw every SECONDS (2 when not given) until Ctrl-C")
    add_output(parser, ("table", "json"))


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1000:.1f}ms"


def gateway_line(g: dict | None, now: float) -> str | None:
    """One line on the gateway process: where it serves, since when, and why it last restarted."""
    if not g or g.get("mode") != "process":
        return None
    if g.get("pid") is None:
        return f"gateway: {g.get('url')}: not running"
    up = max(0.0, now - g["up_since"])
    line = (f"gateway: pid {g['pid']} at {g['url']}, up since {time.strftime('%H:%M:%S', time.localtime(g['up_since']))} "
            f"({up:.0f}s), restarts {g['restarts']}") + (f", engine {g['engine']}" if g.get("engine") else "")
    last = g.get("last_restart")
    if last:
        line += f"; last restart at {time.strftime('%H:%M:%S', time.localtime(last['time']))}: {last['reason']}"
    if not g.get("reachable", True):
        line += " (not answering now)"
    return line


def run(args) -> int:
    api = client()
    if args.watch is None:
        show(api.get("/top"), args.output)
        return 0
    if args.watch <= 0:
        raise UserError("--watch takes a positive number of seconds")
    clear = sys.stdout.isatty() and args.output == "table"
    try:
        while True:
            data = api.get("/top")
            if clear:
                sys.stdout.write("\x1b[H\x1b[2J")  # home and clear: one screen, redrawn
            show(data, args.output)
            if not clear:
                print(flush=True)
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def show(data: dict, output: str) -> None:
    """One screen of `tidal top` (or the JSON of it)."""
    if emit(data, output):
        return
    rows = []
    for s in data["services"]:
        t = s["traffic"] or {}
        qps = t.get("qps") or {}
        w = min(qps, key=lambda k: abs(float(k) - 10.0)) if qps else None
        last = s["autoscaler"] or {}
        reason = "scaled to zero" if s.get("scaled_to_zero") else last.get("reason", "-")
        rows.append([s["name"], s["desired"], s["available"], f"{qps[w]:.1f}" if w is not None else "-",
                     _ms((t.get("p50") or {}).get(w)) if w is not None else "-",
                     _ms((t.get("p99") or {}).get(w)) if w is not None else "-",
                     t.get("requests", "-"), t.get("errors", "-"), t.get("queued", "-"), reason])
    line = gateway_line(data.get("gateway"), time.time())
    if line:
        print(line + "\n")
    table(["SERVICE", "DESIRED", "AVAILABLE", "QPS", "P50", "P99", "REQUESTS", "ERRORS", "QUEUED", "AUTOSCALER"], rows)
    print()
    table(["NODE", "POOL", "ZONE", "INSTANCE TYPE", "BILLING", "STATE", "PRICE/H"],
          [[n["name"], n["pool"], n["zone"], n["instance_type"], n["billing"], n["state"], money(n["price_per_hour"])]
           for n in data["nodes"]])
    c = data["cost"]
    print(f"\ncost so far: {money(c['total'])} (spot {money(c['spot'])}, on-demand {money(c['on_demand'])}); "
          f"all on-demand would be {money(c['all_on_demand'])}: saved {c['savings_ratio'] * 100:.0f}%")
