"""Fulfilment: the order's state machine from payment to delivered or refunded, shipments,
receipt and the after-sales rule that depends on the order's progress; then the whole path
through a real gateway, real Redis, SQL (SQLite and PostgreSQL) and the real workers:
addresses, two parcels for one order, pushes to the buyer, deliveries (ops and the
carrier's signed callback), refunds refused after shipping, return-and-refund after
delivery, receipt (the buyer's, and the auto-confirm sweep with its lease), redelivery,
erasure and bad input.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from livecommerce.errors import BadFrame, Conflict
from livecommerce.fulfilment import (
    SHIPMENT_TRANSITIONS,
    OrderView,
    Progress,
    ShipAsk,
    decide_after_sale,
    default_kind,
    may_approve,
    order_state_after,
    owed,
    parse_address,
    parse_ship,
    plan_shipment,
    progress_of,
    shipment_step,
)
from livecommerce.fulfilment_redis import FulfilmentRedis
from livecommerce.keys import Keys
from livecommerce.orders import (
    ORDER_STATES,
    ORDER_TRANSITIONS,
    SETTLES_TO,
    TERMINAL,
    OrderState,
    apply_transition,
    new_order,
)
from livecommerce.payments import sign_header
from livecommerce.refunds import Refund
from livecommerce.refunds_redis import RefundsRedis
from tests.test_refunds import World, bearer, http  # noqa: F401  (http: the fixture)
from tests.waiting import wait_until
from tests.wsclient import Client
from workers.orders import confirm_sweep
from workers.runner import run_consumer

NOW = 1_700_000_000_000
ADDRESS = {"name": "Li Wei", "phone": "+86 138 0000 0000", "line1": "1 Nanjing Rd", "city": "Shanghai", "country": "cn"}


# ---------------------------------------------------------------- the state machine


def _order(state: OrderState = "reserved") -> Any:
    o = new_order(order_id="s1.o1", sale_id="s1", room_id="r1", user_id="u1", qty=3, unit_price=1000, now_ms=NOW,
                  payment_window_s=900)
    return apply_transition(o, state, now_ms=NOW).order if state != "reserved" and state in ORDER_TRANSITIONS["reserved"] else o


def test_the_order_travels_from_cart_to_delivered_or_refunded_by_the_table() -> None:
    o = _order()
    for to in ("paid", "shipped", "delivered", "completed"):
        o = apply_transition(o, to, now_ms=NOW).order  # type: ignore[arg-type]
    assert o.state == "completed" and "completed" in TERMINAL
    for bad in ORDER_STATES:
        if bad != "completed":
            with pytest.raises(Conflict):
                apply_transition(o, bad, now_ms=NOW)
    # a return after delivery: partial back to delivered, then the rest refunded
    o = _order("paid")
    o = apply_transition(apply_transition(o, "shipped", now_ms=NOW).order, "delivered", now_ms=NOW).order
    o = apply_transition(o, "return_requested", now_ms=NOW).order
    o = apply_transition(o, "delivered", now_ms=NOW, refund_qty=1, refund_amount=1000).order
    assert (o.state, o.refunded_qty, o.refunded_amount) == ("delivered", 1, 1000)
    o = apply_transition(apply_transition(o, "return_requested", now_ms=NOW).order, "refunded", now_ms=NOW).order
    assert (o.state, o.refunded_qty, o.refunded_amount) == ("refunded", 3, 3000)
    # refunds only before shipping, returns only after delivery: the table itself says so
    assert "refund_requested" not in ORDER_TRANSITIONS["shipped"] and "return_requested" not in ORDER_TRANSITIONS["paid"]
    assert SETTLES_TO == {"refund_requested": "paid", "return_requested": "delivered"}


@given(st.lists(st.sampled_from(ORDER_STATES), max_size=12), st.lists(st.integers(0, 3000), min_size=12, max_size=12))
def test_any_sequence_of_steps_follows_the_table_and_never_refunds_more_than_was_paid(steps: list[OrderState], amounts: list[int]) -> None:
    o = _order()
    for to, amt in zip(steps, amounts, strict=False):
        before = o.state
        try:
            r = apply_transition(o, to, now_ms=NOW, refund_amount=amt if to in SETTLES_TO.values() and before in SETTLES_TO else 0,
                                 refund_qty=1 if amt and to in SETTLES_TO.values() and before in SETTLES_TO else 0)
        except Conflict:
            assert to != before and to not in ORDER_TRANSITIONS[before]
            continue
        except BadFrame:
            continue  # amounts out of range are refused, the order unchanged
        assert r.changed == (to != before)
        if r.changed:
            assert to in ORDER_TRANSITIONS[before]
        o = r.order
        assert 0 <= o.refunded_amount <= o.amount and 0 <= o.refunded_qty <= o.qty
        assert before not in TERMINAL or o.state == before


def test_after_sales_depend_on_the_order_progress() -> None:
    table = {  # progress -> (refund, return)
        "": (None, "not_delivered"),
        "shipped": ("already_shipped", "not_delivered"),
        "delivered": ("already_shipped", None),
        "completed": ("receipt_confirmed", "receipt_confirmed"),
    }
    for st_, (refund, ret) in table.items():
        for kind, want in (("refund", refund), ("return", ret)):
            if want is None:
                decide_after_sale(kind, progress_of(st_))  # type: ignore[arg-type]
                continue
            with pytest.raises(Conflict) as exc:
                decide_after_sale(kind, progress_of(st_))  # type: ignore[arg-type]
            assert exc.value.code == want, (st_, kind)
    assert default_kind(Progress()) == "refund" and default_kind(progress_of("delivered")) == "return"
    may_approve("refund", False)
    with pytest.raises(Conflict) as exc:
        may_approve("return", False)
    assert exc.value.code == "return_not_received"
    assert SHIPMENT_TRANSITIONS[("shipped", "deliver")] == "delivered" and shipment_step("delivered", "deliver") is None


@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 4), st.lists(st.tuples(st.integers(0, 1), st.integers(1, 6)), max_size=8))
def test_shipments_never_carry_more_than_is_owed_and_the_order_is_delivered_only_when_all_arrived(
        qa: int, qb: int, refunded: int, asks: list[tuple[int, int]]) -> None:
    view = OrderView("o", "u", "r", "paid", {"a": qa, "b": qb}, refunded_qty=min(refunded, qa + qb))
    ships: list[Any] = []
    for which, qty in asks:
        sku = "ab"[which]
        try:
            s = plan_shipment(view, ships, ShipAsk("ZTO", f"T{len(ships):04d}", {sku: qty}), by="h", now_ms=NOW, ship_to_=None)
        except Conflict as exc:
            assert exc.code in ("too_many_units", "nothing_to_ship")
            continue
        ships.append(s)
        view = OrderView("o", "u", "r", "shipped", view.lines, view.refunded_qty)
    shipped = sum(sum(s.lines.values()) for s in ships)
    assert shipped + view.refunded_qty <= qa + qb
    assert order_state_after(view, ships) in ("paid", "shipped")  # nothing delivered yet
    arrived = [dataclasses.replace(s, state="delivered") for s in ships]
    after = order_state_after(view, arrived)
    assert (after == "delivered") == (bool(ships) and not owed(view.lines, view.refunded_qty, ships))


def test_bad_addresses_and_shipments_are_refused_naming_the_field() -> None:
    assert parse_address(ADDRESS)["country"] == "CN"
    for bad, field in (({**ADDRESS, "phone": "call me"}, "phone"), ({**ADDRESS, "country": "China"}, "country"),
                       ({k: v for k, v in ADDRESS.items() if k != "city"}, "city"), ({**ADDRESS, "zip": "1"}, "zip"),
                       ({**ADDRESS, "name": "x" * 101}, "name"), ({**ADDRESS, "line1": 7}, "line1")):
        with pytest.raises(BadFrame) as exc:
            parse_address(bad)
        assert field in exc.value.message and exc.value.code == "invalid"
    with pytest.raises(BadFrame):
        parse_address({}, partial=True)
    for bad in ({"carrier": "", "tracking_number": "SF1234"}, {"carrier": "SF", "tracking_number": "x"},
                {"carrier": "SF", "tracking_number": "SF1234", "lines": []},
                {"carrier": "SF", "tracking_number": "SF1234", "lines": [{"sku": "a", "qty": 0}]},
                {"carrier": "SF", "tracking_number": "SF1234", "lines": [{"sku": "a", "qty": 1}, {"sku": "a", "qty": 1}]}):
        with pytest.raises(BadFrame):
            parse_ship(bad)


async def test_the_refund_gate_script_is_the_after_sales_rule(redis: Any, prefix: str) -> None:
    """Lua parity: ``refunds_record.lua`` refuses exactly what :func:`decide_after_sale` refuses."""
    keys = Keys(prefix)
    refunds = RefundsRedis(redis, keys)
    for st_ in ("", "shipped", "delivered", "completed"):
        for kind in ("refund", "return"):
            oid = f"p.{st_ or 'none'}{kind}"
            if st_:
                await redis.hset(keys.entity("order", oid, "ship"), "st", st_)
            r = Refund(f"{oid}.r1", oid, 1, "u", "r", "p", "h", 1, 100, "damaged", "", 1, 100, 0, 0, NOW, kind=kind)
            try:
                decide_after_sale(kind, progress_of(st_))  # type: ignore[arg-type]
                want: str | None = None
            except Conflict as exc:
                want = exc.code
            try:
                await refunds.request(r)
                got: str | None = None
            except Conflict as exc:
                got = exc.code
            assert got == want, (st_, kind)


# ---------------------------------------------------------------- end to end


async def next_of(c: Client, prefix: str) -> dict[str, Any]:
    """The next event whose type starts with ``prefix`` (room events in between skipped)."""
    while True:
        e = await c.next_event()
        if e["t"].startswith(prefix):
            return e


async def drain_orders(w: World) -> int:
    return await run_consumer(w.log, "orders", "orders", "o-1", w.orders.settler.handle, burst=True, fetch_timeout_ms=w.fetch_ms)


async def paid_order(w: World, user: str, qty: int, room: str = "shop") -> str:
    sid = await w.campaign(room, stock=10, limit=5, restock=True)
    oid = await w.buy(user, sid, qty)
    assert oid
    await w.settle()
    return oid


async def test_two_parcels_ship_one_order_which_is_delivered_once_both_arrive(gateway_factory: Any, token: Any, redis: Any,
                                                                               http: Any, store_url: str) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http, database_url=store_url, carrier_webhook_secret="c" * 40)
    try:
        await w.room("shop", "h1")
        b1, host, ops, stranger = token("b1"), token("h1", "host", ("shop",)), token("ops1", "ops"), token("h9", "host", ("other",))
        oid = await paid_order(w, "b1", 3)
        # no address yet: the host is told what to do
        assert (await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "SF", "tracking_number": "SF0001"},
                             status=409))["error"]["code"] == "no_address"
        home = await w.call("POST", "/api/v1/me/addresses", b1, ADDRESS, status=201)
        assert home["is_default"] and home["country"] == "CN"
        # the orders to ship, with the ship-to
        todo = (await w.call("GET", "/api/v1/fulfilment/orders?room=shop", host))["orders"]
        assert [(o["order_id"], o["owed"], o["ship_to"]["city"]) for o in todo] == [(oid, {"p1": 3}, "Shanghai")]
        await w.call("GET", "/api/v1/fulfilment/orders?room=shop", b1, status=403)
        # bad input and strangers
        await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "SF"}, status=400)
        await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "SF", "tracking_number": "SF0001",
                                                                       "lines": [{"sku": "nope", "qty": 1}]}, status=400)
        assert (await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "SF", "tracking_number": "SF0001",
                             "lines": [{"sku": "p1", "qty": 4}]}, status=409))["error"]["code"] == "too_many_units"
        await w.call("POST", f"/api/v1/orders/{oid}/shipments", b1, {"carrier": "SF", "tracking_number": "SF0001"}, status=403)
        await w.call("POST", f"/api/v1/orders/{oid}/shipments", stranger, {"carrier": "SF", "tracking_number": "SF0001"}, status=403)
        await w.call("POST", "/api/v1/orders/nope.x/shipments", host, {"carrier": "SF", "tracking_number": "SF0001"}, status=404)

        # the buyer is watching: each parcel is pushed to their connection
        viewer = await Client.connect(w.node.ws, "shop", b1)
        # presence is written in short windows after a join: b1 is reachable once it is there
        await wait_until(lambda: w.node.gw.presence.user_nodes(["b1"]), until=lambda got: bool(got.get("b1")),
                         what="b1 online in presence")
        try:
            r1 = await w.http.post(f"{w.node.url}/api/v1/orders/{oid}/shipments", headers={**bearer(host), "Idempotency-Key": "ship-1"},
                                   json={"carrier": "SF Express", "tracking_number": "sf0001", "lines": [{"sku": "p1", "qty": 2}]})
            s1 = (await r1.json())["shipment"]
            assert r1.status == 201 and (s1["shipment_id"], s1["lines"], s1["tracking_number"]) == (f"{oid}.s1", {"p1": 2}, "SF0001")
            assert s1["ship_to"]["line1"] == "1 Nanjing Rd"
            pushed = await next_of(viewer, "order.")
            assert pushed["t"] == "order.shipped" and pushed["d"]["shipment"]["shipment_id"] == s1["shipment_id"]
            # the same request again (its key), and the same parcel without a key: one parcel
            again = await w.http.post(f"{w.node.url}/api/v1/orders/{oid}/shipments", headers={**bearer(host), "Idempotency-Key": "ship-1"},
                                      json={"carrier": "SF Express", "tracking_number": "sf0001", "lines": [{"sku": "p1", "qty": 2}]})
            assert again.status == 201 and again.headers.get("Idempotent-Replayed") == "true"
            dup = await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "SF Express", "tracking_number": "SF0001"})
            assert dup["duplicate"] and dup["shipment"]["shipment_id"] == s1["shipment_id"]
            s2 = (await w.call("POST", f"/api/v1/orders/{oid}/shipments", ops, {"carrier": "ZTO", "tracking_number": "ZT-778"},
                               status=201))["shipment"]
            assert (s2["shipment_id"], s2["lines"]) == (f"{oid}.s2", {"p1": 1})  # what was still owed
            assert (await next_of(viewer, "order."))["d"]["shipment"]["shipment_id"] == s2["shipment_id"]  # the retries pushed nothing
            assert (await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "ZTO", "tracking_number": "ZT-779"},
                                 status=409))["error"]["code"] == "nothing_to_ship"
            await drain_orders(w)
            got = await w.call("GET", f"/api/v1/orders/{oid}", b1)
            assert got["order"]["state"] == "shipped" and [s["shipment_id"] for s in got["shipments"]] == [s1["shipment_id"], s2["shipment_id"]]
            assert got["fulfilment"]["progress"] == "shipped" and got["fulfilment"]["owed_units"] == 0

            # a refund is for orders that have not shipped: 409 with what to do instead
            no = await w.call("POST", f"/api/v1/orders/{oid}/refunds", b1, {"reason": "changed_mind"}, status=409)
            assert no["error"]["code"] == "already_shipped" and "return" in no["error"]["message"]
            # a return needs the goods delivered first
            no = await w.call("POST", f"/api/v1/orders/{oid}/refunds", b1, {"reason": "damaged", "kind": "return"}, status=409)
            assert no["error"]["code"] == "not_delivered"

            # deliveries: ops mark the first; the carrier's signed callback the second; viewers cannot
            await w.call("POST", f"/api/v1/shipments/{s1['shipment_id']}/delivered", b1, {}, status=403)
            d1 = await w.call("POST", f"/api/v1/shipments/{s1['shipment_id']}/delivered", ops, {})
            assert d1["changed"] and d1["progress"] == "shipped"  # the other parcel is on its way
            assert (await next_of(viewer, "order."))["t"] == "order.delivered"
            assert not (await w.call("POST", f"/api/v1/shipments/{s1['shipment_id']}/delivered", ops, {}))["changed"]
            raw = json.dumps({"status": "delivered"}).encode()
            url = f"{w.node.url}/api/v1/shipments/{s2['shipment_id']}/delivered"
            forged = await w.http.post(url, data=raw, headers={"X-LC-Signature": sign_header("x" * 40, int(time.time()), raw),
                                                               "Content-Type": "application/json"})
            assert forged.status == 401 and (await forged.json())["error"]["code"] == "bad_signature"
            stale = await w.http.post(url, data=raw, headers={"X-LC-Signature": sign_header("c" * 40, int(time.time()) - 3600, raw),
                                                              "Content-Type": "application/json"})
            assert stale.status == 401 and (await stale.json())["error"]["code"] == "stale_timestamp"
            signed = await w.http.post(url, data=raw, headers={"X-LC-Signature": sign_header("c" * 40, int(time.time()), raw),
                                                               "Content-Type": "application/json"})
            d2 = await signed.json()
            assert signed.status == 200 and d2["progress"] == "delivered" and d2["shipment"]["delivered_by"] == "carrier"
            assert (await next_of(viewer, "order."))["d"]["progress"] == "delivered"
        finally:
            await viewer.ws.close()
        await w.call("POST", "/api/v1/shipments/nope/delivered", ops, {}, status=400)
        await w.call("POST", f"/api/v1/shipments/{oid}.s9/delivered", ops, {}, status=404)

        # the worker applies each event once: SQL's order, history and parcels
        await w.settle()
        order = (await w.call("GET", f"/api/v1/orders/{oid}", b1))
        assert order["order"]["state"] == "delivered"
        moves = [h["to_state"] for h in order["history"]]
        assert moves == ["reserved", "paid", "shipped", "delivered"]
        from livecommerce.fulfilment_sql import order_shipments
        rows = (await order_shipments(w.store, [oid]))[oid]
        assert [(r["shipment_id"], r["state"]) for r in rows] == [(s1["shipment_id"], "delivered"), (s2["shipment_id"], "delivered")]
        # every event of the order delivered again, in a fresh batch: nothing changes
        events = [e for e in await _all_events(w) if e.data.get("order_id") == oid]
        await w.orders.settler.handle(events)
        again = await w.call("GET", f"/api/v1/orders/{oid}", b1)
        assert again["history"] == order["history"] and again["order"] == order["order"]
        assert (await order_shipments(w.store, [oid]))[oid] == rows
        stats = await w.call("GET", f"/api/v1/sales/{order['order']['sale_id']}/stats", ops)
        assert stats["conserved"] and stats["gmv"] == 3 * 1999  # a delivered order's units are sold

        # receipt: the buyer confirms; after-sales close (a ticket remains)
        ok = await w.call("POST", f"/api/v1/orders/{oid}/confirm", b1, {})
        assert ok["changed"] and not (await w.call("POST", f"/api/v1/orders/{oid}/confirm", b1, {}))["changed"]
        await w.call("POST", f"/api/v1/orders/{oid}/confirm", token("b2"), {}, status=404)
        await w.settle()
        assert (await w.call("GET", f"/api/v1/orders/{oid}", b1))["order"]["state"] == "completed"
        closed = await w.call("POST", f"/api/v1/orders/{oid}/refunds", b1, {"reason": "damaged", "kind": "return"}, status=409)
        assert closed["error"]["code"] == "receipt_confirmed"
    finally:
        await w.close()


async def _all_events(w: World) -> list[Any]:
    got: list[Any] = []

    async def keep(events: list[Any]) -> None:
        got.extend(events)

    await run_consumer(w.log, "orders", f"replay-{time.time_ns()}", "x", keep, burst=True, fetch_timeout_ms=w.fetch_ms)
    return got


async def test_a_refund_open_stops_shipping_and_a_return_after_delivery_is_refunded_once_its_goods_are_back(
        gateway_factory: Any, token: Any, redis: Any, http: Any, store_url: str) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http, database_url=store_url)
    try:
        await w.room("shop", "h1")
        b1, host, ops = token("b1"), token("h1", "host", ("shop",)), token("ops1", "ops")
        await w.call("POST", "/api/v1/me/addresses", b1, ADDRESS, status=201)
        oid = await paid_order(w, "b1", 2)
        # a refund asked before shipping: the host cannot ship until it is decided
        r = await w.call("POST", f"/api/v1/orders/{oid}/refunds", b1, {"qty": 1, "reason": "changed_mind"}, status=202)
        assert r["kind"] == "refund"
        blocked = await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "SF", "tracking_number": "SF0100"}, status=409)
        assert blocked["error"]["code"] == "refund_open"
        await w.settle()
        await w.call("POST", f"/api/v1/refunds/{r['refund_id']}/approve", host, {})
        await w.settle()
        # one unit refunded: one unit left to ship
        s = (await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "SF", "tracking_number": "SF0100"},
                          status=201))["shipment"]
        assert s["lines"] == {"p1": 1}
        await w.call("POST", f"/api/v1/shipments/{s['shipment_id']}/delivered", ops, {})
        await w.settle()
        assert (await w.call("GET", f"/api/v1/orders/{oid}", b1))["order"]["state"] == "delivered"

        # delivered: a return (the default kind now), approved only once its parcel is back
        ret = await w.call("POST", f"/api/v1/orders/{oid}/refunds", b1, {"reason": "damaged", "note": "dented"}, status=202)
        assert (ret["kind"], ret["qty"], ret["amount"]) == ("return", 1, 1999)
        await w.call("POST", f"/api/v1/orders/{oid}/confirm", b1, {}, status=409)  # return_open
        await w.settle()
        assert (await w.call("GET", f"/api/v1/orders/{oid}", b1))["order"]["state"] == "return_requested"
        early = await w.call("POST", f"/api/v1/refunds/{ret['refund_id']}/approve", host, {}, status=409)
        assert early["error"]["code"] == "return_not_received"
        await w.call("POST", f"/api/v1/refunds/{ret['refund_id']}/return", token("b2"), {"carrier": "ZTO", "tracking_number": "RT-1"},
                     status=404)
        await w.call("POST", f"/api/v1/refunds/{r['refund_id']}/return", b1, {"carrier": "ZTO", "tracking_number": "RT-1"}, status=409)
        back = (await w.call("POST", f"/api/v1/refunds/{ret['refund_id']}/return", b1, {"carrier": "ZTO", "tracking_number": "RT-1"},
                             status=201))["shipment"]
        assert back["kind"] == "return" and back["refund_id"] == ret["refund_id"]
        await w.call("POST", f"/api/v1/shipments/{back['shipment_id']}/delivered", ops, {})
        await w.call("POST", f"/api/v1/refunds/{ret['refund_id']}/approve", host, {})
        await w.settle()
        order = (await w.call("GET", f"/api/v1/orders/{oid}", b1))["order"]
        assert (order["state"], order["refunded_qty"], order["refunded_amount"]) == ("refunded", 2, 2 * 1999)
        assert (await w.wallet_balanced(["b1"]))["b1"] == 2 * 1999
        hist = [h["to_state"] for h in (await w.call("GET", f"/api/v1/orders/{oid}", b1))["history"]]
        assert hist == ["reserved", "paid", "refund_requested", "paid", "shipped", "delivered", "return_requested", "refunded"]

        # a rejected return puts the order back to delivered
        o2 = await paid_order(w, "b1", 1)
        s2 = (await w.call("POST", f"/api/v1/orders/{o2}/shipments", host, {"carrier": "SF", "tracking_number": "SF0200"},
                           status=201))["shipment"]
        await w.call("POST", f"/api/v1/shipments/{s2['shipment_id']}/delivered", ops, {})
        rr = await w.call("POST", f"/api/v1/orders/{o2}/refunds", b1, {"reason": "other", "kind": "return"}, status=202)
        await w.settle()
        await w.call("POST", f"/api/v1/refunds/{rr['refund_id']}/reject", host, {})
        await w.settle()
        assert (await w.call("GET", f"/api/v1/orders/{o2}", b1))["order"]["state"] == "delivered"
    finally:
        await w.close()


async def test_the_sweep_confirms_receipt_once_under_a_lease_even_after_a_crash_between_its_steps(
        gateway_factory: Any, token: Any, redis: Any, http: Any, store_url: str) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http, database_url=store_url)
    try:
        await w.room("shop", "h1")
        b1, host, ops = token("b1"), token("h1", "host", ("shop",)), token("ops1", "ops")
        await w.call("POST", "/api/v1/me/addresses", b1, ADDRESS, status=201)
        oids = [await paid_order(w, "b1", 1) for _ in range(3)]
        for i, oid in enumerate(oids):
            s = (await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "SF", "tracking_number": f"SF03{i}0"},
                              status=201))["shipment"]
            await w.call("POST", f"/api/v1/shipments/{s['shipment_id']}/delivered", ops, {})
        await w.call("POST", f"/api/v1/orders/{oids[2]}/refunds", b1, {"reason": "damaged"}, status=202)  # a return: open
        await w.settle()
        records = FulfilmentRedis(w.redis, w.keys)
        now = int(time.time() * 1000)
        # not due yet: nothing happens
        assert await confirm_sweep(records, w.store, w.log, owner="a", now_ms=now, after_s=3600, lease_ms=5000) == 0
        # a process died right after confirming oids[1] in Redis, before appending its event
        assert await records.confirm(oids[1], now_ms=now, by="auto")
        # another sweeper holds the lease: it does nothing
        assert not await records.take_lease("auto-confirm", owner="b", lease_ms=5000)
        assert await confirm_sweep(records, w.store, w.log, owner="b", now_ms=now + 10, after_s=0, lease_ms=5000) == 0
        # the lease holder sweeps: oids[0] now, oids[1]'s lost event appended again, oids[2] (a return open) skipped
        assert await confirm_sweep(records, w.store, w.log, owner="a", now_ms=now + 10, after_s=0, lease_ms=5000) == 1
        assert await confirm_sweep(records, w.store, w.log, owner="a", now_ms=now + 20, after_s=0, lease_ms=5000) == 0
        await w.settle()
        states = [(await w.call("GET", f"/api/v1/orders/{o}", b1))["order"]["state"] for o in oids]
        assert states == ["completed", "completed", "return_requested"]
        # once settled, nothing is due any more; the completed step is in each history once
        assert await confirm_sweep(records, w.store, w.log, owner="a", now_ms=now + 30, after_s=0, lease_ms=5000) == 0
        for o in oids[:2]:
            hist = [h["to_state"] for h in (await w.call("GET", f"/api/v1/orders/{o}", b1))["history"]]
            assert hist.count("completed") == 1
    finally:
        await w.close()


async def test_addresses_are_validated_one_is_the_default_and_erasure_removes_them(gateway_factory: Any, token: Any, redis: Any,
                                                                                     http: Any, store_url: str) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http, database_url=store_url)
    try:
        await w.room("shop", "h1")
        b1, host, ops = token("b1"), token("h1", "host", ("shop",)), token("ops1", "ops")
        assert (await w.call("GET", "/api/v1/me/addresses", b1))["addresses"] == []
        bad = await w.call("POST", "/api/v1/me/addresses", b1, {**ADDRESS, "phone": "call me"}, status=400)
        assert "phone" in bad["error"]["message"]
        await w.call("POST", "/api/v1/me/addresses", b1, {**ADDRESS, "shoe_size": 42}, status=400)
        await w.call("POST", "/api/v1/me/addresses", b1, [], status=400)
        a1 = await w.call("POST", "/api/v1/me/addresses", b1, ADDRESS, status=201)
        a2 = await w.call("POST", "/api/v1/me/addresses", b1, {**ADDRESS, "line1": "2 Huaihai Rd", "is_default": True}, status=201)
        listed = (await w.call("GET", "/api/v1/me/addresses", b1))["addresses"]
        assert [(a["id"], a["is_default"]) for a in listed] == [(a2["id"], True), (a1["id"], False)]
        assert (await w.call("GET", "/api/v1/me/addresses", token("b2")))["addresses"] == []  # one's own only
        await w.call("PATCH", f"/api/v1/me/addresses/{a1['id']}", token("b2"), {"city": "Beijing"}, status=404)
        no = await w.call("PATCH", f"/api/v1/me/addresses/{a2['id']}", b1, {"is_default": False}, status=409)
        assert no["error"]["code"] == "default_required"
        moved = await w.call("PATCH", f"/api/v1/me/addresses/{a1['id']}", b1, {"is_default": True, "city": "Beijing"})
        assert moved["is_default"] and moved["city"] == "Beijing"
        await w.call("DELETE", f"/api/v1/me/addresses/{a1['id']}", b1)
        await w.call("DELETE", f"/api/v1/me/addresses/{a1['id']}", b1, status=404)
        left = (await w.call("GET", "/api/v1/me/addresses", b1))["addresses"]
        assert [(a["id"], a["is_default"]) for a in left] == [(a2["id"], True)]  # the remaining one is the default

        # a parcel to that address; the export shows both; erasure removes both addresses and the parcel's ship-to
        oid = await paid_order(w, "b1", 1)
        await w.call("POST", f"/api/v1/orders/{oid}/shipments", host, {"carrier": "SF", "tracking_number": "SF0400"}, status=201)
        await w.settle()
        data = await w.call("GET", "/api/v1/me/data", b1)
        assert [a["line1"] for a in data["addresses"]] == ["2 Huaihai Rd"]
        assert data["shipments"][0]["ship_to"]["line1"] == "2 Huaihai Rd"
        s = (await w.call("GET", f"/api/v1/orders/{oid}", ops))["shipments"][0]
        await w.call("POST", f"/api/v1/shipments/{s['shipment_id']}/delivered", ops, {})
        await w.settle()
        await w.call("DELETE", "/api/v1/me/data", b1)
        assert (await w.call("GET", "/api/v1/me/addresses", b1))["addresses"] == []
        from livecommerce.fulfilment_sql import order_shipments
        rows = (await order_shipments(w.store, [oid]))[oid]
        assert rows[0]["ship_to"] is None and rows[0]["user_id"] != "b1" and rows[0]["tracking_number"] == "SF0400"
        shown = (await w.call("GET", f"/api/v1/orders/{oid}", ops))["shipments"]  # the Redis record forgot it too
        assert shown[0]["ship_to"] is None and shown[0]["user_id"] == rows[0]["user_id"]
        assert (await w.call("GET", "/api/v1/me/data", b1))["shipments"] == []
    finally:
        await w.close()


# ---------------------------------------------------------------- a killed orders worker


def fulfilment_stream(n: int) -> list[Any]:
    """``n`` orders of 2 units: reserved, paid, two parcels (1 unit each), both delivered
    (the second completes delivery), and every other order completed; in phases, so each
    order's events keep their order on its partition."""
    from livecommerce.fulfilment import (
        Shipment,
        completed_event_id,
        delivered_event_id,
        shipped_event_id,
    )
    from livecommerce.log import new_event

    phases: list[list[Any]] = [[] for _ in range(7)]
    for i in range(n):
        oid = f"f1.{i:05d}"
        d = {"order_id": oid, "sale_id": "f1", "room_id": "r", "user_id": f"u{i % 40}", "qty": 2, "unit_price": 300,
             "pay_by_ms": NOW + 900_000, "payment_window_s": 900, "request_id": f"rq{i}", "reserved_ms": NOW}
        phases[0].append(new_event("orders", oid, "order.reserved", d, f"{oid}:reserved", NOW))
        phases[1].append(new_event("orders", oid, "order.paid", d | {"amount": 600, "discount": 0, "coupon_id": None}, f"{oid}:paid", NOW + 1))
        ships = [Shipment(f"{oid}.s{k}", oid, k, d["user_id"], "r", "outbound", "SF", f"SF{i:05d}{k}", {"p": 1}, "shipped", "h",
                          NOW + 1 + k, ship_to={"city": "Shanghai"}) for k in (1, 2)]
        for k, s in enumerate(ships):
            phases[2 + k].append(new_event("orders", oid, "order.shipped", s.data() | {"order_state": "shipped"},
                                           shipped_event_id(s.id), NOW + 2 + k))
            got = dataclasses.replace(s, state="delivered", delivered_ms=NOW + 10 + k, delivered_by="ops")
            phases[4 + k].append(new_event("orders", oid, "order.delivered", got.data() | {"order_state": "shipped" if k == 0 else "delivered"},
                                           delivered_event_id(s.id), NOW + 10 + k))
        if i % 2 == 0:
            phases[6].append(new_event("orders", oid, "order.completed", {"order_id": oid, "user_id": d["user_id"], "room_id": "r",
                                                                           "by": "auto", "completed_ms": NOW + 20},
                                       completed_event_id(oid), NOW + 20))
    return [e for p in phases for e in p]


