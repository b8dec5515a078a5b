"""Host earnings: the split and statement rules (pure, hypothesis), the earnings worker on
real Redis and SQL (concurrent gifts, redelivered batches, a changed split), and the HTTP
statement and ops reversal through a real gateway (exactly once, the sender's coins back,
the wallet ledger still equal to the balance, 4xx for bad input)."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from livecommerce import earnings_sql
from livecommerce.earnings import (
    DAY_MS,
    EarningsRow,
    Period,
    accrual,
    host_amount,
    parse_period,
    parse_reversal,
    reversal_event,
    reversal_id,
    row_for,
    share_bp,
    statement,
    statement_csv,
)
from livecommerce.errors import BadFrame, ConfigError
from livecommerce.gifts import GiftSpec
from livecommerce.keys import Keys
from livecommerce.log import LogEvent, new_event
from livecommerce.log_redis import RedisLog
from livecommerce.schema import host_earnings
from livecommerce.store_sql import SqlStore
from livecommerce.wallet import ledger_delta
from livecommerce.wallet_redis import GiftOrder, RedisWallet, SentGift
from tests.wsclient import Client
from workers.earnings import EarningsLedger
from workers.earnings import drain as drain_earnings
from workers.wallet import drain as drain_wallet

ROSE = GiftSpec("rose", "Rose", 3, 1)


# ---------------------------------------------------------------- pure rules


def test_the_split_is_kept_in_basis_points_and_must_be_a_share() -> None:
    assert share_bp(0.5) == 5000 and share_bp(0) == 0 and share_bp(1) == 10_000 and share_bp(0.333) == 3330
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ConfigError):
            share_bp(bad)  # type: ignore[arg-type]


@given(st.integers(1, 10**7), st.integers(0, 10_000))
def test_the_host_never_gets_more_than_the_split_and_loses_less_than_a_coin(value: int, bp: int) -> None:
    amount = host_amount(value, bp)
    assert 0 <= amount * 10_000 <= value * bp < (amount + 1) * 10_000


def test_an_accrual_records_its_split_and_a_reversal_takes_back_exactly_that() -> None:
    data = {"user": "fan", "room": "r1", "host": "", "gift_id": "rose", "count": 3, "price": 3, "value": 9}
    acc = accrual("g1", data, host="anna", bp=5000, ts_ms=10)
    assert (acc.host, acc.amount, acc.share_bp, acc.kind) == ("anna", 4, 5000, "accrual")
    assert accrual("g1", data, host=None, bp=5000, ts_ms=10).host == "room:r1"
    ev = reversal_event(acc, parse_reversal({"kind": "chargeback"}), by="ops")
    rev = row_for(reversal_id("g1"), "gift.reversed", ev, host=None, bp=1234, ts_ms=20)  # today's split changes nothing
    assert rev is not None and (rev.amount, rev.share_bp, rev.gift_event_id, rev.host) == (-4, 5000, "g1", "anna")
    assert ev["refund_coins"] == 0 and ledger_delta("gift.reversed", ev) is None  # a chargeback returns no coins
    refund = reversal_event(acc, parse_reversal({"kind": "refund", "reason": "sent by mistake"}), by="ops")
    assert ledger_delta("gift.reversed", refund) == ("fan", 9, "gift.refund")
    assert row_for("t1", "wallet.topup", {"user": "u", "amount": 5}, host=None, bp=5000, ts_ms=1) is None


def test_bad_reversal_bodies_and_periods_are_refused_with_a_reason() -> None:
    for bad in ({}, {"kind": "gift"}, {"kind": "refund", "reason": 5}, {"kind": "refund", "reason": "x" * 201}):
        with pytest.raises(BadFrame):
            parse_reversal(bad)
    now = 100 * DAY_MS
    assert parse_period({}, now_ms=now) == Period(now - 30 * DAY_MS, now)
    assert parse_period({"from": "2026-12-01", "to": "2026-12-02"}, now_ms=now).to_ms - parse_period(
        {"from": "2026-12-01", "to": "2026-12-02"}, now_ms=now).from_ms == DAY_MS
    for q in ({"from": "5", "to": "5"}, {"from": "yesterday"}, {"from": "0", "to": str(400 * DAY_MS)}, {"to": "-3"}):
        with pytest.raises(BadFrame):
            parse_period(q, now_ms=now)


rows_st = st.lists(st.tuples(st.sampled_from(["accrual", "reversal"]), st.integers(1, 1000)), max_size=30)


@given(st.integers(-10**6, 10**6), rows_st)
def test_the_closing_balance_is_the_opening_plus_the_periods_rows(opening: int, raw: list[tuple[str, int]]) -> None:
    rows = [EarningsRow(f"e{i}", f"g{i}", k, "h", "r", "s", "rose", a * 2, 5000, a if k == "accrual" else -a, i)  # type: ignore[arg-type]
            for i, (k, a) in enumerate(raw)]
    totals = {k: (sum(r.amount for r in rows if r.kind == k), sum(1 for r in rows if r.kind == k)) for k in ("accrual", "reversal")}
    st_ = statement("h", Period(0, 100), opening=opening, totals=totals, rows=rows)  # type: ignore[arg-type]
    assert st_.closing == opening + sum(r.amount for r in rows)
    assert st_.accruals >= 0 >= st_.reversals
    lines = list(csv.DictReader(io.StringIO(statement_csv(st_))))
    assert lines[0]["kind"] == "opening" and lines[-1]["kind"] == "closing"
    assert int(lines[-1]["balance"]) == st_.closing == int(lines[-2]["balance"] if rows else opening)
    assert sum(int(x["amount"]) for x in lines[1:-1]) == st_.accruals + st_.reversals


# ---------------------------------------------------------------- the worker


def _gift(i: int, *, user: str = "fan", host: str | None = "anna", value: int = 3, room: str = "r1") -> LogEvent:
    d = {"user": user, "room": room, "host": host or "", "gift_id": "rose", "count": 1, "price": value, "value": value}
    return new_event("gifts", user, "gift.sent", d, f"g{i}", 1_000 + i)


async def _sums(store: SqlStore) -> dict[str, tuple[int, int]]:
    async with store.read() as tx:
        res = await tx.conn.execute(select(host_earnings.c.host_id, func.sum(host_earnings.c.amount), func.count())
                                    .group_by(host_earnings.c.host_id))
        return {str(h): (int(a), int(n)) for h, a, n in res}


async def test_concurrent_gifts_accrue_once_each_at_the_split_even_when_every_batch_comes_again(
    redis: Any, keys: Keys, store: SqlStore
) -> None:
    wallet = RedisWallet(redis, keys)
    log = RedisLog(redis, keys)
    users = [f"fan{i}" for i in range(8)]
    for u in users:
        t = await wallet.topup(user=u, amount=300, idempotency_key="k", by="ops", now_ms=1)
        await wallet.publish(log, [t.event])
    now = int(time.time() * 1000)
    batches = await asyncio.gather(*(  # eight gateways' gift batches at once, every sender in each
        wallet.send_gifts([GiftOrder(u, "r1", "anna", ROSE, 1 + (i + j) % 3, None) for j, u in enumerate(users)], now_ms=now)
        for i in range(25)))
    sent = [r for b in batches for r in b if isinstance(r, SentGift)]
    assert len(sent) == 200
    await wallet.publish(log, [s.event for s in sent])
    total = sum(int(s.event.data["value"]) for s in sent)
    ledger = EarningsLedger(store, redis, keys, share=0.5)
    assert await drain_earnings(log, ledger) == len(sent) + len(users)
    events = [s.event for s in sent]
    await ledger(events)  # a whole batch delivered again (a crash before the ack)
    await ledger(events[:7] + events[:7])  # and an id twice in one batch
    await log.append_many(events[:50])  # a duplicate append (the outbox sweeper after a slow gateway)
    await drain_earnings(log, ledger)
    want = sum(host_amount(int(e.data["value"]), 5000) for e in events)
    assert await _sums(store) == {"anna": (want, len(sent))}
    assert want == sum(int(e.data["value"]) * 5000 // 10_000 for e in events) and abs(want - total / 2) <= len(sent) / 2
    assert ledger.written == len(sent)


async def test_a_new_split_applies_to_new_gifts_only(redis: Any, keys: Keys, store: SqlStore) -> None:
    await EarningsLedger(store, redis, keys, share=0.5)([_gift(1, value=10), _gift(2, value=10)])
    later = EarningsLedger(store, redis, keys, share=0.7)
    await later([_gift(1, value=10), _gift(3, value=10)])  # g1 again: still at its own split
    rows = (await earnings_sql.gift_rows(store, "g1"))["accrual"], (await earnings_sql.gift_rows(store, "g3"))["accrual"]
    assert [(r.share_bp, r.amount) for r in rows] == [(5000, 5), (7000, 7)]
    assert await _sums(store) == {"anna": (17, 3)}


async def test_a_gift_without_a_host_earns_for_the_rooms_host(redis: Any, keys: Keys, store: SqlStore) -> None:
    await redis.hset(keys.room_meta("r9"), mapping={"host": "bea", "state": "live"})
    await EarningsLedger(store, redis, keys, share=0.5)([_gift(1, host=None, room="r9", value=4)])
    assert await _sums(store) == {"bea": (2, 1)}


# ---------------------------------------------------------------- HTTP


async def _call(s: aiohttp.ClientSession, method: str, url: str, tok: str | None, **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with s.request(method, url, headers=headers, **kw) as r:
        if r.content_type == "text/csv":
            return r.status, await r.text()
        return r.status, await r.json()


async def test_ops_reverse_a_gift_once_the_host_statement_shows_it_and_the_sender_gets_the_coins_back(
    gateway_factory: Any, token: Callable[..., str], store: SqlStore, redis: Any
) -> None:
    node = await gateway_factory(database_url=store.url, command_rate=1000.0, command_burst=1000)
    keys = Keys(node.settings.key_prefix)
    log = node.services.log
    ops, host = token("ops", "ops"), token("anna", "host", rooms=("r1",))
    async with aiohttp.ClientSession() as s:
        assert (await _call(s, "POST", f"{node.url}/api/v1/rooms", host, json={"id": "r1"}))[0] == 201
        assert (await _call(s, "POST", f"{node.url}/api/v1/rooms/r1/live", host))[0] == 200
        for u in ("fan", "fan2"):
            st_, body = await _call(s, "POST", f"{node.url}/api/v1/wallets/{u}/topup", ops, json={"amount": 100, "idempotency_key": f"k-{u}"})
            assert st_ == 201, body
        fan = await Client.connect(node.ws, "r1", token("fan", "viewer"))
        fan2 = await Client.connect(node.ws, "r1", token("fan2", "viewer"))
        try:
            for c, n in ((fan, 5), (fan2, 2)):  # 50 + 20 coins
                for _ in range(n):
                    r = await c.request("gift", gift_id="lollipop", count=1)
                    assert r.get("t") != "error", r
        finally:
            await fan.close()
            await fan2.close()
        await node.services.wallet_outbox.flush()
        await drain_wallet(log, store)
        ledger = EarningsLedger(store, redis, keys, share=node.settings.host_gift_share)
        await drain_earnings(log, ledger)

        st_, stmt = await _call(s, "GET", f"{node.url}/api/v1/hosts/anna/earnings", host)
        assert st_ == 200, stmt
        assert (stmt["opening"], stmt["accruals"], stmt["accrual_count"], stmt["reversals"]) == (0, 35, 7, 0)  # 5 coins of each 10
        gift = next(r["gift_event_id"] for r in stmt["rows"] if r["sender"] == "fan")
        other = next(r["gift_event_id"] for r in stmt["rows"] if r["sender"] == "fan2")

        # a refund, asked three times at once: one reversal, the coins back once
        url = f"{node.url}/api/v1/ops/gifts/{gift}/reversal"
        answers = await asyncio.gather(*(_call(s, "POST", url, ops, json={"kind": "refund", "reason": "mistake"}) for _ in range(3)))
        assert sorted(a[0] for a in answers) == [200, 200, 201], answers
        assert {a[1]["amount"] for a in answers} == {-5} and {a[1]["sender_balance"] for a in answers} == {50 + 10}
        st_, body = await _call(s, "POST", url, ops, json={"kind": "chargeback"})
        assert (st_, body["error"]["code"]) == (422, "idempotency_conflict")
        # a chargeback: the host loses the share, the sender gets nothing back
        st_, body = await _call(s, "POST", f"{node.url}/api/v1/ops/gifts/{other}/reversal", ops, json={"kind": "chargeback"})
        assert st_ == 201 and body["refund_coins"] == 0 and body["sender_balance"] == 80, body

        await node.services.wallet_outbox.flush()
        await drain_wallet(log, store)
        await drain_earnings(log, ledger)
        await ledger([LogEvent(id=reversal_id(gift), topic="gifts", key="fan", type="gift.reversed", ts=1, data=answers[0][1] | {
            "gift_event": gift, "user": "fan", "host": "anna", "room": "r1", "value": 10, "share_bp": 5000, "amount": 5})])  # redelivered
        st_, stmt = await _call(s, "GET", f"{node.url}/api/v1/hosts/anna/earnings", ops)
        assert (stmt["accruals"], stmt["reversals"], stmt["reversal_count"], stmt["closing"]) == (35, -10, 2, 25)
        for u, want in (("fan", 60), ("fan2", 80)):  # the wallet ledger still equals the balance
            st_, w = await _call(s, "GET", f"{node.url}/api/v1/wallets/{u}/ledger", ops)
            assert w["balance"] == w["ledger_balance"] == want, w

        st_, text = await _call(s, "GET", f"{node.url}/api/v1/hosts/anna/earnings?format=csv", host)
        lines = list(csv.DictReader(io.StringIO(text)))
        assert st_ == 200 and lines[-1]["kind"] == "closing" and int(lines[-1]["balance"]) == 25
        assert [x["kind"] for x in lines].count("reversal") == 2

        # a period after everything: the opening carries the balance
        later = int(time.time() * 1000) + 1000
        st_, stmt = await _call(s, "GET", f"{node.url}/api/v1/hosts/anna/earnings?from={later}&to={later + DAY_MS}", host)
        assert (stmt["opening"], stmt["accruals"], stmt["closing"], stmt["rows"]) == (25, 0, 25, [])

        # who may ask, and bad input: 4xx with a code, never a 500
        assert (await _call(s, "GET", f"{node.url}/api/v1/hosts/anna/earnings", token("fan", "viewer")))[0] == 403
        assert (await _call(s, "GET", f"{node.url}/api/v1/hosts/anna/earnings", None))[0] == 401
        for q in ("from=soon", "from=10&to=5", "format=xml", f"from=0&to={400 * DAY_MS}"):
            st_, body = await _call(s, "GET", f"{node.url}/api/v1/hosts/anna/earnings?{q}", host)
            assert st_ == 400 and body["error"]["code"] == "invalid", (q, body)
        assert (await _call(s, "POST", url, host, json={"kind": "refund"}))[0] == 403
        for bad in ({"kind": "nope"}, {}, {"kind": "refund", "reason": 3}):
            st_, body = await _call(s, "POST", url, ops, json=bad)
            assert st_ == 400, (bad, body)
        st_, body = await _call(s, "POST", f"{node.url}/api/v1/ops/gifts/nosuchgift/reversal", ops, json={"kind": "refund"})
        assert (st_, body["error"]["code"]) == (404, "not_accrued")
        st_, body = await _call(s, "POST", f"{node.url}/api/v1/ops/gifts/{'x' * 120}/reversal", ops, json={"kind": "refund"})
        assert st_ == 400


async def test_a_reversed_gift_takes_back_its_points_once(redis: Any, keys: Keys, store: SqlStore) -> None:
    from livecommerce.config import Settings
    from livecommerce.points import Rules
    from workers.points import PointsWorker

    points = PointsWorker(store, redis, keys, Rules.from_settings(Settings()))
    gift = _gift(1, user="fan", host="anna", value=10)
    acc = accrual(gift.id, gift.data, host=None, bp=5000, ts_ms=gift.ts)
    rev = new_event("gifts", "fan", "gift.reversed", reversal_event(acc, parse_reversal({"kind": "chargeback"}), by="ops"),
                    reversal_id(gift.id), gift.ts + 1)
    await points([gift, _gift(2, user="fan", host="anna", value=4)])
    await points([rev])
    await points([rev, gift])  # redelivered: nothing twice
    got = await store.points_balances(["fan", "anna"])
    assert (got["fan"]["viewer"], got["anna"]["host"]) == (4, 4)  # the second gift's points stay
