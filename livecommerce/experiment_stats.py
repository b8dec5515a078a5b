"""The statistics experiments report: intervals, the two-proportion z-test, a large-sample
test on means, and the sample-ratio-mismatch chi-square. No I/O, stdlib only.

Every function takes counts or sufficient statistics (``n``, ``sum``, ``sum of squares``),
so the SQL side aggregates and this module never sees per-user rows.

* :func:`wilson_interval`: the Wilson score interval of a proportion (keeps inside [0, 1]
  and behaves at 0 and n successes, where the Wald interval collapses).
* :func:`two_proportion_ztest`: H0 ``p_a == p_b`` with the pooled standard error (the
  textbook test, as ``statsmodels.stats.proportion.proportions_ztest``); the interval of
  the difference ``p_b - p_a`` uses the unpooled standard error (Wald), as is usual.
* :func:`mean_summary` / :func:`mean_ztest`: mean, sample standard deviation and a normal
  interval; the difference of two means with Welch's standard error and a normal
  reference distribution (GMV per viewer: samples are in the thousands, so the z and t
  tests agree to the third decimal; documented, not hidden).
* :func:`chi_square_gof`: Pearson's goodness-of-fit statistic of observed counts against
  configured weights, with ``k - 1`` degrees of freedom and its exact p-value (regularised
  upper incomplete gamma, :func:`gammaincc`). A sample-ratio mismatch is declared below
  :data:`SRM_ALPHA` (0.001, the convention of the experimentation literature: the check
  runs on every results read, so it must rarely cry wolf).

Raises ``ValueError`` on impossible inputs (negative counts, successes above trials,
confidence outside (0, 1)); empty samples give ``nan``-free neutral answers (p-value 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

SRM_ALPHA = 0.001
_N = NormalDist()


def z_critical(confidence: float) -> float:
    """The two-sided critical value: 1.959964 for 0.95.

    Raises:
        ValueError: ``confidence`` not in (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    return _N.inv_cdf(1.0 - (1.0 - confidence) / 2.0)


def two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return 2.0 * (1.0 - _N.cdf(abs(z))) if math.isfinite(z) else 0.0


def _check_counts(successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``successes / trials``; ``(0.0, 1.0)`` with no trials.

    Raises:
        ValueError: impossible counts or confidence.
    """
    _check_counts(successes, trials)
    z = z_critical(confidence)
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / trials + z2n / (4.0 * trials)) / (1.0 + z2n)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == trials else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True, slots=True)
class ProportionTest:
    """``b`` against ``a``: rates, difference ``p_b - p_a`` with its interval, the
    relative lift (None when ``p_a`` is 0), the pooled z statistic and its two-sided
    p-value."""

    p_a: float
    p_b: float
    diff: float
    ci_low: float
    ci_high: float
    lift: float | None
    z: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def two_proportion_ztest(x_a: int, n_a: int, x_b: int, n_b: int, confidence: float = 0.95) -> ProportionTest:
    """Two-sided two-proportion z-test of ``x_b/n_b`` against ``x_a/n_a``.

    ``z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b))`` with the pooled
    ``p = (x_a + x_b) / (n_a + n_b)``. When either sample is empty or the pooled rate is
    0 or 1 there is no evidence either way: ``z = 0``, ``p_value = 1``.

    Raises:
        ValueError: impossible counts or confidence.
    """
    _check_counts(x_a, n_a)
    _check_counts(x_b, n_b)
    zc = z_critical(confidence)
    p_a = x_a / n_a if n_a else 0.0
    p_b = x_b / n_b if n_b else 0.0
    diff = p_b - p_a
    lift = diff / p_a if p_a > 0 else None
    if n_a == 0 or n_b == 0:
        return ProportionTest(p_a, p_b, diff, -1.0, 1.0, lift, 0.0, 1.0)
    pooled = (x_a + x_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    z = diff / se0 if se0 > 0 else 0.0
    se = math.sqrt(p_a * (1.0 - p_a) / n_a + p_b * (1.0 - p_b) / n_b)
    return ProportionTest(p_a, p_b, diff, diff - zc * se, diff + zc * se, lift, z, two_sided_p(z) if se0 > 0 else 1.0)


@dataclass(frozen=True, slots=True)
class MeanSummary:
    """A sample's size, mean, sample standard deviation and the normal interval of the mean."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_summary(n: int, total: float, total_sq: float, confidence: float = 0.95) -> MeanSummary:
    """Summary of a sample from its sufficient statistics: ``n``, ``sum x``, ``sum x^2``.

    The variance is the unbiased ``(sum x^2 - (sum x)^2 / n) / (n - 1)`` (0 for n < 2;
    clamped at 0 against rounding).

    Raises:
        ValueError: negative ``n`` or bad confidence.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    zc = z_critical(confidence)
    if n == 0:
        return MeanSummary(0, 0.0, 0.0, 0.0, 0.0)
    mean = total / n
    var = max(0.0, (total_sq - total * total / n) / (n - 1)) if n > 1 else 0.0
    sd = math.sqrt(var)
    half = zc * sd / math.sqrt(n)
    return MeanSummary(n, mean, sd, mean - half, mean + half)


@dataclass(frozen=True, slots=True)
class MeanTest:
    """``b`` against ``a`` on a mean: difference ``mean_b - mean_a``, its interval, the
    relative lift (None when ``mean_a`` is 0), Welch's z and the two-sided p-value."""

    diff: float
    ci_low: float
    ci_high: float
    lift: float | None
    z: float
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean_ztest(a: MeanSummary, b: MeanSummary, confidence: float = 0.95) -> MeanTest:
    """Large-sample test of ``mean_b == mean_a`` with Welch's standard error
    ``sqrt(sd_a^2 / n_a + sd_b^2 / n_b)``. No evidence (``z = 0``, ``p = 1``) when a
    sample has fewer than 2 values or both have no spread.

    Raises:
        ValueError: bad confidence.
    """
    zc = z_critical(confidence)
    diff = b.mean - a.mean
    lift = diff / a.mean if a.mean else None
    se = math.sqrt(a.sd**2 / a.n + b.sd**2 / b.n) if a.n >= 2 and b.n >= 2 else 0.0
    if se == 0:
        return MeanTest(diff, diff, diff, lift, 0.0, 1.0)
    z = diff / se
    return MeanTest(diff, diff - zc * se, diff + zc * se, lift, z, two_sided_p(z))


