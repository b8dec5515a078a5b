"""The ops alert rules (``livecommerce.alerts``) as values: properties of each band rule,
the alert state's firing edges, the per-minute time-out memory, and the cluster rates.

The same rules on a real gateway, with Redis and SQL, are in ``tests/test_ops.py``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from livecommerce.alerts import (
    ALERTS,
    Alerts,
    AlertState,
    ClusterRates,
    Finding,
    SaleCheck,
    Sample,
    error_rate,
    online_drop,
    payment_timeouts,
    rates,
    stock_drift,
)


def series(online: list[int], errors: list[float] | None = None, *, start_ms: int = 0) -> list[Sample]:
    errs = errors if errors is not None else [0.0] * len(online)
    return [Sample(start_ms + i * 1000, o, 0, 0, 0, e, 10) for i, (o, e) in enumerate(zip(online, errs, strict=True))]


# ----------------------------------------------------------------------------- the bands
@given(st.lists(st.integers(0, 9), min_size=1, max_size=90))
def test_online_drop_never_fires_in_rooms_that_never_reached_the_minimum_peak(online: list[int]) -> None:
    s = series(online)
    assert not online_drop(s, now_ms=s[-1].ts_ms).active


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=90))
def test_online_drop_fires_exactly_when_online_is_below_half_the_peak_before_the_last_10_s(online: list[int]) -> None:
    s = series(online)
    now = s[-1].ts_ms
    f = online_drop(s, now_ms=now)
    peak = max((x.online for x in s if now - 60_000 <= x.ts_ms < now - 10_000), default=0)
    assert f.active == (peak >= 10 and online[-1] < peak / 2)
    assert f.threshold == peak * 0.5 and f.value == online[-1]


@given(st.lists(st.floats(0, 1.0), min_size=1, max_size=400))
def test_error_rate_never_fires_at_or_below_its_floor(errors: list[float]) -> None:
    s = series([0] * len(errors), errors)
    assert not error_rate(s, now_ms=s[-1].ts_ms).active


@given(st.floats(0, 1e6), st.integers(12, 400))
def test_a_steady_error_rate_is_its_own_normal_once_it_has_a_history(rate: float, n: int) -> None:
    s = series([0] * n, [rate] * n)  # more than the last 10 s: a baseline exists
    f = error_rate(s, now_ms=s[-1].ts_ms)
    assert not f.active and f.threshold >= 1.0


@given(st.integers(0, 1000), st.lists(st.integers(0, 1000), max_size=10))
def test_payment_timeouts_band_has_a_floor_and_more_timeouts_never_calm_it(n: int, previous: list[int]) -> None:
    f = payment_timeouts(n, previous)
    assert f.threshold >= 5
    assert f.active == (n >= f.threshold)
    if f.active:
        assert payment_timeouts(n + 1, previous).active


checks = st.lists(
    st.builds(SaleCheck, st.sampled_from(["s1", "s2", "s3"]), st.integers(0, 3), st.integers(0, 3), st.integers(0, 3),
              st.integers(0, 3), st.booleans()),
    max_size=3, unique_by=lambda c: c.sale_id,
)


@given(checks, st.dictionaries(st.sampled_from(["s1", "s2", "s3", "gone"]), st.integers(0, 50_000)), st.integers(50_000, 100_000))
def test_stock_drift_remembers_exactly_the_drifting_sales_and_fires_on_broken_or_late_ones(
    cs: list[SaleCheck], before: dict[str, int], now: int
) -> None:
    f, since = stock_drift(cs, before, now_ms=now, grace_s=20)
    drifting = {c.sale_id for c in cs if c.drift}
    assert set(since) == drifting  # a sale that caught up (or vanished) is forgotten
    assert all(since[s] == before.get(s, now) <= now for s in since)  # first seen, never moved
    late = [c for c in cs if c.drift and now - since[c.sale_id] >= 20_000]
    assert f.active == (any(not c.conserved for c in cs) or bool(late))
    assert f.value == sum(c.drift for c in late)


def test_stock_drift_waits_for_the_grace_period_before_firing() -> None:
    late = [SaleCheck("s1", redis_reserved=2, redis_paid=0, sql_reserved=0, sql_paid=0, conserved=True)]
    alerts = Alerts(drift_grace_s=20)
    assert not alerts.commerce(late, 0, now_ms=1_000)[0].finding.active
    v = alerts.commerce(late, 0, now_ms=21_000)[0]
    assert v.finding.active and v.fired and v.finding.value == 2
    assert not alerts.commerce(late, 0, now_ms=22_000)[0].fired  # still active: fired once
    assert not alerts.commerce([], 0, now_ms=23_000)[0].finding.active


# ----------------------------------------------------------------------------- the state
@given(st.lists(st.booleans(), max_size=30))
def test_an_alert_fires_once_per_episode_and_is_active_since_its_first_reading(flags: list[bool]) -> None:
    state = AlertState()
    was = False
    start = None
    for i, active in enumerate(flags):
        fired = state.update(Finding("error_rate", active, 1.0, 1.0, "m"), i)
        assert fired == (active and not was)
        if fired:
            start = i
        row = {a["alert"]: a for a in state.as_list()}["error_rate"]
        assert row["active"] == active and row["since_ms"] == (start if active else None)
        was = active


def test_every_alert_is_listed_before_its_first_reading() -> None:
    rows = Alerts().as_list()
    assert [r["alert"] for r in rows] == list(ALERTS)
    assert all(not r["active"] and r["message"] == "not evaluated yet" for r in rows)


def test_a_minute_read_twice_keeps_its_largest_count_and_the_baseline_skips_the_last_minute() -> None:
    alerts = Alerts()
    minute = 60_000
    for m in range(2, 12):  # ten quiet minutes of 4 time-outs each (minute 11 read twice)
        alerts.commerce([], 4, now_ms=m * minute)
    alerts.commerce([], 1, now_ms=11 * minute + 30_000)
    assert alerts.timeouts_by_minute[-1] == (11, 4)
    v = alerts.commerce([], 11, now_ms=12 * minute)[1]
    assert not v.finding.active and v.finding.threshold == 12.0  # 3 x 4
    assert alerts.commerce([], 13, now_ms=13 * minute)[1].finding.active  # 13 >= 3 x 4


# ----------------------------------------------------------------------------- the rates
reading = st.fixed_dictionaries({
    "start": st.integers(1, 2), "ts": st.integers(0, 100_000), "errors": st.integers(0, 1000), "requests": st.integers(0, 1000),
    "rooms": st.dictionaries(st.sampled_from(["r", "q"]), st.lists(st.integers(0, 1000), min_size=3, max_size=3)),
})


@given(reading, reading)
def test_rates_are_never_negative_whatever_two_readings_say(a: dict[str, Any], b: dict[str, Any]) -> None:
    r = rates(a, b)
    if r is None:
        return
    assert a["start"] == b["start"] and b["ts"] - a["ts"] >= 200
    assert r["errors"] >= 0 and r["requests"] >= 0
    assert all(v >= 0 for vals in r["rooms"].values() for v in vals)


def test_cluster_rates_sum_fresh_nodes_and_forget_stale_ones() -> None:
    c = ClusterRates(fresh_ms=5_000)
    first = {"a": {"start": 1, "ts": 10_000, "errors": 0, "requests": 0, "rooms": {"r": [0, 0, 0]}},
             "b": {"start": 7, "ts": 10_000, "errors": 0, "requests": 0, "rooms": {"r": [0, 0, 0]}}}
    got = c.read(first, now_ms=10_000)
    assert got.per_room == {} and got.nodes == 2  # a first reading has no rate yet
    second = {"a": {**first["a"], "ts": 12_000, "errors": 2, "requests": 20, "rooms": {"r": [4, 2, 20]}},
              "b": {**first["b"], "ts": 11_000, "errors": 1, "requests": 1, "rooms": {"r": [3, 0, 0]}}}
    got = c.read(second, now_ms=12_000)
    assert got.per_room == {"r": [5.0, 1.0, 10.0]} and (got.errors, got.requests) == (2.0, 11.0)
    # b wrote nothing since: its last rates still count; a went silent for over 5 s: stale
    got = c.read({**second, "a": {**second["a"], "ts": 6_000}}, now_ms=12_500)
    assert got.stale == ["a"] and got.nodes == 1 and got.per_room == {"r": [3.0, 0.0, 0.0]}
    assert "a" not in c.prev and "a" not in c.last


def test_a_restarted_node_counts_again_from_its_second_reading() -> None:
    c = ClusterRates()
    c.read({"a": {"start": 1, "ts": 1_000, "errors": 50, "requests": 0, "rooms": {}}}, now_ms=1_000)
    c.read({"a": {"start": 1, "ts": 2_000, "errors": 60, "requests": 0, "rooms": {}}}, now_ms=2_000)
    restarted = c.read({"a": {"start": 2, "ts": 3_000, "errors": 1, "requests": 0, "rooms": {}}}, now_ms=3_000)
    assert restarted.errors == 0.0  # no negative rate from the counters starting over
    assert c.read({"a": {"start": 2, "ts": 4_000, "errors": 3, "requests": 0, "rooms": {}}}, now_ms=4_000).errors == 2.0
