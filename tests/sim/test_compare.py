"""The paired comparison: differences run by run, a two-standard-error band, and the verdict's words."""

from __future__ import annotations

import pytest

from tidal.sim.compare import Paired, paired, verdict


@pytest.mark.parametrize("base,policy,mean,band", [
    ([0.99, 0.98], [0.99, 0.98], 0.0, 0.0),               # identical runs: no difference, no band
    ([0.5], [0.6], 0.1, 0.0),                             # one run: no band
    ([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], 1.0, 0.0),         # a constant shift is certain however spread the runs are
    ([0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 1.0, -1.0], 0.0, 2 * (4 / 3) ** 0.5 / 2),  # sd sqrt(4/3), se sd/2
])
def test_paired_difference_and_band(base, policy, mean, band):
    got = paired(base, policy)
    assert got.mean == pytest.approx(mean) and got.band == pytest.approx(band)


@pytest.mark.parametrize("base,policy", [([1.0], [1.0, 2.0]), ([], [])])
def test_unpaired_runs_are_refused(base, policy):
    with pytest.raises(ValueError, match="one to one"):
        paired(base, policy)


def test_below_only_beyond_the_band():
    assert Paired(-0.02, 0.01).below and not Paired(-0.02, 0.03).below and not Paired(0.01, 0.0).below


@pytest.mark.parametrize("avail,cost,strict,noise,words", [
    # (policy availability, policy cost) against a baseline of availability [0.99, 0.97] and cost [0.5, 0.5]
    ([0.99, 0.97], [0.4, 0.4], True, True, "cheaper, as available or more"),
    ([0.995, 0.975], [0.4, 0.45], True, True, "cheaper, as available or more"),
    # 0.01 lower in one run, 0.005 higher in the other: mean -0.0025 with a band of 0.015, cheaper within noise
    ([0.98, 0.975], [0.4, 0.4], False, True, "cheaper, less available within noise"),
    ([0.98, 0.96], [0.4, 0.4], False, False, "cheaper, less available"),     # 0.01 lower in both: certain
    ([0.99, 0.97], [0.6, 0.6], False, False, "dearer, as available or more"),
    ([0.99, 0.97], [0.5, 0.5], False, False, "the same"),
])
def test_verdict(avail, cost, strict, noise, words):
    v = verdict([0.99, 0.97], [0.5, 0.5], avail, cost)
    assert (v.strict_win, v.win_within_noise, v.words) == (strict, noise, words)
