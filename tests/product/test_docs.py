"""The user guide builds with MkDocs in strict mode (a broken link or a page left out of the nav fails the build),
and its words are a user's: no machine paths, nothing about how the product was made."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("mkdocs", reason="the docs need the dev extra (pip install tidal[dev]: mkdocs-material)")
pytest.importorskip("material", reason="the docs need the dev extra (pip install tidal[dev]: mkdocs-material)")


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, timeout=180, env=env)


def test_the_site_builds_strictly(tmp_path):
    done = _build(REPO, tmp_path / "site")
    assert done.returncode == 0, done.stderr[-4000:]
    for page in ("index.html", "guide/install/index.html", "guide/reference/commands/index.html",
                 "guide/reference/metrics/index.html", "capacity-policy/index.html", "CONTRACTS/index.html"):
        assert (tmp_path / "site" / page).is_file(), page


@pytest.mark.parametrize("damage,message", [
    ("[the console](howto/no-such-page.md)", "no-such-page.md"),
    ("[metrics](reference/metrics.md#no-such-heading)", "no-such-heading"),
])
def test_a_broken_link_fails_the_build(tmp_path, damage, message):
    root = tmp_path / "copy"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    page = root / "docs" / "guide" / "concepts.md"
    page.write_text(page.read_text(encoding="utf-8") + f"\nSee {damage}.\n", encoding="utf-8")
    done = _build(root, tmp_path / "site")
    assert done.returncode != 0 and message in done.stderr


def test_every_page_is_in_the_nav(tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    (root / "docs" / "guide" / "orphan.md").write_text("# An orphan\n", encoding="utf-8")
    done = _build(root, tmp_path / "site")
    assert done.returncode != 0 and "orphan.md" in done.stderr


# Words a user's guide has no use for: how the product was built, and this machine's folders.
WORDS = re.compile(r"\b(seed|session|sessions|the issue|issue's|compass|goal)\b", re.IGNORECASE)
MACHINE_PATHS = re.compile(r"/work/|/root/|\.\./shared")


@pytest.mark.parametrize("page", sorted((REPO / "docs").rglob("*.md")) + [REPO / "mkdocs.yml"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_the_words_are_a_users(page):
    text = page.read_text(encoding="utf-8")
    assert MACHINE_PATHS.findall(text) == []
    # Code is left out (a policy's `seed` parameter, `--seed`, `AWS_SESSION_TOKEN`), and so is the prose
    # about random seeds: the words below are about how Tidal was made, which its guide never speaks of.
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"policy seeds|window and seed|\(seed \d+\)", "", text)
    hits = [m.group(0) for m in WORDS.finditer(text)]
    assert hits == []
