"""Replica choice: least outstanding with random ties, power of two choices for many replicas."""

import random
from collections import Counter

import pytest

from tidal.gateway.balancing import EXACT_SCAN_LIMIT, choose


@pytest.mark.parametrize("name, loads, rand_value, expected", [
    ("single replica", [7], 0.9, 0),
    ("least outstanding wins", [3, 1, 2], 0.0, 1),
    ("tie between idle replicas, low draw picks the first", [0, 5, 0], 0.0, 0),
    ("tie between idle replicas, high draw picks the second", [0, 5, 0], 0.99, 2),
    ("all equal, draw 0.5 of 4 picks index 2", [2, 2, 2, 2], 0.5, 2),
])
def test_choice_table(name, loads, rand_value, expected):
    assert choose(loads, lambda: rand_value) == expected


def test_ties_are_spread_evenly():
    rng = random.Random(7)
    picks = Counter(choose([0, 0, 0], rng.random) for _ in range(3000))
    assert all(900 < picks[i] < 1100 for i in range(3))


def test_power_of_two_choices_never_picks_the_worse_of_its_pair():
    n = EXACT_SCAN_LIMIT + 4
    loads = list(range(n))  # replica i has i outstanding
    draws = iter([0.5, 0.1])  # i = int(0.5 * n) = 10, j = int(0.1 * (n - 1)) = 1
    assert choose(loads, lambda: next(draws)) == 1
    rng = random.Random(1)
    picks = Counter(choose(loads, rng.random) for _ in range(5000))
    assert picks[n - 1] == 0  # the most loaded replica always loses its pair
    assert picks[0] > picks[n // 2] > 0

