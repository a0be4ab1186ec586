"""The `tidal` command line: a registry of subcommands, each in the module of its concept."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from tidal import __version__
from tidal.errors import TidalError, UserError

# Subcommand -> module. Each module defines `add_arguments(parser)` and `run(args) -> int`,
# and is imported only when its command runs, so `tidal --help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "model-server": ("tidal.server.main", "run one model server (TF Serving's flags)"),
    "gateway": ("tidal.gateway.cli", "run the gateway on its own, with services from a routes file"),
    "simulate": ("tidal.sim.cli", "simulate capacity policies on spot-availability traces"),
    "bench": ("tidal.bench.cli", "stress-test a model endpoint: open-loop rate or profile, or fixed concurrency"),
    "console": ("tidal.console.cli", "print the web console's URL (--open: open it in a browser)"),
    "demo": ("tidal.demo", "run the reference procedure end to end on this machine (--quick: a short run)"),
    "up": ("tidal.commands.up", "start the control plane (API, gateway, reconcile loop)"),
    "down": ("tidal.commands.down", "stop the control plane"),
    "serve": ("tidal.commands.serve", "serve a model (arena's flags), list/get/delete/update services"),
    "nodepool": ("tidal.commands.nodepool", "elastic node pools: create, list, get, delete, preempt"),
    "volume": ("tidal.commands.volume", "model volumes (the PV/PVC step)"),
    "apply": ("tidal.commands.apply", "apply the reference procedure's pvc.yaml / hpa.yaml (and Tidal's own documents)"),
    "autoscale": ("tidal.commands.autoscale", "autoscale a service on its QPS (an HPA without YAML)"),
    "top": ("tidal.commands.top", "services' traffic, nodes and cost"),
    "events": ("tidal.commands.events", "the event log"),
    "logs": ("tidal.commands.logs", "a replica's model-server log"),
    "version": ("tidal.commands.version", "Tidal's version, Python's and the model runtimes'"),
    "doctor": ("tidal.commands.doctor", "what is installed: runtimes, extras, GPUs, ports, TIDAL_HOME, control plane"),
    "context": ("tidal.commands.context", "where commands act: this machine (local) or a Kubernetes cluster"),
    "export": ("tidal.commands.export", "a service as Kubernetes manifests (arena's names), for GitOps"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2, never a traceback
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="tidal", description="Elastic model serving on spot and on-demand capacity.")
    parser.add_argument("--version", action="version", version=f"tidal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except (UserError, TidalError) as exc:
        print(f"tidal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