@pytest.mark.slow
async def test_an_orders_worker_killed_inside_a_batch_applies_every_parcel_and_step_once(store_url: str, settings: Any, redis: Any) -> None:
    import os
    import signal

    from sqlalchemy import func, select

    from livecommerce.log_redis import RedisLog
    from livecommerce.migrations import upgrade
    from livecommerce.schema import order_events, orders, shipments
    from livecommerce.store_sql import SqlStore
    from tests.test_workers_killed import Db, applied, start, stop

    await upgrade(store_url)
    n = 1200
    events = fulfilment_stream(n)
    log = RedisLog(redis, Keys(settings.key_prefix))
    for i in range(0, len(events), 1000):
        await log.append_many(events[i : i + 1000])
    await log.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_REDIS_URL=settings.redis_url, LC_KEY_PREFIX=settings.key_prefix, LC_DATABASE_URL=store_url, LC_LOG_JSON="0",
               LC_LOG_LEVEL="WARNING", LC_SECRET=settings.secret, LC_LOG_CLAIM_IDLE_MS="1000", LC_WORKER_BATCH="300",
               LC_AUTO_CONFIRM_S=str(20 * 365 * 86400))
    db = Db(store_url)
    await db.open()
    proc = start("orders", env, "f1")
    try:
        def alive() -> None:
            assert proc.poll() is None, f"the worker exited with {proc.returncode}"

        async def committed() -> int:
            alive()
            return await applied(store_url, "orders")

        async def inside_a_batch() -> bool:
            alive()
            return await db.in_transaction(proc.pid)

        await wait_until(committed, until=lambda k: k >= 3 * n, timeout=60, interval=0.01, what="the worker past the payments")
        await wait_until(inside_a_batch, timeout=60, interval=0.001, what="the worker inside a batch's transaction")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        at_kill = await applied(store_url, "orders")
        assert 3 * n <= at_kill < len(events), f"the kill must land among the parcels ({at_kill} of {len(events)})"
        proc = start("orders", env, "f2")
        await wait_until(lambda: applied(store_url, "orders"), until=lambda k: k >= len(events), timeout=120, interval=0.2,
                         what=f"all {len(events)} events applied after the kill")
    finally:
        stop(proc)
        await db.close()
    store = SqlStore(store_url)
    try:
        async with store.read() as tx:
            c = tx.conn
            states = {r[0]: r[1] for r in await c.execute(select(orders.c.id, orders.c.state))}
            assert states == {f"f1.{i:05d}": "completed" if i % 2 == 0 else "delivered" for i in range(n)}
            hist = [r[0] for r in await c.execute(select(order_events.c.event_id))]
            moved = [e.id for e in events if not (e.type == "order.shipped" and e.data["n"] == 2)
                     and not (e.type == "order.delivered" and e.data["n"] == 1)]  # a second parcel, a first delivery: no step
            assert sorted(hist) == sorted(moved)  # each step's history row once
            rows = {r[0]: r[1] for r in await c.execute(select(shipments.c.id, shipments.c.state))}
            assert len(rows) == 2 * n and set(rows.values()) == {"delivered"}
            dup = (await c.execute(select(func.count()).select_from(shipments).where(shipments.c.ship_to.is_(None)))).scalar_one()
            assert dup == 0
    finally:
        await store.close()


