"""`tidal serve update --canary-traffic-percent`, `serve traffic`, `serve promote`, `serve rollback`: safe rollouts.

`serve traffic` also takes arena's `serve traffic-router-split` flags (`--name`,
`--version-weight VERSION:WEIGHT`, and the older `--versions 1,2 --weights 70,30`),
under arena's names for the command too.
"""

from __future__ import annotations

import argparse

from tidal.commands.common import emit, key_values, table
from tidal.errors import UserError

ARENA_TRAFFIC = ("traffic-router-split", "traffic-split", "trs")
ACTIONS = ("traffic", *ARENA_TRAFFIC, "promote", "rollback")
# `serve update` flags a canary may carry (the rest change the service itself).
CANARY_FLAGS = ("version", "image", "model_path", "version_policy", "env")

TRAFFIC_EXAMPLE = """examples:
  tidal serve traffic bert bert-1=90 bert-2=10
  tidal serve traffic-router-split --name bert --version-weight 1:90 --version-weight 2:10
"""


def add_update_flags(p: argparse.ArgumentParser) -> None:
    """The canary flags of `serve update` (with --canary-traffic-percent the change goes to a new release)."""
    g = p.add_argument_group("rollout (with --canary-traffic-percent: a new release beside the stable one)")
    g.add_argument("--canary-traffic-percent", "--canaryTrafficPercent", dest="canary_traffic_percent", type=int,
                   help="start the change as a canary release with this percent of the requests (0: reached only "
                        "with the x-tidal-release header)")
    g.add_argument("--version", help="the new version: the canary's (default: now, as YYYYMMDDhhmmss), or without "
                                     "--canary-traffic-percent the service's own (its replicas roll)")
    g.add_argument("--steps", help="percents the canary moves through, e.g. 10,25,50,100 (each bakes --bake, "
                                   "then the last promotes it); without it, weights are set by hand")
    g.add_argument("--bake", help="how long each step runs with its guards passing, e.g. 5m (default: 5m)")
    g.add_argument("--mirror-percent", dest="mirror_percent", type=int,
                   help="also copy this percent of the requests to the canary, dropping its answers (shadow)")
    g.add_argument("--max-error-rate", dest="max_error_rate", type=float,
                   help="roll back when the canary's share of 5xx answers is above this (default: 0.05)")
    g.add_argument("--max-p90", dest="max_p90",
                   help="roll back when the canary's p90 latency is above this, e.g. 250ms")
    g.add_argument("--max-p90-ratio", dest="max_p90_ratio", type=float,
                   help="roll back when the canary's p90 is more than this many times the stable one's (default: 2)")
    g.add_argument("--max-class-shift", dest="max_class_shift", type=float,
                   help="for classifiers: roll back when a class's share of the answers differs from the stable "
                        "release's by more than this, e.g. 0.1")
    g.add_argument("--min-requests", dest="min_requests", type=int,
                   help="canary answers needed before its guards judge (default: 20)")


def add_actions(sub) -> None:
    p = sub.add_parser("traffic", aliases=list(ARENA_TRAFFIC), epilog=TRAFFIC_EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="set each release's percent of a service's requests (they sum to 100)")
    p.add_argument("service", nargs="?", help="the service")
    p.add_argument("weights", nargs="*", metavar="RELEASE=PERCENT",
                   help="a release (or its version) and its percent, e.g. bert-2=10")
    p.add_argument("--name", dest="arena_name", help="the service (arena's flag)")
    p.add_argument("-v", "--version-weight", dest="version_weight", action="append",
                   help="VERSION:WEIGHT (arena's flag, repeatable)")
    p.add_argument("--versions", help="versions, e.g. 1,2 (arena's older flag, with --weights)")
    p.add_argument("--weights", dest="weight_list", help="their percents, e.g. 90,10 (with --versions)")
    _output(p)
    for action, what in (("promote", "make the canary the service's release (the old release's replicas drain)"),
                         ("rollback", "send every request back to the stable release and stop the canary")):
        p = sub.add_parser(action, help=what)
        p.add_argument("name", help="the service")
        _output(p)


def _output(p) -> None:
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                   help="output format (default: table)")


