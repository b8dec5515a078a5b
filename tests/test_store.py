"""The order lifecycle (pure) and the SQL store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecommerce import migrations
from livecommerce.errors import BadFrame, ConfigError, Conflict, NotFound, Unavailable
from livecommerce.flash_sale import Sale
from livecommerce.orders import (
    ORDER_STATES,
    ORDER_TRANSITIONS,
    Order,
    OrderState,
    OrderStep,
    Payment,
    apply_transition,
    check_transition,
    is_overdue,
    new_order,
    payment_deadline,
)
from livecommerce.store_sql import SqlStore, split_url

T0 = 1_700_000_000_000


def order(
    oid: str = "o1",
    *,
    user: str = "u1",
    sale: str = "s1",
    room: str = "r1",
    qty: int = 2,
    now: int = T0,
) -> Order:
    return new_order(
        order_id=oid,
        sale_id=sale,
        room_id=room,
        user_id=user,
        qty=qty,
        unit_price=1000,
        now_ms=now,
        payment_window_s=900,
        request_id=f"rq-{oid}",
    )


# ================================================================== pure: orders.py


@pytest.mark.parametrize("frm", ORDER_STATES)
@pytest.mark.parametrize("to", ORDER_STATES)
def test_every_order_step_is_a_change_a_noop_or_a_conflict(frm: OrderState, to: OrderState):
    if to == frm:
        assert check_transition(frm, to) is False
    elif to in ORDER_TRANSITIONS[frm]:
        assert check_transition(frm, to) is True
    else:
        with pytest.raises(Conflict):
            check_transition(frm, to)


def test_a_new_order_carries_its_amount_and_deadline():
    o = new_order(
        order_id="o",
        sale_id="s",
        room_id="r",
        user_id="u",
        qty=3,
        unit_price=500,
        now_ms=T0,
        payment_window_s=60,
        coupon_id="c1",
        discount=200,
    )
    assert (o.amount, o.discount, o.state, o.pay_by_ms) == (1300, 200, "reserved", T0 + 60_000)
    assert o.pay_by_ms == payment_deadline(T0, 60)
    assert not is_overdue(o, T0 + 59_999) and is_overdue(o, T0 + 60_000)
    with pytest.raises(BadFrame):
        new_order(
            order_id="o",
            sale_id="s",
            room_id="r",
            user_id="u",
            qty=0,
            unit_price=1,
            now_ms=0,
            payment_window_s=1,
        )


def test_partial_then_full_refund_by_amounts():
    o = apply_transition(order(), "paid", now_ms=T0 + 1).order
    o = apply_transition(o, "refund_requested", now_ms=T0 + 2).order
    part = apply_transition(o, "paid", now_ms=T0 + 3, refund_qty=1, refund_amount=1000)
    assert part.changed and part.order.state == "paid" and part.order.net_amount == 1000
    o = apply_transition(part.order, "refund_requested", now_ms=T0 + 4).order
    with pytest.raises(BadFrame):  # a "partial" refund of everything must be settled as refunded
        apply_transition(o, "paid", now_ms=T0 + 5, refund_qty=1, refund_amount=1000)
    with pytest.raises(BadFrame):  # refunded must return exactly the rest
        apply_transition(o, "refunded", now_ms=T0 + 5, refund_amount=10)
    full = apply_transition(o, "refunded", now_ms=T0 + 5)
    assert (full.order.refunded_qty, full.order.refunded_amount, full.order.net_amount) == (
        2,
        2000,
        0,
    )
    rejected = apply_transition(o, "paid", now_ms=T0 + 6)  # request rejected: nothing back
    assert rejected.order.refunded_amount == 1000
    with pytest.raises(BadFrame):
        apply_transition(order(), "paid", now_ms=T0, refund_amount=5)


@given(
    st.lists(
        st.tuples(st.sampled_from(ORDER_STATES), st.integers(0, 3), st.integers(0, 3000)),
        max_size=30,
    )
)
def test_no_sequence_of_steps_refunds_more_than_was_paid(steps):
    o = order(qty=3)
    for to, rq, ra in steps:
        try:
            o = apply_transition(o, to, now_ms=T0, refund_qty=rq, refund_amount=ra).order
        except (Conflict, BadFrame):
            continue
        assert 0 <= o.refunded_amount <= o.amount and 0 <= o.refunded_qty <= o.qty
        assert o.state != "refunded" or o.refunded_amount == o.amount


# ================================================================== SQL store (both backends)


async def test_migrations_are_explicit_idempotent_and_safe_to_run_concurrently(store_url):
    assert (await migrations.status(store_url)).current == 0
    bare = SqlStore(store_url)
    try:
        with pytest.raises(ConfigError):
            await bare.check_schema()
        with pytest.raises(Unavailable, match="db upgrade"):
            await bare.wallet_balance("u1")
        assert await asyncio.gather(*(migrations.upgrade(store_url) for _ in range(3))) == [migrations.LATEST] * 3
        assert await migrations.upgrade(store_url) == migrations.LATEST
        status = await migrations.status(store_url)
        assert status.up_to_date and status.pending == []
        assert await bare.check_schema() == migrations.LATEST
        assert await bare.wallet_balance("u1") == 0
    finally:
        await bare.close()


async def test_apply_runs_the_effect_once_under_concurrent_duplicates(store):
    ran = 0

    async def deliver(event_id: str, user: str) -> None:
        nonlocal ran
        async with store.apply("points", event_id) as tx:
            if tx is None:
                return
            ran += 1
            await asyncio.sleep(0.005)  # widen the race window
            assert await tx.add_points_entry(user, "viewer", 10, "gift.sent", event_id, T0)

    await asyncio.gather(*(deliver("ev-dup", "u1") for _ in range(20)))
    assert ran == 1
    assert await store.points_balance("u1") == 10
    # many events, each delivered three times, interleaved
    await asyncio.gather(*(deliver(f"ev{i}", "u2") for i in range(30) for _ in range(3)))
    assert ran == 31
    entries = await store.points_ledger("u2", limit=1000)
    assert len(entries) == 30
    assert await store.points_balance("u2") == sum(e.delta for e in entries) == 300
    assert await store.was_applied("points", "ev7") and not await store.was_applied("wallet", "ev7")


async def test_a_failed_effect_commits_nothing_and_runs_again(store):
    with pytest.raises(RuntimeError):
        async with store.apply("wallet", "ev1") as tx:
            assert tx is not None
            await tx.add_wallet_entry("u1", 500, "topup", "ev1", T0)
            raise RuntimeError("worker crashed mid-effect")
    assert await store.wallet_balance("u1") == 0 and not await store.was_applied("wallet", "ev1")
    async with store.apply("wallet", "ev1") as tx:
        assert tx is not None
        await tx.add_wallet_entry("u1", 500, "topup", "ev1", T0)
    async with store.apply("wallet", "ev1") as tx:
        assert tx is None
    async with store.apply("points", "ev1") as tx:  # the guard is per consumer
        assert tx is not None
    assert await store.wallet_balance("u1") == 500


async def test_reserved_orders_are_stored_once_however_often_delivered(store):
    o = order()

    async def deliver() -> bool:
        async with store.apply("orders", "ev-r1") as tx:
            return tx is not None and await tx.insert_reserved(o, "ev-r1")

    assert sum(await asyncio.gather(*(deliver() for _ in range(10)))) == 1
    assert await store.insert_reserved(o, "ev-other") is False  # idempotent on the order id
    assert await store.get_order("o1") == o
    assert [(e.from_state, e.to_state, e.event_id) for e in await store.order_history("o1")] == [
        (None, "reserved", "ev-r1")
    ]
    with pytest.raises(BadFrame):
        await store.insert_reserved(dataclasses.replace(o, id="o2", state="paid"), "ev-x")


async def test_order_transitions_keep_the_full_history(store):
    await store.insert_reserved(order(), "e0")
    r = await store.transition("o1", "paid", "e1", now_ms=T0 + 1)
    assert r.changed and r.order.state == "paid"
    assert not (await store.transition("o1", "paid", "e1", now_ms=T0 + 2)).changed  # redelivered
    assert not (await store.transition("o1", "paid", "e1b", now_ms=T0 + 2)).changed  # already so
    await store.transition("o1", "refund_requested", "e2", now_ms=T0 + 3, reason="broken lid")
    await store.transition("o1", "paid", "e3", now_ms=T0 + 4, refund_qty=1, refund_amount=1000)
    await store.transition("o1", "refund_requested", "e4", now_ms=T0 + 5)
    done = await store.transition("o1", "refunded", "e5", now_ms=T0 + 6)
    assert (done.order.state, done.order.refunded_amount, done.order.net_amount) == (
        "refunded",
        2000,
        0,
    )
    hist = await store.order_history("o1")
    assert [(h.from_state, h.to_state) for h in hist] == [
        (None, "reserved"),
        ("reserved", "paid"),
        ("paid", "refund_requested"),
        ("refund_requested", "paid"),
        ("paid", "refund_requested"),
        ("refund_requested", "refunded"),
    ]
    assert [h.refund_amount for h in hist] == [0, 0, 0, 1000, 0, 1000]
    assert hist[2].reason == "broken lid"
    assert await store.get_order("o1") == done.order


async def test_an_illegal_transition_raises_conflict_and_writes_nothing(store):
    await store.insert_reserved(order(), "e0")
    await store.transition("o1", "cancelled", "e1", now_ms=T0 + 1)
    with pytest.raises(Conflict):
        await store.transition("o1", "paid", "e2", now_ms=T0 + 2)
    assert (await store.get_order("o1")).state == "cancelled"  # type: ignore[union-attr]
    assert len(await store.order_history("o1")) == 2
    with pytest.raises(NotFound):
        await store.transition("nope", "paid", "e3", now_ms=T0)
    await store.insert_reserved(order("o2"), "e4")
    with pytest.raises(Conflict):  # an event id belongs to one change only
        await store.transition("o2", "paid", "e1", now_ms=T0)


async def test_a_payment_racing_a_time_out_has_one_winner(store):
    for i in range(10):
        await store.insert_reserved(order(f"o{i}"), f"e{i}")
    outcomes = await asyncio.gather(
        *(
            store.transition(f"o{i}", to, f"{to}-{i}", now_ms=T0 + 1)
            for i in range(10)
            for to in ("paid", "cancelled")
        ),
        return_exceptions=True,
    )
    for i in range(10):
        pay, cancel = outcomes[2 * i], outcomes[2 * i + 1]
        won = [x for x in (pay, cancel) if not isinstance(x, BaseException)]
        assert len(won) == 1 and won[0].changed  # type: ignore[union-attr]
        assert sum(isinstance(x, Conflict) for x in (pay, cancel)) == 1
        assert len(await store.order_history(f"o{i}")) == 2


def order_steps(seed: int, p: str) -> list[OrderStep]:
    """A random stream of order events as the orders worker turns them into steps, ids
    prefixed with ``p``: reserves (some redelivered, some of an order already there), pays
    and cancels (some redelivered, some illegal, some with the order rebuilt because its
    reserve never arrived, some naming another order's event id), payments with coupons."""
    rnd = random.Random(seed)
    steps: list[OrderStep] = []
    seen: set[str] = set()  # orders a step named: a move of another carries its order (else NotFound)
    for k in range(40):
        i = rnd.randrange(6)
        oid = f"{p}o{i}"
        o = order(oid, user=f"u{i}", qty=1 + i % 3, now=T0 + k)
        kind = rnd.choice(["reserve", "reserve", "pay", "pay", "cancel", "again", "foreign"])
        if kind == "reserve":
            steps.append(OrderStep(f"{oid}:reserved" if rnd.random() < 0.8 else f"{oid}:r{k}", oid, "reserved", T0 + k, order=o))
        elif kind in ("pay", "cancel"):
            pay = Payment(o.amount - 100 * (k % 2), 100 * (k % 2), f"c{k}" if k % 2 else None) if kind == "pay" else None
            steps.append(OrderStep(f"{oid}:{'paid' if pay else 'cancelled'}", oid, "paid" if pay else "cancelled", T0 + 100 + k,
                                   order=o if oid not in seen or rnd.random() < 0.5 else None, reason=None if pay else "timeout",
                                   payment=pay))
        elif kind == "again" and steps:
            steps.append(rnd.choice(steps))  # a redelivered event
        elif kind == "foreign":
            other = f"{p}o{(i + 1) % 6}"
            steps.append(OrderStep(f"{other}:paid", oid, "paid", T0 + 200 + k, order=o))
        seen.update(s.order_id for s in steps[-1:])
    return steps


async def steps_one_by_one(store: SqlStore, steps: list[OrderStep]) -> list[tuple[bool, bool]]:
    """What the orders worker did before batches: each step through ``insert_reserved``,
    ``transition``, ``record_payment``; returns (changed, refused) per step."""
    out: list[tuple[bool, bool]] = []
    for s in steps:
        if s.to == "reserved":
            assert s.order is not None
            out.append((await store.insert_reserved(s.order, s.event_id), False))
            continue
        if await store.get_order(s.order_id) is None:
            assert s.order is not None  # order_steps never moves an order nobody named
            await store.insert_reserved(s.order, f"{s.order_id}:reserved")
        try:
            res = await store.transition(s.order_id, s.to, s.event_id, now_ms=s.ts_ms, reason=s.reason)
        except Conflict:
            out.append((False, True))
            continue
        if s.payment is not None:
            await store.record_payment(s.order_id, amount=s.payment.amount, discount=s.payment.discount, coupon_id=s.payment.coupon_id)
        out.append((res.changed, False))
    return out


async def orders_seen(store: SqlStore, p: str) -> dict[str, tuple[object, ...]]:
    """Every order of prefix ``p`` with its history, ids without the prefix."""
    out: dict[str, tuple[object, ...]] = {}
    for o in await store.list_orders(limit=1000):
        if o.id.startswith(p):
            hist = [(h.event_id.removeprefix(p), h.from_state, h.to_state, h.ts_ms, h.reason) for h in await store.order_history(o.id)]
            out[o.id.removeprefix(p)] = (dataclasses.replace(o, id=o.id.removeprefix(p), request_id=(o.request_id or "").replace(p, "")), hist)
    return out


async def test_a_batch_of_order_steps_ends_as_the_same_steps_one_at_a_time(store):
    for seed in range(12):
        one, batch = order_steps(seed, f"a{seed}."), order_steps(seed, f"b{seed}.")
        want = await steps_one_by_one(store, one)
        async with store.write() as tx:
            got = await tx.settle(batch)
        assert [(o.changed, o.refused is not None) for o in got] == want, seed
        assert await orders_seen(store, f"b{seed}.") == await orders_seen(store, f"a{seed}."), seed
        async with store.write() as tx:  # the same batch again (a redelivery) changes nothing
            again = await tx.settle(batch)
        assert not any(o.changed for o in again)
        assert await orders_seen(store, f"b{seed}.") == await orders_seen(store, f"a{seed}."), seed


async def test_a_batch_moving_an_order_nobody_knows_writes_nothing(store):
    steps = [OrderStep("y1:reserved", "y1", "reserved", T0, order=order("y1")),
             OrderStep("y2:paid", "y2", "paid", T0, payment=Payment(100, 0))]  # no reserve, no order to rebuild it from
    with pytest.raises(NotFound):
        async with store.write() as tx:
            await tx.settle(steps)
    assert await store.get_order("y1") is None


async def test_a_batch_reserving_under_another_orders_event_id_writes_nothing(store):
    await store.insert_reserved(order("x1"), "x1:reserved")
    steps = [OrderStep("x2:reserved", "x2", "reserved", T0, order=order("x2")),
             OrderStep("x1:reserved", "x3", "reserved", T0, order=order("x3"))]  # x1's event id for x3
    with pytest.raises(Conflict):
        async with store.write() as tx:
            await tx.settle(steps)
    assert await store.get_order("x2") is None and await store.get_order("x3") is None


async def test_ledger_balances_equal_the_sum_of_their_entries(store):
    deltas = [(f"ref{i % 40}", 100 if i % 3 else -30) for i in range(60)]  # 20 redeliveries
    added = await asyncio.gather(
        *(store.add_wallet_entry("u1", d, "gift.sent", ref, T0) for ref, d in deltas)
    )
    assert sum(added) == 40
    entries = await store.wallet_ledger("u1", limit=1000)
    assert len(entries) == 40 and len({e.ref_event_id for e in entries}) == 40
    assert await store.wallet_balance("u1") == sum(e.delta for e in entries)
    assert await store.wallet_balance("nobody") == 0
    # points: one event may award several (user, reason) pairs, each once
    assert await store.add_points_entry("h1", "host", 50, "gift.received", "g1", T0)
    assert await store.add_points_entry("u1", "viewer", 5, "gift.sent", "g1", T0)
    assert await store.add_points_entry("u1", "viewer", 1, "comment", "g1", T0)
    assert not await store.add_points_entry("u1", "viewer", 5, "gift.sent", "g1", T0)
    assert await store.add_points_entry("u1", "viewer", -2, "refund.clawback", "g2", T0)
    assert (
        await store.points_balance("u1")
        == 4
        == sum(e.delta for e in await store.points_ledger("u1"))
    )
    assert (
        await store.points_balance("h1", "host") == 50
        and await store.points_balance("h1", "viewer") == 0
    )
    assert [e.reason for e in await store.points_ledger("u1", role="viewer")] == [
        "refund.clawback",
        "comment",
        "gift.sent",
    ]
    with pytest.raises(BadFrame):
        await store.add_points_entry("u1", "admin", 1, "x", "g3", T0)  # type: ignore[arg-type]


async def test_orders_are_listed_by_filter_and_summed_per_sale(store):
    specs = [
        ("o1", "u1", "s1", "r1"),
        ("o2", "u2", "s1", "r1"),
        ("o3", "u1", "s2", "r2"),
        ("o4", "u3", "s1", "r1"),
    ]
    for i, (oid, user, sale, room) in enumerate(specs):
        await store.insert_reserved(
            order(oid, user=user, sale=sale, room=room, now=T0 + i), f"e-{oid}"
        )
    await store.transition("o1", "paid", "p1", now_ms=T0 + 10)
    await store.transition("o2", "cancelled", "c2", now_ms=T0 + 10)
    assert [o.id for o in await store.list_orders(user_id="u1")] == ["o3", "o1"]
    assert [o.id for o in await store.list_orders(sale_id="s1", state="reserved")] == ["o4"]
    assert [o.id for o in await store.list_orders(room_id="r2")] == ["o3"]
    assert [o.id for o in await store.list_orders(limit=2, offset=1)] == ["o3", "o2"]
    stats = await store.sale_stats("s1")
    assert stats.orders == {"paid": 1, "cancelled": 1, "reserved": 1}
    assert (stats.reserved_units, stats.paid_units, stats.gmv, stats.buyers) == (2, 2, 2000, 2)
    assert (await store.sale_stats("none")).orders == {}
    due = await store.due_orders(T0 + 900_000 + 3)
    assert [o.id for o in due] == ["o3", "o4"]  # o1 paid, o2 cancelled, deadlines in order


async def test_campaigns_are_saved_and_updated(store):
    sale = Sale("s1", "r1", "p1", 1999, 100, 2, T0, T0 + 60_000, 300, True)
    await store.put_sale(sale, state="scheduled", now_ms=T0 - 1, product_name="Tea set")
    await store.put_sale(
        dataclasses.replace(sale, ends_ms=T0 + 30_000), state="ended", now_ms=T0 + 30_000
    )
    rec = await store.get_sale("s1")
    assert rec is not None
    assert (rec.state, rec.sale.ends_ms, rec.product_name, rec.created_ms) == (
        "ended",
        T0 + 30_000,
        "Tea set",
        T0 - 1,
    )
    assert rec.sale.restock_on_refund is True
    assert [r.sale.id for r in await store.list_sales(room_id="r1", state="ended")] == ["s1"]
    assert await store.list_sales(state="live") == [] and await store.get_sale("nope") is None


# ================================================================== configuration and failures


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:1/test",
        "sqlite+aiosqlite:////proc/no/such/dir/lc.db",
    ],
)
async def test_an_unreachable_database_raises_unavailable(url):
    s = SqlStore(url)
    try:
        with pytest.raises(Unavailable):
            await s.wallet_balance("u1")
    finally:
        await s.close()
    with pytest.raises(Unavailable):
        await migrations.upgrade(url)


def test_bad_database_urls_are_configuration_errors():
    for bad in (
        "mysql://x/y",
        "sqlite+aiosqlite:///x.db?schema=a",
        "postgresql+asyncpg://h/db?schema=Bad-Name",
        "::",
    ):
        with pytest.raises(ConfigError):
            split_url(bad)
    assert split_url("postgresql+asyncpg://h/db?schema=lc_1")[1] == "lc_1"