# ---------------------------------------------------------------- races, and the script against the rule


async def test_a_refund_and_a_parcel_racing_for_the_same_order_never_both_win(gateway_factory: Any, token: Any, redis: Any,
                                                                               http: Any, store_url: str) -> None:  # noqa: F811
    import asyncio

    w = await World.make(gateway_factory, token, redis, http, database_url=store_url)
    try:
        await w.room("shop", "h1")
        host = token("h1", "host", ("shop",))
        buyers = [f"rb{i}" for i in range(8)]
        for b in buyers:
            await w.call("POST", "/api/v1/me/addresses", token(b), ADDRESS, status=201)
        sid = await w.campaign("shop", stock=20, limit=3)
        oids = [await w.buy(b, sid, 2) for b in buyers]
        await w.settle()

        async def refund(b: str, oid: str) -> int:
            r = await w.http.post(f"{w.node.url}/api/v1/orders/{oid}/refunds", json={"reason": "changed_mind"}, headers=bearer(token(b)))
            return r.status

        async def ship(oid: str, k: int) -> int:
            r = await w.http.post(f"{w.node.url}/api/v1/orders/{oid}/shipments", json={"carrier": "SF", "tracking_number": f"RACE{k}00"},
                                  headers=bearer(host))
            return r.status

        # per order: a refund, and two hosts' parcels of everything owed, all at once
        got = await asyncio.gather(*(asyncio.gather(refund(b, o), ship(o, 1), ship(o, 2)) for b, o in zip(buyers, oids, strict=True)))
        for (rf, s1, s2), oid in zip(got, oids, strict=True):
            won = [rf == 202, s1 == 201, s2 == 201]
            assert sum(won) == 1, (oid, rf, s1, s2)  # a refund or one parcel of everything: never two
            assert all(s in (201, 202, 409) for s in (rf, s1, s2)), (rf, s1, s2)
        await w.settle()
        for (rf, _, _), oid in zip(got, oids, strict=True):
            o = (await w.call("GET", f"/api/v1/orders/{oid}", token("ops1", "ops")))
            assert o["order"]["state"] == ("refund_requested" if rf == 202 else "shipped"), o["order"]
            assert len(o["shipments"]) == (0 if rf == 202 else 1)
    finally:
        await w.close()


