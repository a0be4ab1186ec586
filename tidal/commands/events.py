"""`tidal events`: the event log (scaling, placement, preemptions, launches), optionally followed."""

from __future__ import annotations

import argparse
import time

from tidal.commands.common import add_output, client, clock_time, emit, table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "example:\n  tidal events --limit 50\n  tidal events -o json\n  tidal events -w"
    parser.add_argument("--limit", type=int, default=200, help="the latest this many events")
    parser.add_argument("--object", help="only events of this object (e.g. node/gpu-pool-spot-3 or its name)")
    parser.add_argument("-w", "--watch", action="store_true", help="keep printing new events")
    add_output(parser, ("table", "json"))


def run(args) -> int:
    api = client()
    events = api.get("/events", limit=args.limit, object=args.object)
    if args.output == "json":
        emit([{k: e[k] for k in ("time", "kind", "object", "message")} for e in events], "json")
        return 0
    table(["TIME", "KIND", "OBJECT", "MESSAGE"], [[clock_time(e["time"]), e["kind"], e["object"], e["message"]]
                                                 for e in events])
    last = events[-1]["id"] if events else 0
    while args.watch:
        time.sleep(1.0)
        for e in api.get("/events", since=last, limit=1000, object=args.object):
            print(f"{clock_time(e['time'])}  {e['kind']}  {e['object']}  {e['message']}", flush=True)
            last = e["id"]
    return 0
