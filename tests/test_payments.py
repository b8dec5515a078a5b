"""The payment boundary (issue 19, part 4): signed provider callbacks pay orders exactly once.

Pure rules (signature scheme, replay window, what a callback may change) with hypothesis;
then a real gateway (tests/fixtures_gateway.py) and the simulated provider as a real HTTP
service on its own port (livecommerce/payments_sim.py), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecommerce.errors import BadFrame, Conflict
from livecommerce.payments import (
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    SIGNATURE_HEADER,
    CallbackEvent,
    IntentRecord,
    decide_callback,
    intent_step,
    parse_event,
    parse_header,
    sign_header,
    signature,
    verify,
)
from livecommerce.payments_sim import SimConfig, SimProvider, start_sim
from workers.orders import OrdersWorker

SECRET = "whsec-" + "0123456789abcdef" * 3  # 54 bytes


# ------------------------------------------------------------------ pure rules
@given(st.binary(max_size=300), st.integers(0, 10**11), st.binary(max_size=300), st.integers(-1000, 1000))
def test_verify_accepts_exactly_the_signed_body_within_the_window(body: bytes, ts: int, other: bytes, skew: int) -> None:
    header = sign_header(SECRET, ts, body)
    now = ts + skew
    got = verify(SECRET, header, body, now_s=now, window_s=300)
    assert got == (None if abs(skew) <= 300 else "stale_timestamp")
    if other != body and abs(skew) <= 300:
        assert verify(SECRET, header, other, now_s=now, window_s=300) == "bad_signature"
    assert verify(SECRET + "x", header, body, now_s=ts, window_s=300) == "bad_signature"


@given(st.binary(max_size=100), st.integers(0, 2**31), st.integers(1, 10_000))
def test_a_moved_timestamp_breaks_the_signature(body: bytes, ts: int, shift: int) -> None:
    sig = signature(SECRET, ts, body)
    moved = f"t={ts + shift},v1={sig}"
    assert verify(SECRET, moved, body, now_s=ts + shift, window_s=300) == "bad_signature"


@given(st.text(max_size=80))
def test_any_header_is_judged_without_an_exception(header: str) -> None:
    assert verify(SECRET, header, b"{}", now_s=0) in ("missing_signature", "malformed_signature", "stale_timestamp", "bad_signature", None)


def test_headers_missing_parts_are_malformed_and_rotation_accepts_any_matching_v1() -> None:
    for h in ("t=1", "v1=ab", "t=x,v1=ab", "nonsense", "t=1;v1=ab"):
        with pytest.raises(BadFrame):
            parse_header(h)
    assert verify(SECRET, None, b"", now_s=0) == "missing_signature"
    good = sign_header(SECRET, 100, b"{}")
    assert verify(SECRET, f"{good},v1=00ff", b"{}", now_s=100) is None
    assert verify(SECRET, f"t=100,v1=00ff,{good.split(',')[1]}", b"{}", now_s=100) is None


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(["id", "type", "created", "data", "amount",
                                                                                         "intent_id", "order_id", "currency", "refund_id"]), c, max_size=6),
                     max_leaves=20)


@given(st.one_of(st.binary(max_size=200), _JSON.map(lambda v: json.dumps(v).encode())))
def test_a_signed_body_of_any_shape_is_an_event_or_invalid_event(body: bytes) -> None:
    try:
        ev = parse_event(body)
    except BadFrame as exc:
        assert exc.code == "invalid_event"
    else:
        assert isinstance(ev.amount, int) and ev.amount >= 0 and ev.id and ev.intent_id and ev.order_id


def _rec(**kw: Any) -> IntentRecord:
    return IntentRecord(**{"order_id": "s.o1", "intent_id": "pi_1", "amount": 500, "discount": 0, "coupon_id": None,
                           "user_id": "u", "created_ms": 0, **kw})


def _ev(**kw: Any) -> CallbackEvent:
    return CallbackEvent(**{"id": "evt_1", "type": PAYMENT_SUCCEEDED, "created": 0, "intent_id": "pi_1", "order_id": "s.o1",
                            "amount": 500, "currency": "CNY", **kw})


def test_only_a_success_for_the_recorded_intent_and_amount_pays() -> None:
    assert decide_callback(_rec(), _ev()) == ("pay", "")
    assert decide_callback(_rec(), _ev(type=PAYMENT_FAILED)) == ("ignore", "not_a_success")
    assert decide_callback(_rec(), _ev(type="charge.dispute")) == ("ignore", "unknown_type")
    for rec, ev, code in ((None, _ev(), "unknown_intent"), (_rec(), _ev(intent_id="pi_2"), "unknown_intent"),
                          (_rec(), _ev(amount=499), "amount_mismatch")):
        with pytest.raises(BadFrame) as e:
            decide_callback(rec, ev)
        assert e.value.code == code
    assert parse_event(_ev().body()) == _ev()
    for bad in (b"", b"[]", b'{"id":"e","type":"t","created":1,"data":{"intent_id":"p","order_id":"o","amount":-1,"currency":"C"}}'):
        with pytest.raises(BadFrame):
            parse_event(bad)


def test_a_failure_after_a_success_is_an_illegal_intent_step() -> None:
    assert intent_step("requires_confirmation", "fail") == "requires_confirmation"
    assert intent_step("requires_confirmation", "succeed") == "succeeded"
    with pytest.raises(Conflict):
        intent_step("succeeded", "fail")


# ------------------------------------------------------------------ a gateway and the provider
def now_ms() -> int:
    return int(time.time() * 1000)


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[SimProvider]:
    runner, provider = await start_sim(SimConfig(webhook_url="http://127.0.0.1:9/unset", secret=SECRET, retry_delay_s=0.05))
    yield provider
    await runner.cleanup()


async def pay_node(gateway_factory: Any, sim: SimProvider, **kw: Any) -> Any:
    node = await gateway_factory(payment_provider_url=sim.base_url, payment_webhook_secret=SECRET, **kw)
    sim.cfg.webhook_url = node.url + "/api/v1/payments/webhook"
    return node


async def sale(http: aiohttp.ClientSession, node: Any, ops: str, **kw: Any) -> str:
    sid = f"s{uuid.uuid4().hex[:8]}"
    body = {"id": sid, "room": "shop", "product_id": "p1", "price": 1000, "stock": kw.pop("stock", 5),
            "per_user_limit": kw.pop("per_user_limit", 2), "starts_ms": now_ms() - 1000, "duration_s": 600, **kw}
    r = await http.post(node.url + "/api/v1/campaigns", json=body, headers=bearer(ops))
    assert r.status == 201, await r.text()
    return sid


async def buy(http: aiohttp.ClientSession, node: Any, sid: str, tok: str, qty: int = 1) -> str:
    r = await http.post(f"{node.url}/api/v1/sales/{sid}/buy", json={"qty": qty, "request_id": uuid.uuid4().hex[:12]}, headers=bearer(tok))
    assert r.status == 201, await r.text()
    return str((await r.json())["order_id"])


async def intent(http: aiohttp.ClientSession, node: Any, oid: str, tok: str, status: int = 201) -> dict[str, Any]:
    r = await http.post(f"{node.url}/api/v1/orders/{oid}/payments", json={}, headers=bearer(tok))
    assert r.status == status, await r.text()
    return dict(await r.json())


async def confirm(http: aiohttp.ClientSession, it: dict[str, Any], outcome: str = "succeed") -> dict[str, Any]:
    r = await http.post(it["confirm_url"], json={"client_secret": it["client_secret"], "outcome": outcome})
    assert r.status == 200, await r.text()
    return dict(await r.json())


async def hold_state(node: Any, sid: str, oid: str) -> str:
    h = await node.services.checkout.sales.hold(sid, oid)
    return str(h.state)


async def callbacks(http: aiohttp.ClientSession, node: Any, ops: str, limit: int = 500) -> list[dict[str, Any]]:
    r = await http.get(f"{node.url}/api/v1/payments/callbacks?limit={limit}", headers=bearer(ops))
    assert r.status == 200, await r.text()
    return list((await r.json())["callbacks"])


async def settle_sql(node: Any, store_url: str, redis: Any) -> OrdersWorker:
    worker = OrdersWorker(node.settings.replace(database_url=store_url), redis=redis)
    await worker.drain()
    return worker


async def test_a_confirmed_intent_pays_the_order_once_through_duplicated_callbacks(gateway_factory, token, http, sim, store_url, redis):
    sim.cfg.duplicates = 2
    node = await pay_node(gateway_factory, sim, database_url=store_url)
    ops = token("ops1", "ops")
    sid = await sale(http, node, ops, stock=3)
    oid = await buy(http, node, sid, token("b1"), qty=2)
    it = await intent(http, node, oid, token("b1"))
    assert it["amount"] == 2000 and it["order_id"] == oid and it["confirm_url"].startswith(sim.base_url)
    assert (await intent(http, node, oid, token("b1"), status=200))["intent_id"] == it["intent_id"]  # one intent per order
    assert (await http.post(f"{node.url}/api/v1/orders/{oid}/payments", json={}, headers=bearer(token("b2")))).status == 404
    assert await hold_state(node, sid, oid) == "reserved"  # nothing is paid before the provider says so
    assert (await confirm(http, it))["status"] == "succeeded"
    await sim.settled()
    rows = await callbacks(http, node, ops)
    assert len(rows) == 3 and {r["outcome"] for r in rows} == {"paid", "already_paid"}
    assert sorted(r["duplicate"] for r in rows) == [False, True, True] and all(r["verified"] for r in rows)
    assert sum(r["outcome"] == "paid" for r in rows) == 1
    assert await hold_state(node, sid, oid) == "paid"
    worker = await settle_sql(node, store_url, redis)
    try:
        order = await worker.store.get_order(oid)
        hist = await worker.store.order_history(oid)
    finally:
        await worker.close()
    assert order is not None and order.state == "paid" and order.amount == 2000
    assert [h.to_state for h in hist] == ["reserved", "paid"]
    stats = await (await http.get(f"{node.url}/api/v1/sales/{sid}/stats", headers=bearer(ops))).json()
    assert stats["conserved"] and (stats["stock"], stats["remaining"], stats["reserved"], stats["paid"]) == (3, 1, 0, 2)
    assert stats["gmv"] == 2000
    mine = await (await http.get(f"{node.url}/api/v1/orders/{oid}/payments", headers=bearer(token("b1")))).json()
    assert mine["intent"]["intent_id"] == it["intent_id"] and mine["refunds"] == []
    assert (await http.get(f"{node.url}/api/v1/payments/callbacks", headers=bearer(token("b1")))).status == 403


async def test_forged_stale_tampered_and_unknown_callbacks_change_nothing(gateway_factory, token, http, sim, redis):
    sim.cfg.hold = True  # the real callback never leaves the provider
    node = await pay_node(gateway_factory, sim)
    ops = token("ops1", "ops")
    sid = await sale(http, node, ops)
    oid = await buy(http, node, sid, token("b1"))
    it = await intent(http, node, oid, token("b1"))
    await confirm(http, it)
    good = CallbackEvent(id="evt_x", type=PAYMENT_SUCCEEDED, created=int(time.time()), intent_id=it["intent_id"],
                         order_id=oid, amount=it["amount"], currency="CNY").body()
    t = int(time.time())
    url = node.url + "/api/v1/payments/webhook"
    cases = [
        ("forged", good, sign_header("another-secret-of-enough-length-0123456789", t, good), 401, "bad_signature"),
        ("stale", good, sign_header(SECRET, t - 301, good), 401, "stale_timestamp"),
        ("tampered", good.replace(b'"amount":1000', b'"amount":1'), sign_header(SECRET, t, good), 401, "bad_signature"),
        ("missing", good, None, 401, "missing_signature"),
        ("malformed", good, "v1=abc", 401, "malformed_signature"),
    ]
    unknown = json.loads(good)
    unknown["data"]["intent_id"] = "pi_nobody"
    ub = json.dumps(unknown).encode()
    cases.append(("unknown intent", ub, sign_header(SECRET, t, ub), 400, "unknown_intent"))
    wrong = json.loads(good)
    wrong["data"]["amount"] = 1
    wb = json.dumps(wrong).encode()
    cases.append(("wrong amount", wb, sign_header(SECRET, t, wb), 400, "amount_mismatch"))
    cases.append(("not json", b"not json", sign_header(SECRET, t, b"not json"), 400, "invalid_event"))
    for what, body, header, status, code in cases:
        headers = {"Content-Type": "application/json", **({SIGNATURE_HEADER: header} if header else {})}
        r = await http.post(url, data=body, headers=headers)
        assert r.status == status, (what, await r.text())
        assert (await r.json())["error"]["code"] == code, what
    assert await hold_state(node, sid, oid) == "reserved"
    rows = await callbacks(http, node, ops)
    assert [r["reason"] for r in reversed(rows)] == [c[4] for c in cases]
    assert all(r["outcome"] == "refused" for r in rows)
    assert SECRET not in json.dumps(rows)
    # the genuine callback, released now, pays
    sim.cfg.hold = False
    assert sim.release("forward") == 1
    await sim.settled()
    assert await hold_state(node, sid, oid) == "paid"


async def test_callbacks_out_of_order_pay_once_and_a_late_failure_changes_nothing(gateway_factory, token, http, sim, redis):
    sim.cfg.hold, sim.cfg.duplicates = True, 1
    node = await pay_node(gateway_factory, sim)
    ops = token("ops1", "ops")
    sid = await sale(http, node, ops)
    oid = await buy(http, node, sid, token("b1"))
    it = await intent(http, node, oid, token("b1"))
    assert (await confirm(http, it, "fail"))["status"] == "requires_confirmation"  # a declined card
    assert (await confirm(http, it, "succeed"))["status"] == "succeeded"  # the buyer tries again
    assert sim.release("reverse") == 2  # succeeded first, then the older failure, each twice
    await sim.settled()
    rows = list(reversed(await callbacks(http, node, ops)))
    assert [r["type"] for r in rows] == [PAYMENT_SUCCEEDED] * 2 + [PAYMENT_FAILED] * 2
    assert [r["outcome"] for r in rows] == ["paid", "already_paid", "ignored", "ignored"]
    assert await hold_state(node, sid, oid) == "paid"
    st = await node.services.checkout.sales.stats(sid)
    assert (st.reserved, st.paid) == (0, 1)


async def test_a_success_after_the_pay_window_is_refunded_through_the_provider_and_ledgered(gateway_factory, token, http, sim, redis, keys):
    sim.cfg.hold, sim.cfg.duplicates = True, 1
    node = await pay_node(gateway_factory, sim)
    ops = token("ops1", "ops")
    sid = await sale(http, node, ops, payment_window_s=1)
    oid = await buy(http, node, sid, token("b1"))
    it = await intent(http, node, oid, token("b1"))
    await confirm(http, it)  # the buyer paid in time; the callback comes late
    await asyncio.sleep(1.3)  # past the 1 s pay window
    sim.release("forward")
    await sim.settled()
    rows = list(reversed(await callbacks(http, node, ops)))
    assert [r["outcome"] for r in rows] == ["refunded_late", "refunded_late"]
    held = sim.intents[it["intent_id"]]
    assert held.status == "refunded" and held.refunded == it["amount"] and len(held.refunds) == 1  # once, whatever the repeats
    assert await hold_state(node, sid, oid) == "cancelled"
    st = await node.services.checkout.sales.stats(sid)
    assert (st.remaining, st.reserved, st.paid) == (5, 0, 0)
    ops_refunds = (await (await http.get(f"{node.url}/api/v1/payments/refunds", headers=bearer(ops))).json())["refunds"]
    assert len(ops_refunds) == 2 and {r["id"] for r in ops_refunds} == {held.refunds[0]["id"]}  # same refund, seen twice
    mine = await (await http.get(f"{node.url}/api/v1/orders/{oid}/payments", headers=bearer(token("b1")))).json()
    assert [r["id"] for r in mine["refunds"]] == [held.refunds[0]["id"]]
    # the ledger: one payment.refunded event id on the orders log (appended twice, same id)
    entries = []
    async for k in redis.scan_iter(match=f"{keys.prefix}:{{log:orders*", count=1000):
        for _id, fields in await redis.xrange(k):
            raw = b" ".join(v for v in fields.values() if isinstance(v, bytes))
            if b"payment.refunded" in raw:
                entries.append(raw)
    assert entries and all(f"{oid}:payment:{it['intent_id']}:refunded".encode() in e for e in entries)
    worker = OrdersWorker(node.settings, redis=redis)
    try:
        await worker.drain()
        order = await worker.store.get_order(oid)
    finally:
        await worker.close()
    assert order is not None and order.state == "cancelled"


async def test_two_hundred_orders_paid_by_concurrent_duplicated_callbacks_are_each_paid_once(gateway_factory, token, http, sim, store_url, redis):
    sim.cfg.duplicates = 1
    node = await pay_node(gateway_factory, sim, database_url=store_url)
    ops = token("ops1", "ops")
    n = 200
    sid = await sale(http, node, ops, stock=n, per_user_limit=1)
    toks = [token(f"c{i}") for i in range(n)]
    oids = await asyncio.gather(*(buy(http, node, sid, t) for t in toks))
    its = await asyncio.gather(*(intent(http, node, o, t) for o, t in zip(oids, toks, strict=True)))
    await asyncio.gather(*(confirm(http, it) for it in its))
    await sim.settled()
    rows = await callbacks(http, node, ops, limit=500)
    answered = [d for d in sim.deliveries if "status" in d]  # every delivery the gateway answered is listed
    assert len(rows) == len(answered) >= 2 * n and all(r["verified"] for r in rows)
    assert sum(r["outcome"] == "paid" for r in rows) == n
    st = await node.services.checkout.sales.stats(sid)
    assert (st.remaining, st.reserved, st.paid) == (0, 0, n)
    worker = await settle_sql(node, store_url, redis)
    try:
        paid = await worker.store.list_orders(sale_id=sid, state="paid", limit=1000)
        hists = [await worker.store.order_history(o) for o in oids[:20]]
    finally:
        await worker.close()
    assert sorted(o.id for o in paid) == sorted(oids)
    assert all([h.to_state for h in hist] == ["reserved", "paid"] for hist in hists)


async def test_the_dev_pay_path_is_off_outside_dev(gateway_factory, token, http):
    node = await gateway_factory(dev_pay=False)
    sid = await sale(http, node, token("ops1", "ops"))
    oid = await buy(http, node, sid, token("b1"))
    r = await http.post(f"{node.url}/api/v1/orders/{oid}/pay", json={}, headers=bearer(token("b1")))
    assert r.status == 403 and (await r.json())["error"]["code"] == "dev_pay_disabled"
    assert await hold_state(node, sid, oid) == "reserved"
    # and without a provider, intents say so
    r = await http.post(f"{node.url}/api/v1/orders/{oid}/payments", json={}, headers=bearer(token("b1")))
    assert r.status == 403 and (await r.json())["error"]["code"] == "payments_disabled"


async def test_the_viewer_page_learns_how_the_node_takes_payments(gateway_factory, token, http, sim):
    """``welcome.payments`` (the page's Pay follows it) and the pages' CSP: the provider's
    origin may be connected to only when a provider is configured."""
    from tests.wsclient import Client

    nodes = {"provider": await pay_node(gateway_factory, sim, dev_pay=False), "dev": await gateway_factory(dev_pay=True),
             "none": await gateway_factory(dev_pay=False)}
    for mode, node in nodes.items():
        c = await Client.connect(node.ws, "paymode", token("pm1"))
        assert c.welcome["d"]["payments"] == mode
        await c.close()
        r = await http.get(f"{node.url}/static/viewer.html")
        csp = r.headers["Content-Security-Policy"]
        connect = next(d for d in csp.split("; ") if d.startswith("connect-src"))
        assert connect == ("connect-src 'self' ws: wss: " + sim.base_url if mode == "provider" else "connect-src 'self' ws: wss:"), csp


async def test_the_simulators_client_api_answers_cors_and_says_why_a_card_was_declined(http, sim):
    """The buyer's confirm is called from a page of another origin: its preflight and answer
    carry CORS; the server-side API (create, refunds) does not."""
    r = await http.post(f"{sim.base_url}/v1/payment_intents", json={"order_id": "o1", "amount": 500}, headers={"Origin": "http://shop"})
    it = await r.json()
    assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    r = await http.get(f"{sim.base_url}/v1/payment_intents/{it['id']}", headers={"Origin": "http://shop"})
    assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers  # a server-side read
    r = await http.options(it["confirm_url"], headers={"Origin": "http://shop", "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "content-type"})
    assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
    assert "content-type" in r.headers["Access-Control-Allow-Headers"].lower()
    declined = await confirm(http, it, "fail")
    assert declined["status"] == "requires_confirmation" and declined["last_payment_error"]["code"] == "card_declined"
    r = await http.post(it["confirm_url"], json={"client_secret": "wrong"}, headers={"Origin": "http://shop"})
    assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == "*"  # a refusal the page can read
    ok = await confirm(http, it)
    assert ok["status"] == "succeeded" and ok["last_payment_error"] is None


async def test_an_approved_refund_of_an_order_paid_at_the_provider_goes_back_to_the_original_method(gateway_factory, token, http, sim, redis, keys):
    from livecommerce import refunds_sql
    from livecommerce.log import new_event
    from livecommerce.log_open import open_log
    from livecommerce.payments_http import HttpPaymentProvider
    from livecommerce.refunds import APPROVED, refund_from_event
    from livecommerce.refunds_redis import RefundsRedis
    from livecommerce.store_sql import SqlStore
    from workers.refunds import RefundsWorker, drain

    node = await pay_node(gateway_factory, sim)
    ops = token("ops1", "ops")
    sid = await sale(http, node, ops)
    oid = await buy(http, node, sid, token("b1"), qty=2)
    it = await intent(http, node, oid, token("b1"))
    await confirm(http, it)
    await sim.settled()
    worker = await settle_sql(node, node.settings.database_url, redis)
    await worker.close()
    r = await http.post(f"{node.url}/api/v1/orders/{oid}/refunds", json={"qty": 1, "reason": "damaged"}, headers=bearer(token("b1")))
    assert r.status == 202, await r.text()
    rid = (await r.json())["refund_id"]
    assert (await http.post(f"{node.url}/api/v1/refunds/{rid}/approve", json={}, headers=bearer(ops))).status == 200
    durable = open_log(node.settings, redis)
    store = SqlStore(node.settings.database_url)
    provider = HttpPaymentProvider(sim.base_url)
    try:
        refunds = RefundsWorker(store, redis, keys, durable, provider=provider)
        await drain(durable, refunds)
        # a redelivered approval asks the provider again with the same key: the same refund
        data = (await RefundsRedis(redis, keys).record(rid) or {})["data"]
        ev = new_event("orders", oid, APPROVED, data, f"{rid}:approved", now_ms())
        again = await RefundsWorker(store, redis, keys, durable, provider=provider)._to_original(ev, refund_from_event(data))
        rows = await refunds_sql.list_refunds(store, order_ids=[oid], limit=10)
    finally:
        await provider.close()
        await store.close()
        await durable.close()
    held = sim.intents[it["intent_id"]]
    assert again == held.refunds[0]["id"]
    assert [x["amount"] for x in held.refunds] == [1000] and held.refunded == 1000 and held.status == "succeeded"
    assert rows[0]["state"] == "refunded" and rows[0]["credited"] == 0  # no wallet credit: the money went back to the card
    mine = await (await http.get(f"{node.url}/api/v1/orders/{oid}/payments", headers=bearer(token("b1")))).json()
    assert [x["id"] for x in mine["refunds"]] == [held.refunds[0]["id"]]



async def claimed_coupon(http: aiohttp.ClientSession, node: Any, ops: str, terms: dict[str, Any], tok: str) -> str:
    """A coupon drop of room `shop` with ``terms``, claimed by the holder of ``tok``: its coupon id."""
    made = await http.post(f"{node.url}/api/v1/rooms/shop/coupons", json={**terms, "quantity": 5}, headers=bearer(ops))
    assert made.status == 201, await made.text()
    claim = await http.post(f"{node.url}/api/v1/coupons/{(await made.json())['drop_id']}/claim", headers=bearer(tok))
    assert claim.status == 201, await claim.text()
    return str((await claim.json())["coupon_id"])


async def paid_in_sql_with_the_coupon_used(http: aiohttp.ClientSession, node: Any, redis: Any, oid: str, user: str,
                                           tok: str, want: tuple[int, int, str]) -> None:
    """The orders worker wrote ``oid`` paid with (amount, discount, coupon), and the buyer's
    one coupon reads used."""
    worker = await settle_sql(node, node.settings.database_url, redis)
    try:
        order = await worker.store.get_order(oid)
    finally:
        await worker.close()
    assert order is not None and (order.state, order.amount, order.discount, order.coupon_id) == ("paid", *want)
    mine = await (await http.get(f"{node.url}/api/v1/users/{user}/coupons", headers=bearer(tok))).json()
    assert [c["state"] for c in mine["coupons"]] == ["used"]


async def test_the_intent_charges_what_pay_would_after_the_coupon_and_the_callback_consumes_it(gateway_factory, token, http, sim, redis):
    node = await pay_node(gateway_factory, sim)
    ops = token("ops1", "ops")
    coupon = await claimed_coupon(http, node, ops, {"kind": "percent", "value": 10}, token("b1"))
    sid = await sale(http, node, ops)
    oid = await buy(http, node, sid, token("b1"), qty=2)
    r = await http.post(f"{node.url}/api/v1/orders/{oid}/payments", json={"coupon_id": coupon}, headers=bearer(token("b1")))
    assert r.status == 201, await r.text()
    it = await r.json()
    assert (it["amount"], it["discount"], it["coupon_id"]) == (1800, 200, coupon)
    assert sim.intents[it["intent_id"]].amount == 1800  # the provider charges the net amount
    await confirm(http, it)
    await sim.settled()
    await paid_in_sql_with_the_coupon_used(http, node, redis, oid, "b1", token("b1"), (1800, 200, coupon))


async def test_an_order_its_coupon_covers_entirely_is_paid_without_the_provider_where_dev_pay_is_off(
        gateway_factory, token, http, sim, redis):
    node = await pay_node(gateway_factory, sim, dev_pay=False)
    ops = token("ops1", "ops")
    coupon = await claimed_coupon(http, node, ops, {"kind": "full_reduction", "threshold": 0, "value": 5000}, token("b1"))
    sid = await sale(http, node, ops)
    oid = await buy(http, node, sid, token("b1"), qty=2)
    r = await http.post(f"{node.url}/api/v1/orders/{oid}/payments", json={"coupon_id": coupon}, headers=bearer(token("b1")))
    assert r.status == 201, await r.text()
    it = await r.json()
    assert (it["intent_id"], it["amount"], it["discount"], it["coupon_id"], it["outcome"]) == (None, 0, 2000, coupon, "paid")
    assert sim.intents == {}  # the provider was not asked for nothing
    assert await hold_state(node, sid, oid) == "paid"
    again = await http.post(f"{node.url}/api/v1/orders/{oid}/payments", json={"coupon_id": coupon}, headers=bearer(token("b1")))
    assert again.status == 409 and (await again.json())["error"]["code"] == "already_paid"
    await paid_in_sql_with_the_coupon_used(http, node, redis, oid, "b1", token("b1"), (0, 2000, coupon))


def test_a_provider_needs_a_webhook_secret_of_32_bytes() -> None:
    from livecommerce.config import ConfigError, Settings

    s = Settings(payment_provider_url="http://127.0.0.1:1", payment_webhook_secret="x" * 31)
    with pytest.raises(ConfigError):
        s.check_payments()
    s.replace(payment_webhook_secret="x" * 32).check_payments()
    Settings().check_payments()  # no provider: nothing to check
    assert "x" * 31 not in repr(s)
