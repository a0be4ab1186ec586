"""`tidal nodepool create`'s flags as the API body they send (the API's own checks are in tests/control)."""

from __future__ import annotations

import argparse

import pytest

from tidal.commands import nodepool
from tidal.errors import UserError


def _body(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    nodepool.add_arguments(parser)
    return nodepool._spec(parser.parse_args(["create", "gpu-pool", *argv]))


def test_policy_params_are_sent_as_a_map():
    body = _body("--spot", "--policy", "tidal-hedge", "--policy-param", "outage_value=40", "--policy-param",
                 "max_spare=1")
    assert body["policy"] == "tidal-hedge" and body["policy_params"] == {"outage_value": "40", "max_spare": "1"}
    assert "policy_params" not in _body("--spot")


def test_a_policy_param_without_a_value_is_a_clear_error():
    with pytest.raises(UserError, match="--policy-param"):
        _body("--policy", "tidal", "--policy-param", "outage_value")
