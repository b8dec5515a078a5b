"""The hot-room comment budget (``livecommerce.hot_room``): properties of the pure rule."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from livecommerce.hot_room import FRESH, apply_budget, comment_rank

RATE = 20.0
TICK_S = 0.05


def comment(i: int, *, role: str = "viewer", buyer: bool = False, level: int = 0) -> dict[str, Any]:
    d: dict[str, Any] = {"text": f"c{i}", "role": role, "level": level}
    if buyer:
        d["buyer"] = True
    return {"t": "comment", "seq": i, "d": d}


events = st.builds(
    lambda i, t, role, buyer, level: comment(i, role=role, buyer=buyer, level=level) if t == "comment" else {"t": t, "seq": i, "d": {}},
    st.integers(0, 10**6),
    st.sampled_from(["comment", "comment", "comment", "likes", "gift", "sale.started"]),
    st.sampled_from(["viewer", "viewer", "host", "ops"]),
    st.booleans(),
    st.integers(0, 50),
)
batches = st.lists(events, max_size=60).map(lambda es: [{**e, "seq": i} for i, e in enumerate(es)])
allowances = st.one_of(st.just(FRESH), st.floats(0, RATE))


def is_subsequence(small: list[Any], big: list[Any]) -> bool:
    it = iter(big)
    return all(any(x is y for y in it) for x in small)


@given(batches, allowances)
def test_only_comments_are_shed_and_what_is_shown_keeps_its_order(items, allowance):
    shown, _, shed = apply_budget(items, allowance, rate=RATE, tick_s=TICK_S)
    assert is_subsequence(shown, items)
    assert [e for e in items if e["t"] != "comment"] == [e for e in shown if e["t"] != "comment"]
    assert shed == len(items) - len(shown)


@given(batches, allowances)
def test_the_bucket_stays_between_empty_and_one_second_of_comments(items, allowance):
    _, left, _ = apply_budget(items, allowance, rate=RATE, tick_s=TICK_S)
    assert 0 <= left <= RATE


@given(batches, allowances)
def test_a_tick_shows_every_comment_under_the_budget_and_the_whole_bucket_over_it(items, allowance):
    bucket = min(RATE, (RATE if allowance < 0 else allowance) + RATE * TICK_S)
    shown, left, shed = apply_budget(items, allowance, rate=RATE, tick_s=TICK_S)
    n = sum(e["t"] == "comment" for e in items)
    if n <= bucket:
        assert shed == 0 and shown == items and left == bucket - n
    else:
        assert n - shed == int(bucket)


@given(batches, allowances)
def test_a_shed_comment_never_outranks_a_shown_one(items, allowance):
    shown, _, _ = apply_budget(items, allowance, rate=RATE, tick_s=TICK_S)
    kept = {id(e) for e in shown}
    comments = [e for e in items if e["t"] == "comment"]
    shown_c = [e for e in comments if id(e) in kept]
    shed_c = [e for e in comments if id(e) not in kept]
    for s in shed_c:
        for k in shown_c:
            # a shown comment ranks at least as well; among equals the earlier one is shown
            assert comment_rank(k) < comment_rank(s) or (comment_rank(k) == comment_rank(s) and k["seq"] < s["seq"])


@given(st.lists(st.integers(0, 40), min_size=1, max_size=200))
def test_over_many_ticks_a_room_shows_at_most_a_burst_plus_the_rate(per_tick):
    allowance = FRESH
    shown_total = 0
    for n in per_tick:
        shown, allowance, _ = apply_budget([comment(i) for i in range(n)], allowance, rate=RATE, tick_s=TICK_S)
        shown_total += len(shown)
    assert shown_total <= RATE + RATE * TICK_S * len(per_tick) + 1e-9


@given(batches, st.floats(-5, 0), allowances)
def test_no_budget_shows_everything_and_keeps_the_bucket(items, rate, allowance):
    shown, left, shed = apply_budget(items, allowance, rate=rate, tick_s=TICK_S)
    assert shown is items and left == allowance and shed == 0


def test_staff_then_buyers_then_levels_are_kept_first():
    items = [comment(0, level=9), comment(1, buyer=True), comment(2, role="host"), comment(3, level=3), comment(4, role="ops")]
    shown, left, shed = apply_budget(items, 0.0, rate=60.0, tick_s=0.05)  # 3 tokens this tick
    assert [e["seq"] for e in shown] == [1, 2, 4] and shed == 2 and abs(left) < 1e-9
