"""Tests and benchmarks read nothing outside the repository, and results files keep no machine paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A path into a machine's folders rather than into the repository (the shared folder beside it included).
MACHINE = re.compile(r"""(?<![\w.])(/work/|/root/|/home/\w|/Users/\w|\.\./shared/|\.\./\.\./shared)""")
RESULT = re.compile(r"""(?<![\w.])(/work/|/root/|/home/\w|/Users/\w|/tmp/|\.\./shared/)""")


def _files(folder: str, *suffixes: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*") if p.suffix in suffixes and "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _files("tests", ".py") + _files("benchmarks", ".py"),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_code_reads_no_machine_path(path):
    if path == Path(__file__).resolve():
        return  # its examples of what the patterns catch are not paths it reads
    # A pattern that looks for machine paths (the docs test's) reads none.
    hits = [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if MACHINE.search(line) and "re.compile(" not in line]
    assert hits == []


@pytest.mark.parametrize("path", _files("benchmarks", ".json", ".md", ".csv"), ids=lambda p: str(p.relative_to(REPO)))
def test_results_keep_no_machine_path(path):
    hits = [f"{n}: {line.strip()[:120]}" for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if RESULT.search(line)]
    assert hits == []


def test_the_patterns_catch_what_they_are_for():
    for bad in ('"/work/shared/traces/spot"', "os.path.join(here, '../../../shared/traces')", "'/root/.cache/x'",
                '"trace": "/tmp/pytest-1/traces"'):
        assert RESULT.search(bad) or MACHINE.search(bad), bad
    for fine in ('"aws1"', "tmp_path / 'x'", "http://127.0.0.1:8501/v1/models", "tidal/sim/data/spot/aws1"):
        assert not MACHINE.search(fine) and not RESULT.search(fine), fine
