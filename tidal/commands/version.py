"""`tidal version`: Tidal's version (the one `tidal --version` prints), Python's, and the model runtimes installed."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata
from typing import Callable, Optional

from tidal.commands.common import add_output, emit

# The runtimes a model server can load models with, by distribution name (what `pip` installed).
RUNTIMES = ("onnxruntime", "onnx", "tensorflow", "tensorflow-serving-api")

DistVersion = Callable[[str], Optional[str]]


def dist_version(name: str) -> str | None:
    """The installed version of a distribution, or None; reads metadata only, imports nothing."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def report(installed: DistVersion = dist_version, python: str | None = None, system: str | None = None) -> dict:
    from tidal.about import version
    return {
        "tidal": version(),
        "python": python or platform.python_version(),
        "platform": system or f"{platform.system()} {platform.machine()}",
        "runtimes": {name: installed(name) for name in RUNTIMES},
    }


def lines(doc: dict) -> list[str]:
    runtimes = ", ".join(f"{name} {v}" for name, v in doc["runtimes"].items() if v) or "none"
    missing = [name for name, v in doc["runtimes"].items() if not v]
    return [f"tidal {doc['tidal']}",
            f"python {doc['python']} ({doc['platform']})",
            f"runtimes: {runtimes}" + (f" (not installed: {', '.join(missing)})" if missing else "")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "example:\n  tidal version\n  tidal version -o json\n  tidal doctor   # what else is installed"
    add_output(parser, ("table", "json"))


def run(args: argparse.Namespace) -> int:
    doc = report()
    if not emit(doc, args.output):
        print("\n".join(lines(doc)))
    return 0