@hsettings(deadline=None, max_examples=25)
@given(st.lists(st.tuples(st.sampled_from(["ship", "deliver"]), st.integers(1, 3)), max_size=10))
def test_the_fulfilment_script_decides_delivery_as_the_rule_does(steps: list[tuple[str, int]]) -> None:
    """Random parcels and deliveries of an order of 3 units on real Redis: the record's
    progress after each step is :func:`order_state_after` of the parcels it holds."""
    import asyncio
    import os
    import uuid as _uuid

    import redis.asyncio as aioredis

    from livecommerce.fulfilment import Shipment

    async def run() -> None:
        r = aioredis.Redis.from_url(os.environ.get("LC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
        keys = Keys(f"lcp{_uuid.uuid4().hex[:8]}")
        rec = FulfilmentRedis(r, keys)
        oid = "p.o1"
        try:
            view = OrderView(oid, "u", "r", "paid", {"p": 3})
            for what, k in steps:
                cur = await rec.record(oid)
                if what == "ship":
                    try:
                        s = plan_shipment(view, cur.shipments, ShipAsk("SF", f"T{cur.v:04d}", {"p": k}), by="h", now_ms=NOW,
                                          ship_to_=None)
                    except Conflict:
                        continue
                    left = sum(owed(view.lines, 0, [*cur.shipments, s]).values())
                    await rec.ship(s, v=cur.v, owe=left)
                elif cur.shipments:
                    await rec.deliver(cur.shipments[(k - 1) % len(cur.shipments)].id, now_ms=NOW, by="ops")
                after = await rec.record(oid)
                want = order_state_after(view, after.shipments)
                assert (after.st or "paid") == want, (steps, after.st, want)
                assert all(isinstance(s, Shipment) for s in after.shipments)
        finally:
            async for key in r.scan_iter(match=f"{keys.prefix}:*"):
                await r.delete(key)
            await r.aclose()

    asyncio.run(run())


async def test_a_return_waits_for_the_orders_worker_but_never_stalls_the_refunds_group(gateway_factory: Any, token: Any, redis: Any,
                                                                                      http: Any, store_url: str) -> None:  # noqa: F811
    from livecommerce.errors import Unavailable
    from livecommerce.log import new_event
    from livecommerce.refunds import REQUESTED
    from livecommerce.refunds import event_id as refund_event_id
    from workers.refunds import CATCH_UP_MS

    w = await World.make(gateway_factory, token, redis, http, database_url=store_url)
    try:
        await w.room("shop", "h1")
        oid = await paid_order(w, "b1", 1)  # paid in SQL: a return's request finds it behind
        now = int(time.time() * 1000)

        def ask(n: int, at: int) -> Any:
            r = Refund(f"{oid}.r{n}", oid, n, "b1", "shop", oid.split(".")[0], "h1", 1, 1999, "damaged", "", 1, 1999, 0, 0, at,
                       kind="return")
            return new_event("orders", oid, REQUESTED, r.event_data(), refund_event_id(r.id, "requested"), at)

        with pytest.raises(Unavailable):  # fresh: the batch comes back until the order is delivered in SQL
            await w.refunds.handle(ask(1, now))
        await w.refunds.handle(ask(2, now - CATCH_UP_MS - 1000))  # long overdue: recorded as refused, the group moves on
        assert (await w.call("GET", f"/api/v1/orders/{oid}", token("b1")))["order"]["state"] == "paid"
    finally:
        await w.close()
