"""The statistics behind the verdicts: paired or Welch t intervals over seeds, equivalence tests, Holm's correction.

Two arms of a sweep that share seeds share the seed's initialisation, data order and noise stream, so their
difference is taken per seed (a paired t interval): at small R that interval is several times narrower than an
unpaired one. Arms without common seeds get Welch's interval.

Each comparison is one hypothesis test (difference = 0, two-sided) and, where the claim states a margin, one
equivalence test (two one-sided tests: |difference| >= margin). Holm's step-down correction is applied to each
family across the whole report, so that the chance of any false "supported" or "contradicted" verdict in a report
stays at most 5% whatever the number of comparisons, and so is the chance of any false "no effect".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as _scipy

ALPHA = 0.05  # family-wise error rate of a report's verdicts
# The smallest per-seed spread a test may assume: one image of a 10,000-image test set. Accuracies are counts, so a
# few seeds can differ by exactly the same number of images (two seeds, both -2 images): a zero spread would make
# any such difference "significant".
SD_FLOOR = 1e-4


@dataclass(frozen=True)
class Estimate:
    """A difference of means a - b over seeds, with its standard error and degrees of freedom."""

    difference: float
    se: float
    df: float
    seeds: int  # the pairs (paired) or the fewer seeds of the two sides (Welch)
    paired: bool

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        half = _scipy.t.ppf(0.5 + level / 2, self.df) * self.se if self.se > 0 else 0.0
        return self.difference - half, self.difference + half

    def p_zero(self) -> float:
        """Two-sided p-value of 'no difference'."""
        if self.se == 0:
            return 0.0 if self.difference else 1.0
        return float(2 * _scipy.t.sf(abs(self.difference) / self.se, self.df))

    def p_equivalent(self, margin: float) -> float:
        """p-value of 'the difference is at least `margin` away from zero' (TOST: the larger one-sided p)."""
        if self.se == 0:
            return 0.0 if abs(self.difference) < margin else 1.0
        below = _scipy.t.sf((self.difference + margin) / self.se, self.df)  # against difference <= -margin
        above = _scipy.t.cdf((self.difference - margin) / self.se, self.df)  # against difference >= +margin
        return float(max(below, above))


def paired(a: dict, b: dict) -> Estimate | None:
    """Paired t over the seeds both `a` and `b` hold ({seed: value}); None with fewer than 2 common seeds."""
    common = sorted(set(a) & set(b))
    n = len(common)
    if n < 2:
        return None
    d = [a[s] - b[s] for s in common]
    mean = sum(d) / n
    var = max(sum((x - mean) ** 2 for x in d) / (n - 1), SD_FLOOR**2)
    return Estimate(mean, math.sqrt(var / n), n - 1, n, True)


def welch(a: list[float], b: list[float]) -> Estimate | None:
    """Welch's t for independent samples; None when either side has fewer than 2 values."""
    na, nb = len(a), len(b)
    if min(na, nb) < 2:
        return None
    ma, mb = sum(a) / na, sum(b) / nb
    va = max(sum((x - ma) ** 2 for x in a) / (na - 1), SD_FLOOR**2)
    vb = max(sum((x - mb) ** 2 for x in b) / (nb - 1), SD_FLOOR**2)
    se2 = va / na + vb / nb
    if se2 == 0:
        return Estimate(ma - mb, 0.0, na + nb - 2, min(na, nb), False)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return Estimate(ma - mb, math.sqrt(se2), df, min(na, nb), False)


def compare(a: dict, b: dict) -> Estimate | None:
    """a - b ({seed: value} each): paired when they share at least 2 seeds, Welch when they share none."""
    if len(set(a) & set(b)) >= 2:
        return paired(a, b)
    if set(a) & set(b):  # one common seed: too few pairs, and the sides are not independent
        return None
    return welch(list(a.values()), list(b.values()))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (valid under any dependence between the tests)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
