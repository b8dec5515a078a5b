"""Refunds: the pure rules (amounts, clawbacks, the refund life-cycle), then the whole after-sale
path through a real gateway and real workers: request, decide, settle (wallet credit, points
clawback, restock, GMV), history; and refunds racing buys and each other, with every event
delivered again, on Redis Streams and Kafka.

``World`` (a gateway node plus burst-mode workers) is shared with the other issue-11 tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecommerce.errors import Conflict, NotFound
from livecommerce.keys import Keys
from livecommerce.log import Log
from livecommerce.log_open import open_log
from livecommerce.points import CENTS_PER_POINT, Rules
from livecommerce.refunds import (
    EVENT_TYPES,
    REFUND_TRANSITIONS,
    OrderFacts,
    PriorRefund,
    RefundAsk,
    clawback_points,
    cumulative_amount,
    parse_request,
    plan_refund,
    refund_step,
)
from livecommerce.store_sql import SqlStore
from tests.waiting import wait_until
from workers.orders import OrdersWorker
from workers.points import PointsWorker
from workers.points import drain as points_drain
from workers.profiles import ProfilesWorker
from workers.profiles import drain as profiles_drain
from workers.refunds import RefundsWorker
from workers.refunds import drain as refunds_drain
from workers.runner import run_consumer
from workers.wallet import drain as wallet_drain

NOW = 1_700_000_000_000


def now_ms() -> int:
    return int(time.time() * 1000)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


# ---------------------------------------------------------------- pure rules


def _facts(qty: int = 3, amount: int = 5997, state: str = "paid", paid_ms: int | None = NOW) -> OrderFacts:
    return OrderFacts("s1.o1", "u1", "r1", "s1", state, qty, amount, paid_ms)


@given(st.integers(1, 20), st.integers(0, 10**7), st.lists(st.integers(1, 5), min_size=1, max_size=20))
def test_partial_refunds_return_exactly_the_paid_amount_and_claw_back_exactly_the_award(qty: int, amount: int, steps: list[int]) -> None:
    back, clawed, units = 0, 0, 0
    for k in steps:
        k = min(k, qty - units)
        if k <= 0:
            break
        a = cumulative_amount(amount, qty, units + k) - cumulative_amount(amount, qty, units)
        clawed += clawback_points(amount, back, a)
        back, units = back + a, units + k
        assert 0 <= back <= amount
    if units == qty:
        assert back == amount and clawed == amount // CENTS_PER_POINT
    assert clawed == amount // CENTS_PER_POINT - (amount - back) // CENTS_PER_POINT


def test_a_refund_request_is_judged_in_order() -> None:
    ask = RefundAsk(None, "damaged", "")
    r = plan_refund(_facts(), [], ask, user="u1", host="h1", now_ms=NOW + 1)
    assert (r.id, r.qty, r.amount, r.full, r.n) == ("s1.o1.r1", 3, 5997, True, 1)
    one = plan_refund(_facts(), [], RefundAsk(1, "damaged", ""), user="u1", host="h1", now_ms=NOW)
    assert (one.qty, one.amount, one.full) == (1, 1999, False)
    with pytest.raises(NotFound):
        plan_refund(_facts(), [], ask, user="u2", host="h1", now_ms=NOW)
    cases: list[tuple[Any, list[PriorRefund], RefundAsk, str]] = [
        (_facts(state="reserved", paid_ms=None), [], ask, "not_paid"),
        (_facts(), [PriorRefund(1, 1, 1999, "approved", False)], ask, "refund_pending"),
        (_facts(), [PriorRefund(1, 3, 5997, "refunded", True)], ask, "nothing_to_refund"),
        (_facts(), [PriorRefund(1, 2, 3998, "refunded", True)], RefundAsk(2, "damaged", ""), "too_many_units"),
        (_facts(amount=0), [], RefundAsk(1, "damaged", ""), "whole_order_only"),
    ]
    for facts, prior, a, code in cases:
        with pytest.raises(Conflict) as exc:
            plan_refund(facts, prior, a, user="u1", host="h1", now_ms=NOW)
        assert exc.value.code == code
    with pytest.raises(Conflict) as late:
        plan_refund(_facts(), [], ask, user="u1", host="h1", now_ms=NOW + 16 * 86_400_000)
    assert late.value.code == "refund_window_closed"
    # a rejected refund does not count: the next one starts from the same units
    again = plan_refund(_facts(), [PriorRefund(1, 1, 1999, "rejected", True)], RefundAsk(1, "other", ""), user="u1", host="h", now_ms=NOW)
    assert (again.n, again.qty_before, again.amount_before) == (2, 0, 0)


def test_the_refund_life_cycle_is_a_table() -> None:
    assert REFUND_TRANSITIONS[("requested", "approve")] == "approved"
    assert refund_step("approved", "approve") is None  # a repeated decision is a no-op
    with pytest.raises(Conflict):
        refund_step("rejected", "approve")
    for bad in ({"reason": "bored"}, {"reason": "damaged", "qty": 0}, {"reason": "other", "note": "x" * 501}, []):
        with pytest.raises(Exception) as exc:
            parse_request(bad)
        assert getattr(exc.value, "code", "") == "invalid"


# ---------------------------------------------------------------- a world to run it in


@dataclass
class World:
    """A gateway node and every worker of the after-sale path in burst mode."""

    node: Any
    http: aiohttp.ClientSession
    token: Any
    redis: Any
    keys: Keys
    store: SqlStore
    log: Log
    orders: OrdersWorker
    refunds: RefundsWorker
    points: PointsWorker
    profiles: ProfilesWorker
    fetch_ms: int = 50
    opened: list[Any] = field(default_factory=list)

    @classmethod
    async def make(cls, gateway_factory: Any, token: Any, redis: Any, http: aiohttp.ClientSession, **over: Any) -> World:
        node = await gateway_factory(**over)
        s = node.settings
        keys = Keys(s.key_prefix)
        durable = open_log(s, redis)
        store = SqlStore(s.database_url)
        w = cls(node, http, token, redis, keys, store, durable,
                OrdersWorker(s, redis=redis, durable=durable),
                RefundsWorker(store, redis, keys, durable),
                PointsWorker(store, redis, keys, Rules.from_settings(s), secret=s.secret),
                ProfilesWorker(store, redis, keys, secret=s.secret),
                fetch_ms=1500 if s.kafka_bootstrap else 50)
        return w

    def background(self, extra: list[tuple[str, str, str, Any]] = (), *, profiles: bool = True) -> None:  # type: ignore[assignment]
        """Run the workers as long-running consumers (one group join each, for the whole
        test: what a Kafka test can afford); ``extra`` adds ``(topic, group, name, handler)``."""
        from workers.wallet import WalletLedger

        self.stop = asyncio.Event()
        wallet = WalletLedger(self.store)
        specs = [("orders", "orders", "o", self.orders.settler.handle), ("orders", "refunds", "r", self.refunds),
                 ("gifts", "wallet", "w", wallet), *((t, "points", "p", self.points) for t in ("orders", "gifts", "activity")),
                 *((t, "profiles", "f", self.profiles) for t in ("orders", "gifts", "activity") if profiles), *extra]
        self.handled: dict[str, int] = {}
        for topic, group, name, handler in specs:
            self.opened.append(asyncio.get_running_loop().create_task(
                run_consumer(self.log, topic, group, f"{name}-{topic}", self._count(group, handler), stop=self.stop,
                             fetch_timeout_ms=200)))

    def _count(self, group: str, handler: Any) -> Any:
        async def counted(events: list[Any]) -> None:
            await handler(events)
            self.handled[group] = self.handled.get(group, 0) + len(events)

        return counted

    async def close(self) -> None:
        if self.opened:
            self.stop.set()
            await asyncio.gather(*self.opened, return_exceptions=True)
        await self.orders.close()
        await self.log.close()
        await self.store.close()

    async def call(self, method: str, path: str, tok: str, body: Any = None, *, status: int | tuple[int, ...] = (200, 201, 202)) -> Any:
        r = await self.http.request(method, self.node.url + path, json=body, headers=bearer(tok))
        data = await r.json()
        want = (status,) if isinstance(status, int) else status
        assert r.status in want, (r.status, data)
        return data

    async def room(self, room: str, host: str) -> None:
        await self.call("POST", "/api/v1/rooms", self.token(host, "host", (room,)), {"id": room, "title": room})

    async def campaign(self, room: str, *, stock: int, price: int = 1999, limit: int = 3, restock: bool = False, product: str = "p1") -> str:
        sid = f"s{uuid.uuid4().hex[:8]}"
        body = {"id": sid, "room": room, "product_id": product, "price": price, "stock": stock, "per_user_limit": limit,
                "duration_s": 600, "restock_on_refund": restock}
        await self.call("POST", "/api/v1/campaigns", self.token("ops1", "ops"), body)
        return sid

    async def buy(self, user: str, sid: str, qty: int, *, pay: bool = True) -> str | None:
        r = await self.http.post(f"{self.node.url}/api/v1/sales/{sid}/buy", json={"qty": qty, "request_id": uuid.uuid4().hex[:12]},
                                 headers=bearer(self.token(user)))
        if r.status != 201:
            return None
        oid = str((await r.json())["order_id"])
        if pay:
            res = await self.call("POST", f"/api/v1/orders/{oid}/pay", self.token(user), {})
            assert res["outcome"] == "paid"
        return oid

    async def settle(self) -> None:
        """Run every worker until none has anything left."""
        for _ in range(10):
            counts = await asyncio.gather(
                run_consumer(self.log, "orders", "orders", "o-1", self.orders.settler.handle, burst=True, fetch_timeout_ms=self.fetch_ms),
                refunds_drain(self.log, self.refunds, fetch_timeout_ms=self.fetch_ms),
                wallet_drain(self.log, self.store, fetch_timeout_ms=self.fetch_ms),
                points_drain(self.log, self.points, fetch_timeout_ms=self.fetch_ms),
                profiles_drain(self.log, self.profiles, fetch_timeout_ms=self.fetch_ms),
            )
            if sum(counts) == 0:
                return
        raise AssertionError("the workers never went quiet")

    async def wallet_balanced(self, users: list[str]) -> dict[str, int]:
        wallet = self.node.services.wallet
        out = {}
        for u in users:
            hot, sql = await wallet.balance(u), await self.store.wallet_balance(u)
            assert hot == sql, (u, hot, sql)
            out[u] = hot
        return out


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s


# ---------------------------------------------------------------- end to end


async def test_a_refund_is_requested_decided_and_settled_with_every_ledger_balanced(gateway_factory: Any, token: Any, redis: Any,
                                                                                    http: Any, store_url: str) -> None:
    w = await World.make(gateway_factory, token, redis, http, database_url=store_url)
    try:
        await w.room("shop", "h1")
        sid = await w.campaign("shop", stock=4, restock=True)
        o1 = await w.buy("b1", sid, 3)
        o2 = await w.buy("b2", sid, 1)
        assert o1 and o2 and await w.buy("b3", sid, 1) is None  # sold out
        await w.settle()
        b1, b2, host, ops = token("b1"), token("b2"), token("h1", "host", ("shop",)), token("ops1", "ops")
        assert await w.store.points_balance("b1", "viewer") == 59 and await w.store.points_balance("h1", "host") == 59 + 19

        # one unit back, with a reason; the buyer's retry is the same refund; others cannot ask
        r1 = await w.call("POST", f"/api/v1/orders/{o1}/refunds", b1, {"qty": 1, "reason": "damaged", "note": "cracked lid"}, status=202)
        assert (r1["refund_id"], r1["qty"], r1["amount"], r1["state"]) == (f"{o1}.r1", 1, 1999, "requested")
        again = await w.call("POST", f"/api/v1/orders/{o1}/refunds", b1, {"qty": 1, "reason": "damaged"}, status=200)
        assert again["duplicate"] and again["refund_id"] == r1["refund_id"]
        other = await w.call("POST", f"/api/v1/orders/{o1}/refunds", b1, {"qty": 2, "reason": "other"}, status=409)
        assert other["error"]["code"] == "refund_pending"
        await w.call("POST", f"/api/v1/orders/{o1}/refunds", b2, {"reason": "damaged"}, status=404)
        await w.settle()
        listed = await w.call("GET", "/api/v1/refunds?room=shop&state=requested", host)
        assert [r["refund_id"] for r in listed["refunds"]] == [r1["refund_id"]] and listed["refunds"][0]["note"] == "cracked lid"
        # viewers cannot decide; the room's host approves once; a late rejection is refused
        await w.call("POST", f"/api/v1/refunds/{r1['refund_id']}/approve", b2, {}, status=403)
        await w.call("POST", f"/api/v1/refunds/{r1['refund_id']}/approve", token("h2", "host", ("elsewhere",)), {}, status=403)
        ok = await w.call("POST", f"/api/v1/refunds/{r1['refund_id']}/approve", host, {"note": "sorry"})
        assert ok["changed"] and ok["decided_by"] == "h1"
        assert (await w.call("POST", f"/api/v1/refunds/{r1['refund_id']}/approve", host, {}))["changed"] is False
        late = await w.call("POST", f"/api/v1/refunds/{r1['refund_id']}/reject", ops, {}, status=409)
        assert late["error"]["code"] == "illegal_transition"
        await w.settle()

        # credited back, points clawed back, the unit restocked, GMV reversed
        assert (await w.wallet_balanced(["b1", "b2"]))["b1"] == 1999
        assert await w.store.points_balance("b1", "viewer") == 39 and await w.store.points_balance("h1", "host") == 39 + 19
        stats = await w.call("GET", f"/api/v1/sales/{sid}/stats", ops)
        assert (stats["remaining"], stats["paid"], stats["refunded_kept"], stats["conserved"]) == (1, 3, 0, True)
        assert stats["gmv"] == 4 * 1999 - 1999 and stats["state"] == "live"  # sold_out --restock--> live
        order = (await w.call("GET", f"/api/v1/orders/{o1}", b1))["order"]
        assert (order["state"], order["refunded_qty"], order["refunded_amount"]) == ("paid", 1, 1999)

        # the rest of the order: everything back, the award gone entirely
        r2 = await w.call("POST", f"/api/v1/orders/{o1}/refunds", b1, {"reason": "not_as_described"}, status=202)
        assert (r2["qty"], r2["amount"]) == (2, 2 * 1999)
        await w.call("POST", f"/api/v1/refunds/{r2['refund_id']}/approve", ops, {})
        # b2's refund is rejected: the order is paid again
        r3 = await w.call("POST", f"/api/v1/orders/{o2}/refunds", b2, {"reason": "changed_mind"}, status=202)
        await w.settle()
        await w.call("POST", f"/api/v1/refunds/{r3['refund_id']}/reject", host, {"note": "opened"})
        await w.settle()
        assert (await w.wallet_balanced(["b1", "b2"])) == {"b1": 5997, "b2": 0}
        assert await w.store.points_balance("b1", "viewer") == 0 and await w.store.points_balance("h1", "host") == 19
        clawed = [e for e in await w.store.points_ledger("b1") if e.reason == "order.refunded"]
        assert sorted(e.delta for e in clawed) == [-39, -20]
        stats = await w.call("GET", f"/api/v1/sales/{sid}/stats", ops)
        assert (stats["remaining"], stats["paid"], stats["conserved"], stats["gmv"]) == (3, 1, True, 1999)
        assert (await w.call("GET", f"/api/v1/orders/{o1}", b1))["order"]["state"] == "refunded"
        assert (await w.call("GET", f"/api/v1/orders/{o2}", b2))["order"]["state"] == "paid"
        nothing = await w.call("POST", f"/api/v1/orders/{o1}/refunds", b1, {"reason": "other"}, status=409)
        assert nothing["error"]["code"] == "nothing_to_refund"

        # the whole story of the order, oldest first
        hist = (await w.call("GET", f"/api/v1/orders/{o1}/history", b1))["history"]
        kinds = [(h["kind"], h.get("to")) for h in hist]
        assert kinds[:2] == [("order", "reserved"), ("order", "paid")]
        assert [k for k, _ in kinds].count("refund.requested") == 2 and [k for k, _ in kinds].count("refund.settled") == 2
        assert [t for k, t in kinds if k == "order"] == ["reserved", "paid", "refund_requested", "paid", "refund_requested", "refunded"]
        assert any(h.get("note") == "cracked lid" for h in hist)
        h2 = (await w.call("GET", f"/api/v1/orders/{o2}/history", host))["history"]
        assert [h["kind"] for h in h2][-2:] == ["refund.rejected", "order"] or "refund.rejected" in [h["kind"] for h in h2]
        await w.call("GET", f"/api/v1/orders/{o2}/history", b1, status=404)
    finally:
        await w.close()


@pytest.mark.parametrize("backend", ["redis", pytest.param("kafka", marks=pytest.mark.kafka)])
async def test_refunds_racing_buys_and_each_other_keep_stock_conserved_and_ledgers_balanced_under_redelivery(
    backend: str, gateway_factory: Any, token: Any, redis: Any, http: Any, request: pytest.FixtureRequest
) -> None:
    over: dict[str, Any] = {"log_claim_idle_ms": 1000}
    if backend == "kafka":
        over |= {"kafka_bootstrap": request.getfixturevalue("kafka_bootstrap"), "kafka_idempotent": False,
                 "kafka_session_timeout_ms": 2000, "kafka_partitions": 2}
    w = await World.make(gateway_factory, token, redis, http, **over)
    second = RefundsWorker(w.store, w.redis, w.keys, w.log)  # two refunds consumers share the group
    w.background([("orders", "refunds", "r2", second)], profiles=False)
    try:
        await w.room("mall", "h9")
        keep = await w.campaign("mall", stock=12, price=1000, limit=2, product="kept")
        back = await w.campaign("mall", stock=12, price=700, limit=2, restock=True, product="back")
        first = [f"u{i}" for i in range(6)]
        orders = await asyncio.gather(*(w.buy(u, sid, 2) for u in first for sid in (keep, back)))
        assert all(orders)
        ops = token("ops1", "ops")
        owners = [(str(oid), first[i // 2]) for i, oid in enumerate(orders)]

        async def all_paid() -> bool:
            states = [o.state if (o := await w.store.get_order(oid)) else None for oid, _ in owners]
            return all(s == "paid" for s in states)

        await wait_until(all_paid, timeout=60, what="the payments in SQL")

        async def refund(oid: str, user: str) -> str | None:
            r = await w.http.post(f"{w.node.url}/api/v1/orders/{oid}/refunds", json={"qty": 1, "reason": "damaged"},
                                  headers=bearer(token(user)))
            return str((await r.json())["refund_id"]) if r.status == 202 else None

        # every order asks twice at once: one request per order wins
        asked = await asyncio.gather(*(refund(oid, u) for oid, u in owners for _ in range(2)))
        rids = [r for r in asked if r]
        assert len(rids) == len(owners) and len(set(rids)) == len(owners)
        # approve and reject race for each refund (one decision wins) while latecomers rush the restocked sale
        decisions = await asyncio.gather(*(w.http.post(f"{w.node.url}/api/v1/refunds/{rid}/{d}", json={}, headers=bearer(ops))
                                           for rid in rids for d in ("approve", "reject")))
        assert sorted(r.status for r in decisions) == [200] * len(rids) + [409] * len(rids)
        approved = [rid for rid, r in zip(rids, decisions[::2], strict=True) if r.status == 200]
        late = [f"late{i}" for i in range(10)]
        bought: list[str | None] = []
        deadline = time.monotonic() + 60
        while sum(1 for b in bought if b) < sum(1 for rid in approved if rid.startswith(back)):
            assert time.monotonic() < deadline, "the restocked units never came back"
            bought += await asyncio.gather(*(w.buy(u, back, 1) for u in late))

        async def settled() -> bool:
            rows = await w.store.list_orders(limit=1000)
            records = w.node.services.aftersales.records
            done = [(r or {}).get("d") == 1 for r in [await records.record(rid) for rid in rids]]
            return all(o.state in ("paid", "refunded", "cancelled") for o in rows) and all(done)

        await wait_until(settled, timeout=60, what="every refund settled")
        users = first + late

        async def snapshot() -> tuple[Any, ...]:
            sales = w.node.services.checkout.sales
            st = {sid: await sales.stats(sid) for sid in (keep, back)}
            wallet = w.node.services.wallet
            wallets = {u: (await wallet.balance(u), await w.store.wallet_balance(u)) for u in users}
            pts = {u: await w.store.points_balance(u) for u in [*users, "h9"]}
            sql = {sid: await w.store.sale_stats(sid) for sid in (keep, back)}
            return st, wallets, pts, {k: (v.gmv, v.refunded, v.orders) for k, v in sql.items()}

        n_keep = sum(1 for rid in approved if rid.startswith(keep))
        n_back = len(approved) - n_keep
        n_late = sum(1 for b in bought if b)

        # what every worker has to have written before the snapshot below is final: each order
        # in SQL and out of ``reserved`` (the orders worker lags the synchronous pay), and each
        # user's wallet and points (a matching sum can hide one user behind and another ahead)
        price = {keep: 1000, back: 700}
        owner = dict(owners) | {oid: late[i % len(late)] for i, oid in enumerate(bought) if oid}
        sale_of = {oid: keep if oid.startswith(keep) else back for oid in owner}
        refunded_oids = [rid.rsplit(".", 1)[0] for rid in approved]
        want_wallet = {u: sum(price[sale_of[o]] for o in refunded_oids if owner[o] == u) for u in users}
        want_user_pts = {u: sum(2 * price[sale_of[o]] // 100 if u in first else price[sale_of[o]] // 100
                                for o in owner if owner[o] == u) - (want_wallet[u] // 100) for u in users}
        want_pts = want_user_pts | {"h9": sum(want_user_pts.values())}  # the host earns (and loses) what its buyers do
        want_orders = {sid: sum(1 for o in owner if sale_of[o] == sid) for sid in (keep, back)}

        async def balanced() -> Any:
            snap = await snapshot()
            redis_view, wallets, pts, totals = snap
            for sid, (_, _, by_state) in totals.items():
                assert sum(by_state.values()) == want_orders[sid] and not {"reserved", "refund_requested"} & set(by_state), \
                    (f"orders of {sid} in SQL", by_state, want_orders[sid])
            assert all(s.reserved == 0 for s in redis_view.values()), ("reserved in Redis", redis_view)
            assert {u: hot for u, (hot, _) in wallets.items()} == want_wallet, ("hot wallets", wallets, want_wallet)
            assert all(hot == sql for hot, sql in wallets.values()), ("wallets in SQL", wallets)
            assert pts == want_pts, ("points", pts, want_pts)
            return snap

        st, wallets, pts, sql = await wait_until(balanced, timeout=60, what="the ledgers caught up")
        for s in st.values():
            assert s.conserved and s.remaining >= 0 and s.reserved == 0, s
        assert st[keep].refunded_kept == n_keep and st[keep].restocked == 0 and st[keep].remaining == 0
        assert st[back].restocked == n_back and st[back].paid == 12 - n_back + n_late
        assert st[back].remaining == n_back - n_late  # restocked units were sold again, never more
        assert sql[keep][:2] == (12 * 1000 - n_keep * 1000, n_keep * 1000)
        assert pts["h9"] == sum(2 * p // 100 for p in (1000, 700)) * 6 + n_late * 7 - (n_keep * 10 + n_back * 7)

        # redelivery: every refund event appended again, and the whole topic read again by fresh groups
        seen: list[Any] = []

        async def grab(events: list[Any]) -> None:
            seen.extend(e for e in events if e.type in EVENT_TYPES)

        await run_consumer(w.log, "orders", "grab", "g", grab, burst=True, fetch_timeout_ms=w.fetch_ms)
        seen = list({e.id: e for e in seen}.values())  # a retried request re-appends its event (same id)
        assert len(seen) == len(rids) * 2 + len(approved)  # requested, decided, refunded
        before = dict(w.handled)
        for e in seen:
            await w.log.append(e.topic, e.key, e.type, e.data, event_id=e.id, ts=e.ts)
        replay = RefundsWorker(w.store, w.redis, w.keys, w.log)
        await asyncio.gather(
            run_consumer(w.log, "orders", "refunds-replay", "x", replay, burst=True, fetch_timeout_ms=w.fetch_ms),
            run_consumer(w.log, "orders", "points-replay", "x", w.points, burst=True, fetch_timeout_ms=w.fetch_ms))

        async def absorbed() -> bool:
            return w.handled.get("refunds", 0) - before.get("refunds", 0) >= len(seen) and \
                w.handled.get("points", 0) - before.get("points", 0) >= len(seen)

        await wait_until(absorbed, timeout=60, what="the live workers saw the duplicates")
        assert replay.applied == 0 and replay.effects == 0
        assert await snapshot() == (st, wallets, pts, sql)
    finally:
        await w.close()
