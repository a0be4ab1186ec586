"""The availability-preserving plan: named cases with the expected loads and unloads."""

from __future__ import annotations

import pytest

from tidal.models.lifecycle import Load, LoadFailure, RetryPolicy, Unload, VersionState, plan_transitions

A, L, U, E, S = (VersionState.AVAILABLE, VersionState.LOADING, VersionState.UNLOADING, VersionState.END,
                 VersionState.START)
NOW = 1000.0
RETRY = RetryPolicy(max_retries=2, interval_seconds=60)

CASES = [
    # name, aspired, states, failures, expected
    ("first load", [1], {}, {}, [Load(1)]),
    ("nothing to do", [1], {1: A}, {}, []),
    ("new version loads before the old one goes", [2], {1: A}, {}, [Load(2)]),
    ("old one goes once the new one is available", [2], {1: A, 2: A}, {}, [Unload(1)]),
    ("still loading: the old one stays", [2], {1: A, 2: L}, {}, []),
    ("newest first when several are wanted", [1, 2, 3], {}, {}, [Load(3), Load(2), Load(1)]),
    ("failed new version: the old one keeps serving", [3], {2: A, 3: E}, {3: LoadFailure(1, NOW - 1)}, []),
    ("failed version retried after the interval (1000 - 940 = 60 s)", [3], {2: A, 3: E},
     {3: LoadFailure(1, NOW - 60)}, [Load(3)]),
    ("no retry after max_retries (3 attempts > 2 retries)", [3], {2: A, 3: E}, {3: LoadFailure(3, NOW - 600)}, []),
    ("all versions removed: unload everything", [], {1: A, 2: A}, {}, [Unload(1), Unload(2)]),
    ("one of two aspired serves: the unwanted one goes", [3, 4], {2: A, 3: A, 4: E},
     {4: LoadFailure(1, NOW)}, [Unload(2)]),
    ("unloading is left alone", [2], {1: U, 2: A}, {}, []),
    ("START versions are loaded", [5], {5: S}, {}, [Load(5)]),
    ("an ended version aspired again is loaded again", [1], {1: E}, {}, [Load(1)]),
]


@pytest.mark.parametrize("aspired,states,failures,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_transitions(aspired, states, failures, expected):
    assert plan_transitions(aspired, states, failures, RETRY, NOW) == expected
