"""`tidal up --gateway-engine auto`: the edge only when its binary was built from the sources beside it."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from tidal.gateway.edge import auto_edge

REPO = Path(__file__).resolve().parents[2]


def sources(tmp_path: Path) -> Path:
    src = tmp_path / "edge"
    (src / "src" / "proxy").mkdir(parents=True)
    (src / "Cargo.toml").write_text("[package]\nname = \"tidal-edge\"\n")
    (src / "Cargo.lock").write_text("version = 4\n")
    (src / "src" / "main.rs").write_text("fn main() {}\n")
    (src / "src" / "proxy" / "mod.rs").write_text("// the proxy\n")
    return src


def built(tmp_path: Path, key: str | None) -> dict:
    tools = tmp_path / "tools"
    tools.mkdir()
    binary = tools / "tidal-edge"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    if key is not None:
        (tools / "tidal-edge.key").write_text(key + "\n")
    return {"TIDAL_TOOLS": str(tools)}


def script_key(src: Path) -> str:
    """The key as scripts/edge.sh computes it (the same shell pipeline)."""
    out = subprocess.run(["bash", "-c", "cat Cargo.toml Cargo.lock $(find src -name '*.rs' | LC_ALL=C sort) | "
                          "sha256sum | cut -c1-16"], cwd=src, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_key_is_the_build_scripts():
    """scripts/edge.sh's own pipeline over the repository's edge/ gives the key auto_edge computes."""
    from tidal.gateway.edge import _sources_key
    script = (REPO / "scripts" / "edge.sh").read_text()
    pipeline = script.split('key="$(cd "$root/edge" && ', 1)[1].split(')"\n', 1)[0]
    out = subprocess.run(["bash", "-c", pipeline], cwd=REPO / "edge", capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _sources_key(REPO / "edge")


@pytest.mark.parametrize("case, key, found", [
    ("built from these sources", "same", True),
    ("built from other sources (before an update)", "0123456789abcdef", False),
    ("built without a key", None, False),
])
def test_auto_takes_only_an_edge_built_from_these_sources(tmp_path, case, key, found):
    src = sources(tmp_path)
    env = built(tmp_path, script_key(src) if key == "same" else key)
    assert (auto_edge(env, src) is not None) is found, case


def test_auto_without_a_binary_or_without_sources_is_python(tmp_path):
    src = sources(tmp_path)
    assert auto_edge({"TIDAL_TOOLS": str(tmp_path / "none")}, src) is None
    env = built(tmp_path, hashlib.sha256(b"x").hexdigest()[:16])
    assert auto_edge(env, tmp_path / "no-sources") is None  # an installed package: nothing to check it against
