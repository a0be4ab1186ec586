"""`tidal logs`: a replica's model-server log (or the latest replicas' of a service)."""

from __future__ import annotations

import argparse

from tidal.commands.common import client


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "example:\n  tidal logs bert-tfserving --tail 20"
    parser.add_argument("name", help="a service or a replica")
    parser.add_argument("--tail", type=int, default=100)


def run(args) -> int:
    out = client().get(f"/logs/{args.name}", tail=args.tail)
    for entry in out["logs"]:
        if len(out["logs"]) > 1:
            print(f"==> {entry['replica']} ({entry['state']}) <==")
        for line in entry["lines"]:
            print(line)
    return 0
