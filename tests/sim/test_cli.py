"""`tidal simulate spot|serve`: the JSON shape, the table, and one-line errors."""

from __future__ import annotations

import json

import pytest

from tidal.cli import main
from tidal.sim import synthetic


@pytest.fixture(scope="module")
def traces_dir(tmp_path_factory):
    trace = synthetic.markov_trace(synthetic.MarkovZones(points=400, mean_up_points=40, mean_down_points=10), 0)
    return synthetic.write_trace(trace, str(tmp_path_factory.mktemp("traces")))


def test_spot_json_shape(capsys, traces_dir):
    assert main(["simulate", "spot", "--traces", traces_dir, "--policy", "spothedge", "--repeats", "2",
                 "--ticks", "600", "-o", "json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    doc = json.loads(out)
    assert list(doc) == ["trace", "policy", "availability", "availability_std", "relative_cost",
                         "relative_cost_std", "repeats"]
    assert doc["trace"] == traces_dir and doc["policy"] == "spothedge" and len(doc["repeats"]) == 2
    for rep in doc["repeats"]:
        assert set(rep) == {"availability", "relative_cost"}
        assert 0 <= rep["availability"] <= 1 and 0 < rep["relative_cost"] < 2
    mean = sum(r["availability"] for r in doc["repeats"]) / 2
    assert doc["availability"] == pytest.approx(mean)


def test_spot_all_policies_table(capsys, traces_dir):
    assert main(["simulate", "spot", "--traces", traces_dir, "--policy", "all", "--repeats", "1", "--ticks", "240",
                 "--overprovision", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("on-demand", "even-spread", "round-robin", "spothedge", "ess", "optimal", "tidal"):
        assert f"\n{name} " in out


@pytest.mark.parametrize("argv,message", [
    (["--traces", "/nonexistent/dir", "--policy", "tidal"], "does not exist"),
    (["--traces", "TRACES", "--policy", "cheapest"], "unknown policy 'cheapest'"),
    (["--traces", "TRACES", "--policy", "tidal", "--repeats", "0"], "--repeats must be at least 1"),
    (["--traces", "TRACES", "--policy", "tidal", "--tick", "7"], "not a multiple of the tick"),
], ids=["missing dir", "unknown policy", "no repeats", "bad tick"])
def test_spot_errors_are_one_line(capsys, traces_dir, argv, message):
    argv = [traces_dir if a == "TRACES" else a for a in argv]
    assert main(["simulate", "spot", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_trace_file(tmp_path, capsys):
    (tmp_path / "zone.json").write_text("not json")
    assert main(["simulate", "spot", "--traces", str(tmp_path), "--policy", "tidal"]) == 2
    assert "bad trace file" in capsys.readouterr().err


def test_serve_json(capsys, traces_dir):
    assert main(["simulate", "serve", "--traces", traces_dir, "--policy", "tidal", "--hours", "1", "--rate", "25",
                 "--services", "2", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["services"] == 2 and doc["requests"] > 2 * 3600 * 25 * 0.9
    assert 0 <= doc["slo_attainment"] <= 1 and 0 < doc["relative_cost"] <= 1


def test_spot_policy_params(capsys, traces_dir):
    def tidal_cost(*extra):
        assert main(["simulate", "spot", "--traces", traces_dir, "--policy", "tidal-hedge", "--repeats", "1",
                     "--ticks", "600", "-o", "json", *extra]) == 0
        return json.loads(capsys.readouterr().out)["relative_cost"]
    # A larger outage value buys more spares: never cheaper.
    assert tidal_cost("--param", "outage_value=1000", "--param", "max_spare=2") > tidal_cost("--param",
                                                                                              "outage_value=0")


@pytest.mark.parametrize("param,message", [
    ("nope=1", "--param nope: no such parameter for tidal (parameters: "),
    ("lone_evidence=abc", "bad parameters for policy 'tidal'"),
    ("lone_evidence", "expected KEY=VALUE"),
])
def test_spot_bad_params_are_one_line_errors(capsys, traces_dir, param, message):
    assert main(["simulate", "spot", "--traces", traces_dir, "--policy", "tidal", "--repeats", "1",
                 "--ticks", "240", "--param", param]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
