"""The experiment statistics against references computed by hand from their textbook
formulas (and against scipy when it is installed)."""

from __future__ import annotations

import math
import statistics

import pytest

from livecommerce.experiment_stats import (
    chi2_sf,
    chi_square_gof,
    gammaincc,
    mean_summary,
    mean_ztest,
    two_proportion_ztest,
    wilson_interval,
    z_critical,
)


def test_the_critical_value_of_95_percent_is_1_96() -> None:
    assert z_critical(0.95) == pytest.approx(1.959963984540054, abs=1e-12)
    assert z_critical(0.99) == pytest.approx(2.5758293035489, abs=1e-10)
    with pytest.raises(ValueError):
        z_critical(1.0)


def test_two_proportion_ztest_matches_the_pooled_formula() -> None:
    # 200/1000 against 250/1000: pooled p = 0.225, se = sqrt(.225 * .775 * (2/1000))
    t = two_proportion_ztest(200, 1000, 250, 1000)
    se0 = math.sqrt(0.225 * 0.775 * 0.002)
    z = 0.05 / se0
    assert z == pytest.approx(2.6773977630, rel=1e-9)
    assert t.z == pytest.approx(z, rel=1e-12)
    assert t.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9)  # 0.0074196
    assert t.p_value == pytest.approx(0.0074196, abs=1e-6)
    se = math.sqrt(0.2 * 0.8 / 1000 + 0.25 * 0.75 / 1000)
    assert (t.ci_low, t.ci_high) == pytest.approx((0.05 - 1.959963984540054 * se, 0.05 + 1.959963984540054 * se), rel=1e-9)
    assert t.lift == pytest.approx(0.25)


def test_two_proportion_ztest_without_evidence_says_p_one() -> None:
    assert two_proportion_ztest(0, 0, 5, 10).p_value == 1.0
    assert two_proportion_ztest(0, 100, 0, 100).p_value == 1.0
    assert two_proportion_ztest(30, 100, 30, 100).z == 0.0
    with pytest.raises(ValueError):
        two_proportion_ztest(11, 10, 1, 10)


def test_wilson_interval_matches_newcombe_1998() -> None:
    # Newcombe, Statistics in Medicine 17 (1998), table I: 81/263 -> 0.2553 to 0.3662
    lo, hi = wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    # 0/10 -> 0 to 0.2775 (same table), and it never leaves [0, 1]
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    assert wilson_interval(10, 10)[1] == 1.0


def test_mean_summary_and_welch_z_match_the_sample_formulas() -> None:
    a = [0, 0, 0, 1999, 0, 4999, 0, 0, 1999, 0, 0, 0]
    b = [0, 1999, 0, 4999, 0, 0, 1999, 2999, 0, 0, 4999, 0, 0, 1999]
    sa = mean_summary(len(a), sum(a), sum(x * x for x in a))
    sb = mean_summary(len(b), sum(b), sum(x * x for x in b))
    assert sa.mean == pytest.approx(statistics.fmean(a)) and sa.sd == pytest.approx(statistics.stdev(a))
    assert sb.sd == pytest.approx(statistics.stdev(b))
    half = 1.959963984540054 * statistics.stdev(a) / math.sqrt(len(a))
    assert (sa.ci_low, sa.ci_high) == pytest.approx((statistics.fmean(a) - half, statistics.fmean(a) + half))
    t = mean_ztest(sa, sb)
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    z = (statistics.fmean(b) - statistics.fmean(a)) / se
    assert t.z == pytest.approx(z) and t.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert mean_ztest(mean_summary(1, 5, 25), sb).p_value == 1.0


def test_chi_square_matches_closed_forms() -> None:
    # df = 1: sf(x) = erfc(sqrt(x / 2)); df = 2: sf(x) = exp(-x / 2);
    # df = 3: sf(x) = erfc(sqrt(x / 2)) + sqrt(2 x / pi) exp(-x / 2)
    for x in (0.01, 0.5, 1.0, 3.84, 10.0, 40.0):
        assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-10)
        assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)
        assert chi2_sf(x, 3) == pytest.approx(math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2), rel=1e-10)
    assert gammaincc(1.0, 2.0) == pytest.approx(math.exp(-2.0))


def test_srm_check_against_hand_computed_counts() -> None:
    fair = chi_square_gof([5050, 4950], [1, 1])  # (50^2 + 50^2) / 5000 = 1.0
    assert fair.stat == pytest.approx(1.0) and fair.df == 1
    assert fair.p_value == pytest.approx(0.3173105078629141, rel=1e-9) and not fair.mismatch
    three = chi_square_gof([480, 260, 260], [2, 1, 1])  # 400/500 + 100/250 + 100/250 = 1.6
    assert three.stat == pytest.approx(1.6) and three.p_value == pytest.approx(math.exp(-0.8))
    broken = chi_square_gof([5200, 4800], [50, 50])  # 2 * 200^2 / 5000 = 16: p = erfc(sqrt 8) = 6.3e-5
    assert broken.stat == pytest.approx(16.0) and broken.mismatch
    assert broken.p_value == pytest.approx(math.erfc(math.sqrt(8.0)), rel=1e-9)
    assert chi_square_gof([0, 0], [1, 1]).p_value == 1.0
    with pytest.raises(ValueError):
        chi_square_gof([1, 2], [1, 0])


def test_against_scipy_when_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    for a, x in ((0.5, 0.1), (2.5, 10.0), (10.0, 3.0), (50.0, 60.0), (0.5, 30.0)):
        assert gammaincc(a, x) == pytest.approx(float(special.gammaincc(a, x)), rel=1e-9)
    obs = [1020, 980, 2100, 900]
    ours = chi_square_gof(obs, [1, 1, 2, 1])
    ref = stats.chisquare(obs, [1000, 1000, 2000, 1000])
    assert ours.stat == pytest.approx(float(ref.statistic)) and ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    t = two_proportion_ztest(120, 1500, 150, 1500)
    assert t.p_value == pytest.approx(float(2 * stats.norm.sf(abs(t.z))), rel=1e-9)
