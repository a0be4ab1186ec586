"""scripts/kube-binaries.sh: prints the bin folder, builds nothing when the binaries match tools/kube, and says in
one line when Go is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.kube.cluster import BINARIES, BUILD_SCRIPT

pytestmark = pytest.mark.e2e


def test_a_second_run_builds_nothing_and_prints_only_the_folder(kube_bin):
    env = {**os.environ, "TIDAL_KUBE_BIN": str(kube_bin)}

    run = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)

    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [str(kube_bin)]
    assert run.stderr == ""
    assert all(os.access(kube_bin / name, os.X_OK) for name in BINARIES)


def test_without_go_it_fails_with_one_clear_line(tmp_path):
    # A PATH with bash and coreutils but no Go.
    path = tmp_path / "bin"
    path.mkdir()
    for tool in ("bash", "dirname", "cat", "awk", "sha256sum", "cut", "mkdir"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed")
        (path / tool).symlink_to(found)
    env = {"PATH": str(path), "HOME": str(tmp_path), "TIDAL_KUBE_BIN": str(tmp_path / "kube")}

    run = subprocess.run([str(path / "bash"), str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)

    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        "kube-binaries: Go is not installed; install Go >= 1.26 to build the Kubernetes test binaries"]
    assert not Path(tmp_path / "kube").exists()
