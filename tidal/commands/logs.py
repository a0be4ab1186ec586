"""`tidal logs`: a replica's model-server log (or the latest replicas' of a service), optionally followed."""

from __future__ import annotations

import argparse
import time

from tidal.commands.common import client

# Each poll asks for this many last lines per replica; a replica writing more between two polls loses the excess
# from the display (the log file keeps it).
FOLLOW_WINDOW = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "example:\n  tidal logs bert-tfserving --tail 20\n  tidal logs bert-tfserving -f"
    parser.add_argument("name", help="a service or a replica")
    parser.add_argument("--tail", type=int, default=100, help="the last this many lines of each replica")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="how often -f asks")


def new_lines(seen: list[str], now: list[str], whole: bool = False) -> list[str]:
    """The lines of `now` (a log's last lines) that come after `seen` (its last lines at the previous poll).

    `whole`: `seen` was the entire log (the API sent fewer lines than asked), so a `now` that starts with it
    simply grew. Otherwise the two windows overlap where the log had not moved on: the longest start of `now`
    that `seen` ends with (the window slid), or a run of `now` equal to all of `seen` (the window grew); with
    repeated lines the most overlap wins. Nothing in common (the replica started over): all of `now` is new.
    """
    if whole and now[:len(seen)] == seen:
        return now[len(seen):]
    for j in range(len(now), 0, -1):
        k = min(j, len(seen))
        if k and now[j - k:j] == seen[-k:]:
            return now[j:]
    return now


def _print(entries: list[dict], seen: dict[str, tuple[list[str], bool]], asked: int, many: bool,
           shown: list[str | None]) -> None:
    for entry in entries:
        replica = entry["replica"]
        if replica in seen:
            before, whole = seen[replica]
            lines = new_lines(before, entry["lines"], whole)
        else:
            lines = entry["lines"]
        seen[replica] = (list(entry["lines"]), len(entry["lines"]) < asked)
        if lines and many and shown[0] != replica:
            print(f"==> {replica} ({entry['state']}) <==")
            shown[0] = replica
        for line in lines:
            print(line, flush=True)


def run(args) -> int:
    api = client()
    out = api.get(f"/logs/{args.name}", tail=args.tail)
    seen: dict[str, tuple[list[str], bool]] = {}  # replica -> (its last lines, whether that was all its log)
    many = len(out["logs"]) > 1
    shown: list[str | None] = [None]
    _print(out["logs"], seen, args.tail, many, shown)
    if not args.follow:
        return 0
    try:
        while True:
            time.sleep(args.interval)
            out = api.get(f"/logs/{args.name}", tail=FOLLOW_WINDOW)
            _print(out["logs"], seen, FOLLOW_WINDOW, many or len(out["logs"]) > 1, shown)
    except KeyboardInterrupt:
        return 0