# ---------------------------------------------------------------- chi-square


def gammaincc(a: float, x: float) -> float:
    """Regularised upper incomplete gamma ``Q(a, x) = Gamma(a, x) / Gamma(a)``.

    Series for ``P`` when ``x < a + 1``, Lentz's continued fraction for ``Q`` otherwise
    (Numerical Recipes 6.2); relative accuracy about 1e-14.

    Raises:
        ValueError: ``a <= 0`` or ``x < 0``.
    """
    if a <= 0 or x < 0:
        raise ValueError("need a > 0 and x >= 0")
    if x == 0:
        return 1.0
    log_pre = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_pre))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return min(1.0, math.exp(log_pre) * h)


def chi2_sf(stat: float, df: int) -> float:
    """P(X >= stat) for X chi-square with ``df`` degrees of freedom.

    Raises:
        ValueError: ``df < 1``.
    """
    if df < 1:
        raise ValueError("df must be >= 1")
    return gammaincc(df / 2.0, max(0.0, stat) / 2.0)


@dataclass(frozen=True, slots=True)
class ChiSquare:
    """Goodness of fit: observed and expected counts, the statistic, degrees of freedom,
    p-value and whether it signals a sample-ratio mismatch (``p < SRM_ALPHA``)."""

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    stat: float
    df: int
    p_value: float
    mismatch: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["observed"], d["expected"] = list(self.observed), [round(e, 3) for e in self.expected]
        return d


def chi_square_gof(observed: Sequence[int], weights: Sequence[float], *, alpha: float = SRM_ALPHA) -> ChiSquare:
    """Pearson's chi-square of ``observed`` counts against ``weights`` (any positive
    scale: the expected count of cell i is ``N * w_i / sum w``). With no observations the
    answer is ``stat = 0, p = 1`` (nothing to mismatch).

    Raises:
        ValueError: lengths differ, fewer than 2 cells, a negative count or a weight <= 0.
    """
    if len(observed) != len(weights) or len(observed) < 2:
        raise ValueError("need at least 2 cells and one weight per observed count")
    if any(o < 0 for o in observed) or any(w <= 0 for w in weights):
        raise ValueError("counts must be >= 0 and weights > 0")
    total, wsum = sum(observed), float(sum(weights))
    expected = tuple(total * w / wsum for w in weights)
    df = len(observed) - 1
    if total == 0:
        return ChiSquare(tuple(observed), expected, 0.0, df, 1.0, False)
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))
    p = chi2_sf(stat, df)
    return ChiSquare(tuple(int(o) for o in observed), expected, stat, df, p, p < alpha)
