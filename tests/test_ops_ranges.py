"""The ops dashboard's chart ranges: samples folded into steps (``livecommerce.ops_ranges``)."""

from __future__ import annotations

import pytest

from livecommerce.errors import BadFrame
from livecommerce.ops_ranges import (
    FAST_LAST,
    FAST_PEAK,
    LIVE_RANGE_S,
    RANGES_S,
    Rollup,
    range_of,
    rollups,
)


def test_a_bucket_keeps_the_mean_of_rates_the_peak_of_online_and_the_last_mapping() -> None:
    r = Rollup(10_000, 5, peak=FAST_PEAK, last=FAST_LAST)
    r.add({"ts": 20_000, "online": 3, "comments_per_s": 1.0, "rooms": {"a": 3}})
    r.add({"ts": 25_000, "online": 7, "comments_per_s": 3.0, "rooms": {"a": 7}})
    r.add({"ts": 29_999, "online": 5, "comments_per_s": 2.0, "rooms": {"a": 5, "b": 1}})
    assert r.points() == [{"ts": 20_000, "online": 7, "comments_per_s": 2.0, "rooms": {"a": 5, "b": 1}}]
    r.add({"ts": 30_000, "online": 1, "comments_per_s": 0.5, "rooms": {}})
    assert [p["ts"] for p in r.points()] == [20_000, 30_000]  # the open bucket comes last
    assert r.points(since_ms=20_000) == [{"ts": 30_000, "online": 1, "comments_per_s": 0.5, "rooms": {}}]


def test_only_the_last_buckets_are_kept_and_a_late_sample_joins_the_open_one() -> None:
    r = Rollup(1000, 2)
    for t in range(5):
        r.add({"ts": t * 1000, "x": t})
    assert [p["ts"] for p in r.points()] == [2000, 3000, 4000]  # two closed buckets and the open one
    r.add({"ts": 3500, "x": 9})  # older than the open bucket: folded into it, nothing reopens
    assert r.points()[-1] == {"ts": 4000, "x": 6.5}


def test_each_long_range_has_a_rollup_of_at_most_361_points() -> None:
    rs = rollups(peak=FAST_PEAK, last=FAST_LAST)
    assert set(rs) == set(RANGES_S) - {LIVE_RANGE_S}
    for rng, rollup in rs.items():
        for t in range(0, 2 * rng * 1000, RANGES_S[rng] * 1000):
            rollup.add({"ts": t, "online": 1})
        assert len(rollup.points()) == rng // RANGES_S[rng] + 2  # kept buckets and the open one


@pytest.mark.parametrize("raw", ["7", "abc", "-600", "600.0"])
def test_a_range_the_picker_does_not_offer_is_refused_with_the_choices(raw: str) -> None:
    with pytest.raises(BadFrame) as e:
        range_of(raw)
    assert e.value.code == "invalid" and "3600" in str(e.value)


def test_no_range_is_the_live_ten_minutes() -> None:
    assert range_of(None) == range_of("") == LIVE_RANGE_S == 600
    assert range_of("86400") == 86400
