"""`tidal console`: where the running control plane serves the web console (and open it in a browser)."""

from __future__ import annotations

import argparse
import os
import sys

import orjson

from tidal.control.home import Home
from tidal.errors import Unavailable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("examples:\n  tidal console\n  tidal console --open\n  tidal console -o json\n\n"
                     "The console is read-only; paste the API token ($TIDAL_HOME/token) into it to scale a\n"
                     "service or inject a preemption.")
    parser.add_argument("--open", action="store_true", help="open it in a web browser, where there is one")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text",
                        help="json: the URL and whether the console answers")


def console_url(env: dict | None = None) -> str:
    """The console's URL: under the control plane's API address (TIDAL_API, else TIDAL_HOME's address file)."""
    env = os.environ if env is None else env
    home = Home.from_env(env)
    api = env.get("TIDAL_API")
    if not api:
        addr = home.read_address()
        if not addr:
            raise Unavailable(f"the control plane is not running for {home.root} (start it with `tidal up`)")
        api = addr["api"]
    return api.rstrip("/") + "/console/"


def run(args: argparse.Namespace) -> int:
    if not os.environ.get("TIDAL_API"):
        from tidal.commands.common import same_context
        same_context(Home.from_env())  # the console of the context this command chose, or one line
    url = console_url()
    if args.output == "json":
        sys.stdout.write(orjson.dumps({"url": url}).decode() + "\n")
    else:
        print(url)
    if args.open:
        import webbrowser
        if not webbrowser.open(url):
            print("no web browser here: open the URL above yourself", file=sys.stderr)
    return 0
