"""`tidal top`: services' traffic and replicas, nodes with their billing and price, and what it all cost."""

from __future__ import annotations

import argparse

from tidal.commands.common import add_output, client, emit, money, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "example:\n  tidal top\n  tidal top -o json"
    add_output(parser, ("table", "json"))


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1000:.1f}ms"


def run(args) -> int:
    data = client().get("/top")
    if emit(data, args.output):
        return 0
    rows = []
    for s in data["services"]:
        t = s["traffic"] or {}
        qps = t.get("qps") or {}
        w = min(qps, key=lambda k: abs(float(k) - 10.0)) if qps else None
        last = s["autoscaler"] or {}
        rows.append([s["name"], s["desired"], s["available"], f"{qps[w]:.1f}" if w is not None else "-",
                     _ms((t.get("p50") or {}).get(w)) if w is not None else "-",
                     _ms((t.get("p99") or {}).get(w)) if w is not None else "-",
                     t.get("requests", "-"), t.get("errors", "-"), last.get("reason", "-")])
    table(["SERVICE", "DESIRED", "AVAILABLE", "QPS", "P50", "P99", "REQUESTS", "ERRORS", "AUTOSCALER"], rows)
    print()
    table(["NODE", "POOL", "ZONE", "INSTANCE TYPE", "BILLING", "STATE", "PRICE/H"],
          [[n["name"], n["pool"], n["zone"], n["instance_type"], n["billing"], n["state"], money(n["price_per_hour"])]
           for n in data["nodes"]])
    c = data["cost"]
    print(f"\ncost so far: {money(c['total'])} (spot {money(c['spot'])}, on-demand {money(c['on_demand'])}); "
          f"all on-demand would be {money(c['all_on_demand'])}: saved {c['savings_ratio'] * 100:.0f}%")
    return 0
