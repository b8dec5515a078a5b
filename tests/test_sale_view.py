"""A gateway's view of a sale (gateway.commerce.SaleView): its steps are sale_step's, and its
local answers are decide_reserve's on what the node heard, given only to users who hold
nothing once the sale closed and its buyers are known. No I/O."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.commerce import SaleView
from livecommerce.flash_sale import Sale, SaleStep, decide_reserve

SALE = Sale("s1", "r1", "p1", 100, 5, 2, 1_000, 2_000)
STEPS: list[SaleStep] = ["start", "sell_out", "restock", "end"]


def closed(step: SaleStep, buyers: set[str]) -> SaleView:
    v = SaleView()
    v.step("start")
    v.step(step)
    v.remaining = 0
    v.buyers = buyers
    return v


def test_a_sold_out_sale_answers_late_buyers_but_not_its_own_buyers() -> None:
    v = closed("sell_out", {"b"})
    assert v.state == "sold_out"
    assert v.answer(SALE, "late", 1, 1_500) == "sold_out"
    assert v.answer(SALE, "b", 1, 1_500) is None  # a buyer's retry goes to Redis: its first order


def test_nothing_is_answered_here_before_the_buyers_are_known_or_while_live() -> None:
    v = closed("sell_out", set())
    v.buyers = None
    assert v.answer(SALE, "late", 1, 1_500) is None
    live = SaleView()
    live.step("start")
    live.buyers = set()
    assert live.answer(SALE, "late", 1, 1_500) is None


def test_an_ended_sale_answers_ended_and_a_room_end_answers_room_ended() -> None:
    assert closed("end", set()).answer(SALE, "late", 1, 1_500) == "ended"
    v = closed("end", set())
    v.room_closed = True
    assert v.answer(SALE, "late", 1, 1_500) == "room_ended"
    # a sold-out sale past its window: what the reserve script says, time before stock
    assert closed("sell_out", set()).answer(SALE, "late", 1, 2_000) == "ended"


def test_a_late_event_does_not_reopen_an_ended_sale() -> None:
    v = closed("end", set())
    assert not v.step("sell_out") and not v.step("start") and not v.step("restock")
    assert v.state == "ended"


def test_a_node_that_heard_nothing_before_takes_the_broadcast_s_word() -> None:
    after: dict[SaleStep, str] = {"start": "live", "sell_out": "sold_out", "restock": "live", "end": "ended"}
    for step, state in after.items():
        v = SaleView()
        assert v.step(step) and v.state == state


@given(st.lists(st.sampled_from(STEPS), max_size=8), st.integers(0, 3), st.integers(1, 3), st.integers(0, 3_000))
def test_a_local_answer_is_always_decide_reserve_s(steps: list[SaleStep], remaining: int, qty: int, now: int) -> None:
    v = SaleView()
    for s in steps:
        v.step(s)
    v.remaining, v.buyers = remaining, set()
    got = v.answer(SALE, "late", qty, now)
    if got is not None:
        assert v.state in ("sold_out", "ended")
        assert got == decide_reserve(SALE, now_ms=now, remaining=remaining, bought=0, qty=qty, state=v.state)
