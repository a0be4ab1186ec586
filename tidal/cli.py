"""The `tidal` command line: a registry of subcommands, each in the module of its concept."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import os
import re
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs keep their lines (they hold examples), and every flag's help ends with its default when it has
    one worth saying (not None, False or empty) and the help does not already name it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and not _empty(default) and "default" not in text.lower()
                and action.nargs != 0):
            text += (" " if text else "") + "(default: %(default)s)"
        return text


def _empty(default) -> bool:
    return default is None or default is False or default is argparse.SUPPRESS or default in ("", [], ())


def suggest(word: str, choices) -> str | None:
    """The closest of `choices` to a mistyped `word`, if any is close enough."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        if kwargs.get("formatter_class") in (None, argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # the usage line, one clear line with a suggestion, exit 2
        self.exit(2, self.format_usage() + f"{self.prog}: error: {message}{self._hint(message)}\n")

    def _hint(self, message: str) -> str:
        match = re.search(r"invalid choice: '([^']*)'", message)
        if match:
            for action in self._actions:
                if action.choices and message.startswith(f"argument {argparse._get_action_name(action)}"):
                    close = suggest(match.group(1), action.choices)
                    return f" (did you mean {close}?)" if close else ""
        return ""

    def unrecognized(self, extras: list[str]) -> None:
        """Unknown arguments of this (sub)command: name them and the closest flag."""
        flags = [s for a in self._actions for s in a.option_strings]
        hints = []
        for word in extras:
            close = suggest(word.split("=", 1)[0], flags) if word.startswith("-") else None
            if close:
                hints.append(f"{word}: did you mean {close}?")
        self.exit(2, self.format_usage() + f"{self.prog}: error: unrecognized arguments: {' '.join(extras)}"
                  + (f" ({'; '.join(hints)})" if hints else "") + "\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="tidal", description="Elastic model serving on spot and on-demand capacity.")
    parser.add_argument("--version", action="version", version=f"tidal {__version__}")
    parser.add_argument("--context", dest="tidal_context", metavar="NAME", default="",
                        help="the context this command acts on: local (this machine) or one from `tidal context "
                             "list` (default: the one `tidal context use` chose; TIDAL_CONTEXT=NAME does the same)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest subcommand's parser the arguments chose (`tidal serve get` -> serve get's parser)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if not subs or name not in subs[0].choices:
            return parser
        parser = subs[0].choices[name]


def _command(argv: list[str]) -> str | None:
    """The subcommand's name: the first word that is no option and no value of the global --context."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--context":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


@contextlib.contextmanager
def _context(name: str):
    """--context NAME: the same override as TIDAL_CONTEXT, for this command (and the processes it starts)."""
    if not name:
        yield
        return
    from tidal.backends.kubernetes.contexts import CONTEXT_ENV, ContextStore
    ContextStore.from_env().get(name)  # an unknown name: one line, before anything acts
    before = os.environ.get(CONTEXT_ENV)
    os.environ[CONTEXT_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CONTEXT_ENV, None)
        else:
            os.environ[CONTEXT_ENV] = before


def _main(argv: list[str]) -> int:
    command = _command(argv)
    parser = build_parser(command if command in COMMANDS else None)
    args, extras = parser.parse_known_args(argv)
    if extras:
        _chosen(parser, args).unrecognized(extras)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        with _context(args.tidal_context.strip()):
            return int(args._module.run(args) or 0)
    except (UserError, TidalError) as exc:
        print(f"tidal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            code = _main(argv)
        except SystemExit:  # --help and usage errors: what they printed must reach a closed pipe quietly too
            sys.stdout.flush()
            raise
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader went away (`tidal events | head`): Python's documented recipe, so that the interpreter's
        # last flush at exit does not complain either; 141 is what a shell reports for SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    raise SystemExit(main())
