"""`tidal nodepool`: elastic node pools with capacity.md's knobs, their nodes and cost, and injected preemptions."""

from __future__ import annotations

import argparse

from tidal.commands.common import add_output, client, clock_time, emit, key_values, labels_text, money, table
from tidal.errors import UserError
from tidal.states import NodeState

EXAMPLE = """example (the reference procedure's node pool: preemptible, cost-optimized, 30% pay-as-you-go,
supplemental pay-as-you-go):
  tidal nodepool create gpu-pool --label inference=tensorflow --spot --on-demand-percentage 30 \\
    --compensate-with-on-demand --spot-remedy --multi-zone cost-optimized --max 10
  tidal nodepool get gpu-pool -o json
  tidal nodepool preempt gpu-pool --count 1 --notice 120
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLE
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    p = sub.add_parser("create", help="create a node pool", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="the pool's name")
    p.add_argument("--label", action="append", default=[], help="node label K=V (repeatable)")
    p.add_argument("--spot", action="store_true", help="preemptible (spot) billing")
    p.add_argument("--policy", help="capacity policy: ess (default with --spot), tidal, tidal-hedge, spothedge, "
                                    "spothedge-lean, spot-only, even-spread, round-robin, on-demand")
    p.add_argument("--policy-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the policy, e.g. outage_value=40 for tidal-hedge (repeatable)")
    p.add_argument("--on-demand-base", type=int, default=0, help="the first N nodes are on-demand")
    p.add_argument("--on-demand-percentage", type=int, default=None,
                   help="share of on-demand nodes above the base (default 100; 0-100)")
    p.add_argument("--spot-pools", type=int, default=1, help="spread spot over the N cheapest zones/types")
    p.add_argument("--compensate-with-on-demand", action="store_true",
                   help="on-demand when spot cannot be created (supplemental pay-as-you-go)")
    p.add_argument("--spot-remedy", action="store_true", help="replace a spot node as soon as its reclaim notice comes")
    p.add_argument("--multi-zone", choices=["cost-optimized", "balance", "priority"], default="priority",
                   help="how nodes spread over zones (ESS's multi-zone policy)")
    p.add_argument("--provider", default="", help="the cloud the pool lives in (default: the catalog's first, "
                                                  "or the one its instance types or zones are in)")
    p.add_argument("--region", default="", help="the region the pool lives in, e.g. cn-hangzhou, us-east-1 "
                                                "(default: as --provider); a pool never mixes regions")
    p.add_argument("--instance-types", default="", help="T1,T2,T3 from the catalog, all in the pool's region "
                                                        "(default: every type there)")
    p.add_argument("--zones", default="", help="Z1,Z2 of the pool's region (default: all of them)")
    p.add_argument("--min", type=int, default=0, dest="min_nodes", help="fewest nodes")
    p.add_argument("--max", type=int, default=10, dest="max_nodes", help="most nodes")
    p.add_argument("--scale-in-after", type=float, default=600.0,
                   help="seconds a node stays empty before it goes (default 600)")
    p.add_argument("--notice", type=float, default=None,
                   help="spot reclaim notice in seconds (default: the provider's: AWS 120, GCP 30, Alibaba 300)")
    p.add_argument("--spot-trace", default="", help="a spot-availability trace directory replayed against the pool")
    add_output(p)
    p = sub.add_parser("list", help="list node pools")
    add_output(p)
    p = sub.add_parser("get", help="show a node pool, its nodes and cost")
    p.add_argument("name", help="the pool")
    add_output(p)
    p = sub.add_parser("delete", help="delete an empty node pool")
    p.add_argument("name", help="the pool")
    p = sub.add_parser("preempt", help="inject a spot preemption (reclaim notice, then the node goes)")
    p.add_argument("name", help="the pool")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--node", help="the node to preempt")
    g.add_argument("--count", type=int, default=1, help="how many of the pool's spot nodes to preempt")
    p.add_argument("--notice", type=float, default=None, help="seconds of notice (default: the pool's)")


def _spec(args) -> dict:
    pct = args.on_demand_percentage
    if pct is None:
        pct = 100 if not args.spot else 0
    body = {"name": args.name, "labels": key_values(args.label, "--label"), "spot": args.spot,
            "on_demand_base": args.on_demand_base, "on_demand_percentage": pct, "spot_pools": args.spot_pools,
            "compensate_with_on_demand": args.compensate_with_on_demand, "spot_remedy": args.spot_remedy,
            "multi_zone": args.multi_zone, "instance_types": args.instance_types, "zones": args.zones,
            "min_nodes": args.min_nodes, "max_nodes": args.max_nodes,
            "scale_in_after_seconds": args.scale_in_after, "spot_trace": args.spot_trace}
    for key, value in (("provider", args.provider), ("region", args.region), ("notice_seconds", args.notice)):
        if value not in ("", None):
            body[key] = value
    if args.policy:
        body["policy"] = args.policy
    if args.policy_param:
        body["policy_params"] = key_values(args.policy_param, "--policy-param")
    return body


def _summary_row(p: dict) -> list:
    nodes = [n for n in p["nodes"] if n["state"] != NodeState.TERMINATED]
    od = sum(1 for n in nodes if n["billing"] == "on-demand")
    return [p["name"], labels_text(p["labels"]), p["spec"]["policy"],
            len(nodes), od, len(nodes) - od, money(p["cost"]["total"]), f"{p['cost']['savings_ratio'] * 100:.0f}%"]


HEADERS = ["NAME", "LABELS", "POLICY", "NODES", "ON-DEMAND", "SPOT", "COST", "SAVED"]


def run(args) -> int:
    api = client()
    if args.action == "create":
        p = api.post("/nodepools", _spec(args))
        if not emit(p, args.output):
            s = p["spec"]
            print(f"node pool {p['name']} created in {s.get('provider', '')} {s.get('region', '')}: labels "
                  f"{labels_text(p['labels'])}, policy {s['policy']}, "
                  f"{'spot' if s['spot'] else 'on-demand'}, {s['min_nodes']}-{s['max_nodes']} nodes")
        return 0
    if args.action == "list":
        pools = api.get("/nodepools")
        if not emit(pools, args.output):
            table(HEADERS, [_summary_row(p) for p in pools])
        return 0
    if args.action == "get":
        p = api.get(f"/nodepools/{args.name}")
        if emit(p, args.output):
            return 0
        table(HEADERS, [_summary_row(p)])
        s = p["spec"]
        if s.get("region"):
            print(f"region: {s.get('provider', '')} {s['region']}, reclaim notice {s['notice_seconds']:g} s")
        print()
        table(["NODE", "ZONE", "INSTANCE TYPE", "BILLING", "STATE", "PRICE/H", "LAUNCHED"],
              [[n["name"], n["zone"], n["instance_type"], n["billing"], n["state"],
                money(n["price_per_hour"]), clock_time(n["launched_at"])] for n in p["nodes"]])
        return 0
    if args.action == "delete":
        api.delete(f"/nodepools/{args.name}")
        print(f"node pool {args.name} deleted")
        return 0
    if args.action == "preempt":
        if args.count is not None and args.count < 1:
            raise UserError("--count must be at least 1")
        body = {"count": args.count, "notice": args.notice}
        if args.node:
            body["node"] = args.node
        out = api.post(f"/nodepools/{args.name}/preempt", body)
        print(f"preemption notice sent to {', '.join(out['preempted'])}")
        return 0
    raise UserError(f"unknown action {args.action!r}")
