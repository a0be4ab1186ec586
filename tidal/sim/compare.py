"""Paired comparison of a policy with a baseline on the same capacity windows and seeds: cheaper, and as available?

Two policies run on the same windows (the protocol's offsets) and with the same
random seeds are compared run by run: the difference of each run's
availability (and cost) is what varies, not each policy's own spread. A
policy's availability on one trace moves by a few hundredths of a point with
nothing but its random choices (SpotHedge's zone picks), so a table of means
over ten runs calls near-ties either way by chance. `paired` gives the mean
difference with a 95% band (two standard errors of the paired differences);
`verdict` says "cheaper, as available" only when the mean is not lower
(strict), and "cheaper, within noise" when it is lower by less than the band.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Availabilities and costs that differ by less than this are the same number (float sums of the same ticks).
EPSILON = 1e-12


@dataclass(frozen=True, slots=True)
class Paired:
    mean: float   # mean of (policy - baseline) over the runs
    band: float   # two standard errors of that mean (0 with fewer than two runs)

    @property
    def below(self) -> bool:
        """Lower beyond the band: the difference is not noise."""
        return self.mean + self.band < -EPSILON


def paired(baseline: Sequence[float], policy: Sequence[float]) -> Paired:
    if len(baseline) != len(policy) or not baseline:
        raise ValueError(f"paired runs must match one to one and not be empty: {len(baseline)} vs {len(policy)}")
    diffs = [p - b for b, p in zip(baseline, policy)]
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return Paired(mean, 0.0)
    variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
    return Paired(mean, 2.0 * math.sqrt(variance / len(diffs)))


@dataclass(frozen=True, slots=True)
class Verdict:
    availability: Paired
    cost: Paired

    @property
    def strict_win(self) -> bool:
        """Cheaper on average and not less available on average: the default policy's target, read literally."""
        return self.cost.mean < -EPSILON and self.availability.mean >= -EPSILON

    @property
    def win_within_noise(self) -> bool:
        """Cheaper on average, and any availability deficit smaller than its own band."""
        return self.cost.mean < -EPSILON and not self.availability.below

    @property
    def words(self) -> str:
        a, c = self.availability.mean, self.cost.mean
        if abs(a) <= EPSILON and abs(c) <= EPSILON:
            return "the same"
        if self.strict_win:
            return "cheaper, as available or more"
        if self.win_within_noise:
            return "cheaper, less available within noise"
        return ("cheaper" if c < -EPSILON else "dearer" if c > EPSILON else "as dear") + \
            (", less available" if a < -EPSILON else ", as available or more")


def verdict(baseline_availability: Sequence[float], baseline_cost: Sequence[float],
            availability: Sequence[float], cost: Sequence[float]) -> Verdict:
    return Verdict(paired(baseline_availability, availability), paired(baseline_cost, cost))
