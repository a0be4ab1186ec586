"""`tidal demo`'s options: --quick's presets, an explicit option winning over them, bad values as one line."""

from __future__ import annotations

import argparse

import pytest

from tidal.demo import FULL, QUICK, add_arguments, settings
from tidal.errors import UserError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings(parser.parse_args(list(argv)))


@pytest.mark.parametrize("argv,rate,load,scale_in", [
    ((), FULL["rate"], FULL["load_seconds"], FULL["scale_in_timeout"]),
    (("--quick",), QUICK["rate"], QUICK["load_seconds"], QUICK["scale_in_timeout"]),
    (("--quick", "--rate", "55"), 55.0, QUICK["load_seconds"], QUICK["scale_in_timeout"]),
    (("--load-seconds", "12", "--scale-in-timeout", "0"), FULL["rate"], 12.0, 0.0),
])
def test_presets_and_overrides(argv, rate, load, scale_in):
    args = _parse(*argv)
    assert (args.rate, args.load_seconds, args.scale_in_timeout) == (rate, load, scale_in)


def test_quick_is_shorter_yet_asks_for_a_scale_out():
    # 10 requests/s per replica in the reference procedure's HPA: the quick load still needs several replicas.
    assert QUICK["load_seconds"] < FULL["load_seconds"] and QUICK["rate"] / 10 >= 3


@pytest.mark.parametrize("argv", [("--rate", "0"), ("--load-seconds", "-1"), ("--scale-in-timeout", "-5"),
                                  ("--time-factor", "0"), ("--time-factor", "2")])
def test_bad_values_are_one_clear_error(argv):
    with pytest.raises(UserError, match="must be positive"):
        _parse(*argv)
