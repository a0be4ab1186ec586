"""The rollout commands' flags as the API bodies they send (the API's own checks are in tests/control)."""

from __future__ import annotations

import argparse
import re

import pytest

from tidal.commands import serve
from tidal.commands.rollout import start, traffic_request
from tidal.errors import UserError


def _args(*argv: str):
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    return parser.parse_args(list(argv))


TRAFFIC = [
    ("release names", ["traffic", "bert", "bert-1=90", "bert-2=10"], ("bert", {"bert-1": 90, "bert-2": 10})),
    ("percent signs", ["traffic", "bert", "bert-1=90%", "bert-2=10%"], ("bert", {"bert-1": 90, "bert-2": 10})),
    ("arena's --version-weight, repeated", ["traffic-router-split", "--name", "bert", "-v", "1:90", "-v", "2:10"],
     ("bert", {"1": 90, "2": 10})),
    ("arena's --version-weight, comma-separated", ["trs", "--name", "bert", "--version-weight", "1:90,2:10"],
     ("bert", {"1": 90, "2": 10})),
    ("arena's older --versions and --weights", ["traffic-split", "--name", "bert", "--versions", "1,2",
                                                "--weights", "70,30"], ("bert", {"1": 70, "2": 30})),
]


@pytest.mark.parametrize("case,argv,expected", TRAFFIC, ids=[t[0] for t in TRAFFIC])
def test_traffic_in_every_spelling(case, argv, expected):
    assert traffic_request(_args(*argv)) == expected


BAD_TRAFFIC = [
    (["traffic", "bert"], "give each release's percent"),
    (["traffic", "bert", "bert-1"], "expected RELEASE=PERCENT"),
    (["traffic", "bert", "bert-1=ninety"], "invalid weight 'ninety' for bert-1"),
    (["traffic", "bert", "bert-1=50", "bert-1=50"], "release bert-1 is given twice"),
    (["traffic", "--version-weight", "1:100"], "name the service"),
    (["trs", "--name", "bert", "-v", "1=100"], "expected VERSION:WEIGHT"),
    (["trs", "--name", "bert", "--versions", "1,2", "--weights", "100"], "--versions names 2 release(s)"),
    (["traffic", "bert", "1=100", "--name", "other"], "two services named"),
]


@pytest.mark.parametrize("argv,message", BAD_TRAFFIC)
def test_bad_traffic_is_one_clear_line(argv, message):
    with pytest.raises(UserError, match=re.escape(message)):
        traffic_request(_args(*argv))


class Api:
    def __init__(self):
        self.sent = []

    def post(self, path, body):
        self.sent.append((path, body))
        return {}


def test_a_canary_sends_what_it_changes_its_steps_and_guards():
    api = Api()
    start(api, _args("update", "bert", "--canary-traffic-percent", "10", "--version", "2", "--model-path",
                     "/models/b", "-e", "A=1", "--steps", "10,50,100", "--bake", "5m", "--mirror-percent", "5",
                     "--max-error-rate", "0.01", "--max-p90", "250ms", "--max-class-shift", "0.1"))
    assert api.sent == [("/services/bert/rollout", {
        "changes": {"version": "2", "model_path": "/models/b", "env": {"A": "1"}}, "canary_traffic_percent": 10,
        "steps": "10,50,100", "bake": "5m", "mirror": 5,
        "guards": {"max_error_rate": 0.01, "max_class_shift": 0.1, "max_p90_seconds": 0.25}})]


def test_a_canary_does_not_change_the_services_resources():
    with pytest.raises(UserError, match="--replicas changes the service itself"):
        start(Api(), _args("update", "bert", "--canary-traffic-percent", "10", "--replicas", "3"))


def test_serve_get_shows_the_releases(capsys):
    from tidal.commands.rollout import show
    show({"rollout": {"progress": "step 2/4: canary bert-2 at 25%", "releases": [
        {"name": "bert-1", "weight": 75, "ready": 3, "replicas": 3,
         "counts": {"requests": 900, "errors": 1, "p90": 0.012}},
        {"name": "bert-2", "weight": 25, "ready": 0, "replicas": 1, "counts": None}]}})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ROLLOUT: step 2/4: canary bert-2 at 25%"
    assert out[2].split() == ["bert-1", "75%", "3/3", "1/900", "12ms"]
    assert out[3].split() == ["bert-2", "25%", "0/1", "-", "-"]
    show({"rollout": None})
    assert capsys.readouterr().out == ""
