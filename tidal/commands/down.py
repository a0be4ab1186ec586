"""`tidal down`: stop the control plane; its replicas drain and stop, the desired state stays for the next `up`."""

from __future__ import annotations

import argparse

from tidal.control.daemon import stop_background
from tidal.control.home import Home
from tidal.gateway.supervisor import GatewayFiles, stop_orphan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "example:\n  tidal down"
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to stop")


def run(args) -> int:
    home = Home.from_env()
    if stop_background(home, args.timeout):
        print("control plane stopped")
    else:
        print(f"no control plane is running for {home.root}")
        # A control plane killed outright leaves its gateway serving: `down` stops it too.
        pid = stop_orphan(GatewayFiles.in_home(home.root), args.timeout)
        if pid is not None:
            print(f"gateway stopped (process {pid})")
    return 0
