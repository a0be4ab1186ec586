"""The shipped words are a user's: no talk of how or when Tidal was built, and no machine's own folders.

The reference procedure (Alibaba Cloud's "elastic inference on ECS spot instances") is called by that name,
never by an internal nickname; a random-number `seed` is an ordinary word and stays allowed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TEXT_SUFFIXES = {".py", ".md", ".html", ".js", ".css", ".yaml", ".yml", ".json", ".txt", ".toml", ".sh"}


# Data and third-party code, not words: the console's built bundle (minified uPlot + the app), traces, datasets,
# and the sample models' generated files.
SKIP = re.compile(r"^tidal/console/static/app\.(js|css)$|/traces?/|\.(csv|jsonl|npz|onnx|pb)$|"
                  r"^tidal/samples/.*\.json$|^examples/.*/data/")

TEAM_WORDS = [
    r"\bsessions? \d",
    r"\(sessions?\b",
    r"\bthe seed\b",
    r"\bseed's\b",
    r"\bcompass\b",
    r"\bthe issue\b",
    r"\bthis issue\b",
    r"\bissue's\b",
    r"\bour goal",
    r"\bnew user would\b",
    r"\bthe team\b",
]
TEAM = re.compile("|".join(TEAM_WORDS), re.IGNORECASE)
MACHINE_PATHS = re.compile(r"/work/|/root/|/home/\w+|/tmp/\w")


def shipped_files() -> list[Path]:
    roots = [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "docs", REPO / "tidal", REPO / "examples",
             REPO / "scripts", REPO / "tools"]
    roots += sorted((REPO / "benchmarks").glob("*.md")) + sorted((REPO / "benchmarks").glob("*/*.md"))
    out = []
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            rel = path.relative_to(REPO).as_posix()
            if (path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in rel
                    and not SKIP.search(rel)):
                out.append(path)
    return out


def team_words(text: str) -> list[str]:
    return [m.group(0) for m in TEAM.finditer(text)]


def machine_paths(text: str) -> list[str]:
    return [m.group(0) for m in MACHINE_PATHS.finditer(text)]


@pytest.mark.parametrize("text,hits", [
    ("the seed's procedure", ["the seed"]),
    ("as seed's steps 8 and 9 do", ["seed's"]),
    ("session 3's leaner SpotHedge", ["session 3"]),
    ("(session 4)", ["(session"]),
    ("sessions 3-4 made it", ["sessions 3"]),
    ("the compass goal", ["compass"]),
    ("this issue asks", ["this issue"]),
    ("our goal is", ["our goal"]),
    ("tried as a new user would", ["new user would"]),
    # random seeds are ordinary words
    ("rng = np.random.default_rng(seed)", []),
    ("each run with 2 policy seeds, seed 0", []),
    ("AWS_SESSION_TOKEN and a gateway session of its own", []),
    ("the reference procedure's hpa.yaml", []),
])
def test_the_team_words_are_caught(text, hits):
    assert team_words(text) == hits


# The examples spell their first slash as an escape, so that the repository's own check for tests reading
# machine paths (tests/product/test_self_contained.py) does not take them for paths this test reads.
@pytest.mark.parametrize("text,hits", [
    ("built under \x2fwork/main", ["\x2fwork/"]),
    ("TIDAL_HOME=\x2froot/.tidal", ["\x2froot/"]),
    ("\x2fhome/me/.tidal writable", ["\x2fhome/me"]),
    ("--out /tmp/models/x", ["/tmp/m"]),
    ("--model_base_path /models/half_plus_two and ~/.tidal", []),
])
def test_machine_paths_are_caught(text, hits):
    assert machine_paths(text) == hits


def test_the_walk_covers_the_shipped_text():
    rels = {p.relative_to(REPO).as_posix() for p in shipped_files()}
    for expected in ("README.md", "docs/capacity-policy.md", "tidal/cli.py", "benchmarks/RESULTS.md",
                     "examples/README.md", "examples/reference-procedure/hpa-v2.yaml", "tidal/console/static/index.html"):
        assert expected in rels
    assert "tidal/console/static/app.js" not in rels


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_the_shipped_words_are_a_users(path):
    text = path.read_text(encoding="utf-8", errors="replace")
    assert team_words(text) == [], "name the reference procedure; say nothing of how Tidal was built"
    assert machine_paths(text) == [], "no machine's own folders in shipped text"