def start(api, args) -> dict:
    """`serve update NAME --canary-traffic-percent N ...`."""
    for flag in ("replicas", "gpus", "cpu", "memory"):
        if getattr(args, flag, None) is not None:
            raise UserError(f"--{flag} changes the service itself, not a canary: run it without "
                            f"--canary-traffic-percent")
    changes: dict = {}
    for k in ("version", "image", "model_path"):
        if getattr(args, k) is not None:
            changes[k] = getattr(args, k)
    if args.version_policy is not None:
        from tidal.models.config import VersionPolicy
        changes["version_policy"] = VersionPolicy.parse(args.version_policy).model_dump(mode="json")
    if args.env:
        changes["env"] = key_values(args.env, "--env")
    body: dict = {"changes": changes, "canary_traffic_percent": args.canary_traffic_percent}
    for k, v in (("steps", args.steps), ("bake", args.bake), ("mirror", args.mirror_percent)):
        if v is not None:
            body[k] = v
    guards = {k: v for k, v in (("max_error_rate", args.max_error_rate), ("max_p90_ratio", args.max_p90_ratio),
                                ("max_class_shift", args.max_class_shift), ("min_requests", args.min_requests))
              if v is not None}
    if args.max_p90 is not None:
        from tidal.control.releases import parse_duration
        try:
            guards["max_p90_seconds"] = parse_duration(args.max_p90)
        except ValueError as exc:
            raise UserError(f"--max-p90: {exc}") from None
    if guards:
        body["guards"] = guards
    return api.post(f"/services/{args.name}/rollout", body)


def traffic_request(args) -> tuple[str, dict[str, int]]:
    """(service, {release or version: percent}) from either spelling."""
    name = args.service or args.arena_name
    if args.service and args.arena_name and args.service != args.arena_name:
        raise UserError(f"two services named: {args.service} and --name {args.arena_name}")
    if not name:
        raise UserError("name the service: tidal serve traffic NAME REL=90 REL2=10")
    pairs: list[tuple[str, str]] = []
    for item in args.weights:
        rel, sep, w = item.partition("=")
        if not sep:
            raise UserError(f"invalid weight {item!r}: expected RELEASE=PERCENT, e.g. {name}-2=10")
        pairs.append((rel.strip(), w))
    for item in args.version_weight or ():
        for part in item.split(","):
            rel, sep, w = part.partition(":")
            if not sep:
                raise UserError(f"invalid --version-weight {part!r}: expected VERSION:WEIGHT, e.g. 2:10")
            pairs.append((rel.strip(), w))
    if args.versions or args.weight_list:
        versions = [v.strip() for v in (args.versions or "").split(",") if v.strip()]
        weights = [w.strip() for w in (args.weight_list or "").split(",") if w.strip()]
        if len(versions) != len(weights):
            raise UserError(f"--versions names {len(versions)} release(s) and --weights gives {len(weights)} weight(s)")
        pairs += list(zip(versions, weights))
    if not pairs:
        raise UserError("give each release's percent, e.g. tidal serve traffic NAME REL=90 REL2=10")
    out: dict[str, int] = {}
    for rel, w in pairs:
        try:
            percent = int(w.strip().rstrip("%"))
        except ValueError:
            raise UserError(f"invalid weight {w!r} for {rel}: expected a whole percent") from None
        if rel in out:
            raise UserError(f"release {rel} is given twice")
        out[rel] = percent
    return name, out


def run(api, args) -> int:
    if args.action in ("traffic", *ARENA_TRAFFIC):
        name, weights = traffic_request(args)
        s = api.put(f"/services/{name}/traffic", {"weights": weights})
    else:
        s = api.post(f"/services/{args.name}/{args.action}", {})
    if not emit(s, args.output):
        print(s["message"])
        show(s)
    return 0


def show(s: dict) -> None:
    """A service's releases: weights, replicas, guard counts and the rollout's progress (after `serve get`)."""
    r = s.get("rollout")
    if not r:
        return
    print(f"ROLLOUT: {r['progress']}")
    rows = []
    for rel in r["releases"]:
        c = rel.get("counts") or {}
        errors = f"{c['errors']}/{c['requests']}" if c else "-"
        p90 = f"{c['p90'] * 1000:.0f}ms" if c.get("p90") is not None else "-"
        rows.append([rel["name"], f"{rel['weight']}%", f"{rel['ready']}/{rel['replicas']}", errors, p90])
    table(["RELEASE", "WEIGHT", "READY", "ERRORS", "P90"], rows)
