"""Replica choice: a pure function of the candidates' outstanding-request counts and a random source."""

from __future__ import annotations

from typing import Callable, Sequence

# Up to this many candidates, scan them all: the gateway sees every request it sends, so
# its outstanding counts are exact and the least loaded replica is the best choice. Beyond
# it, two random choices keep the cost O(1) at almost the same balance (Mitzenmacher).
EXACT_SCAN_LIMIT = 16


def choose(loads: Sequence[int], rand: Callable[[], float]) -> int:
    """Index of the replica to send to, given each candidate's outstanding requests.

    Least outstanding, ties broken uniformly at random so that idle replicas share the
    load; power of two choices above `EXACT_SCAN_LIMIT` candidates. `rand()` returns a
    float in [0, 1). `loads` must not be empty.
    """
    n = len(loads)
    if n == 1:
        return 0
    if n > EXACT_SCAN_LIMIT:
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        return i if loads[i] <= loads[j] else j
    best = min(loads)
    ties = [i for i, load in enumerate(loads) if load == best]
    if len(ties) == 1:
        return ties[0]
    return ties[int(rand() * len(ties))]
