"""Where new spot nodes go and which go first on a scale-in: the spreading arithmetic the policies share."""

from __future__ import annotations

from typing import Sequence


def fill_fewest(counts: Sequence[int], n_new: int, candidates: Sequence[int]) -> tuple[int, ...]:
    """Add n_new nodes one at a time to the candidate zone holding the fewest; ties go to the earlier candidate."""
    out = list(counts)
    if not candidates:
        return tuple(out)
    for _ in range(max(0, n_new)):
        best = min(candidates, key=lambda i: (out[i], candidates.index(i)))
        out[best] += 1
    return tuple(out)


def trim_most(counts: Sequence[int], n_remove: int, order: Sequence[int] | None = None) -> tuple[int, ...]:
    """Remove n_remove nodes one at a time from the zone holding the most; ties go to the later zone in `order`
    (so the preferred zones keep theirs)."""
    out = list(counts)
    order = list(range(len(out))) if order is None else list(order)
    rank = {z: r for r, z in enumerate(order)}
    for _ in range(max(0, n_remove)):
        holders = [i for i in range(len(out)) if out[i] > 0]
        if not holders:
            break
        worst = max(holders, key=lambda i: (out[i], rank.get(i, len(order) + i)))
        out[worst] -= 1
    return tuple(out)


def keep_at_most(counts: Sequence[int], total: int, order: Sequence[int] | None = None) -> tuple[int, ...]:
    """Counts trimmed (from the fullest zones) to sum to at most total."""
    return trim_most(counts, sum(counts) - total, order)
