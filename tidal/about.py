"""What this Tidal is: its version and its extras, both written once, in pyproject.toml.

An installed wheel answers from its metadata (which pyproject.toml wrote); a source checkout reads
pyproject.toml itself, so an editable install whose metadata predates a version bump still tells the truth.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

DIST = "tidal"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_PLATFORM = re.compile(r"""sys_platform\s*(==|!=)\s*["']([^"']+)["']""")


@dataclass(frozen=True)
class About:
    version: str
    requires: tuple[str, ...]  # the distributions every install needs on this platform
    extras: dict[str, tuple[str, ...]]  # extra -> the distributions it adds, in declaration order
    source: str  # "metadata" (installed), "pyproject.toml" (a checkout) or "unknown"


def requirement_name(requirement: str) -> str:
    """`moto[server]>=5; extra == "dev"` -> `moto` (the distribution a requirement names)."""
    match = _REQUIREMENT.match(requirement)
    return match.group(1) if match else requirement.strip()


def _needed_here(requirement: str) -> bool:
    """False for a requirement whose sys_platform marker excludes this platform (uvloop on Windows)."""
    match = _PLATFORM.search(requirement)
    return not match or (sys.platform == match.group(2)) == (match.group(1) == "==")


def _checkout() -> About | None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if not pyproject.is_file():
        return None
    import tomllib
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if project.get("name") != DIST or not project.get("version"):
        return None  # some other project's pyproject.toml beside an installed package
    extras = {name: tuple(requirement_name(r) for r in reqs)
              for name, reqs in project.get("optional-dependencies", {}).items()}
    requires = tuple(requirement_name(r) for r in project.get("dependencies", []) if _needed_here(r))
    return About(str(project["version"]), requires, extras, "pyproject.toml")


def _installed() -> About:
    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        return About("0+unknown", (), {}, "unknown")
    requires: list[str] = []
    extras: dict[str, list[str]] = {name: [] for name in dist.metadata.get_all("Provides-Extra") or []}
    for requirement in dist.requires or []:
        marker = _EXTRA.search(requirement)
        if marker:
            extras.setdefault(marker.group(1), []).append(requirement_name(requirement))
        elif _needed_here(requirement):
            requires.append(requirement_name(requirement))
    return About(dist.version, tuple(requires), {k: tuple(v) for k, v in extras.items()}, "metadata")


@lru_cache(maxsize=1)
def about() -> About:
    return _checkout() or _installed()


def version() -> str:
    return about().version
