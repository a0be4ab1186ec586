"""The published spot traces ship with Tidal: loaded by name or by folder, byte for byte the artifact's files."""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

from tidal.cli import main
from tidal.errors import UserError
from tidal.sim import traces

DATA = Path(str(resources.files("tidal.sim").joinpath("data", "spot")))

# sha256 of the files as the SpotHedge artifact publishes them (data/AWS1, data/AWS2 of MaoZiming/spothedge_ae).
PUBLISHED = {
    "aws1/us-east-1f_v100_1.json": "4deffd1fed38ee645a734d39699b2a5071b2072b64e6ffb13dc776a47767b2f3",
    "aws1/us-east-2a_v100_1.json": "78b7389019848da064cd7edf05913e7c857dcf21a38b34432d59059cf03c4116",
    "aws1/us-west-2c_v100_1.json": "5a1693c93e3e862ec0fdb65db5af9359af482b579bd523c30fdb855df641202b",
    "aws2/us-east-2b_v100_1.json": "fa1f117fd25696aa36250d73f4a47954a281c04243cadbe47074b9ae4a70659f",
    "aws2/us-west-2a_v100_1.json": "ebcd5ff5a888189e7e922ccbe86444759385278387483bd7e090dbd57c30ef3d",
    "aws2/us-west-2c_v100_1.json": "5f9ff6ff83021343f69d14daa8737a06eba5105f70dbb34c205daf8baa16fab7",
}


def test_the_files_are_the_artifacts_and_name_their_source():
    shipped = {str(p.relative_to(DATA)): hashlib.sha256(p.read_bytes()).hexdigest() for p in DATA.glob("*/*.json")}
    assert shipped == PUBLISHED
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for cited in ("https://github.com/MaoZiming/spothedge_ae", "arXiv:2411.01438", "EuroSys 2025", "Ziming Mao"):
        assert cited in readme


@pytest.mark.parametrize("name,zones,gap,points", [
    ("aws1", ("us-east-1f_v100_1", "us-east-2a_v100_1", "us-west-2c_v100_1"), 300.0, (3156, 3156, 3156)),
    ("AWS1", ("us-east-1f_v100_1", "us-east-2a_v100_1", "us-west-2c_v100_1"), 300.0, (3156, 3156, 3156)),
    ("aws2", ("us-east-2b_v100_1", "us-west-2a_v100_1", "us-west-2c_v100_1"), 300.0, (3247, 3274, 3274)),
])
def test_load_by_name(name, zones, gap, points):
    trace = traces.load_spot_traces(name)
    assert trace.path == name  # what the caller gave, never where the package is installed
    assert (trace.zones, trace.gap_seconds, tuple(len(d) for d in trace.data)) == (zones, gap, points)


def test_a_folder_loads_the_same_and_wins_over_a_name(tmp_path, monkeypatch):
    by_name = traces.load_spot_traces("aws1")
    by_folder = traces.load_spot_traces(str(DATA / "aws1"))
    assert by_folder.zones == by_name.zones and all((a == b).all() for a, b in zip(by_folder.data, by_name.data))
    # A folder called aws1 in the working directory is what the user points at, not the published set.
    shutil.copy(DATA / "aws2" / "us-east-2b_v100_1.json", tmp_path / "only.json")
    (tmp_path / "aws1").mkdir()
    shutil.move(tmp_path / "only.json", tmp_path / "aws1" / "only.json")
    monkeypatch.chdir(tmp_path)
    assert traces.load_spot_traces("aws1").zones == ("only",)


@pytest.mark.parametrize("given", ["aws3", "nope/aws1", ""])
def test_an_unknown_name_is_one_clear_error(given):
    with pytest.raises(UserError, match=r"does not exist \(or name a published set: aws1, aws2\)"):
        traces.load_spot_traces(given)


def test_published_lists_the_sets():
    assert traces.published() == ("aws1", "aws2")


def test_simulate_by_name_keeps_no_machine_path(capsys):
    assert main(["simulate", "spot", "--traces", "aws2", "--policy", "on-demand", "--repeats", "1",
                 "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trace"] == "aws2" and doc["availability"] == 1.0 and doc["relative_cost"] == pytest.approx(1.0)
