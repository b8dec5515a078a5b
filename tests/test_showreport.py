"""The show report: its figures for a scripted show with known numbers (pure), and the same
show run through real gateways, workers, Redis and SQL: viewers, followers, comments, likes,
gifts from the earnings ledger, paid orders, a refund, GMV, conversion, top products and
gifters; two nodes answer the same; 4xx for who may not ask and rooms without a show."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecommerce.errors import Conflict
from livecommerce.keys import Keys
from livecommerce.rooms import summarize
from livecommerce.showreport import (
    GiftFigures,
    OrderFigures,
    ProductLine,
    human_duration,
    money,
    report,
)
from tests.test_refunds import World, bearer, http  # noqa: F401  (fixture)
from tests.wsclient import Client
from workers.earnings import EarningsLedger
from workers.earnings import drain as drain_earnings

MIN = 60_000


def test_durations_read_as_people_say_them() -> None:
    assert [human_duration(s) for s in (0, 45.4, 60, 42 * 60 + 29, 3600, 3900, 2 * 3600 + 59)] == [
        "0 s", "45 s", "1 min", "42 min", "1 h", "1 h 5 min", "2 h"]
    assert (money(123450, "CNY"), money(1200, "usd"), money(5, "CHF"), money(-250, "EUR")) == ("¥1,234.50", "$12.00", "0.05 CHF", "-€2.50")


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_the_refund_rate_and_conversion_are_shares(paid: int, back: int) -> None:
    back = min(back, paid)
    meta = {"state": "ended", "live_ms": "1", "ended_ms": "2"}
    r = report("r", meta, now_ms=3, viewers=paid % 50, new_followers=0, orders=OrderFigures(3, paid, back, paid % 7, 0), products=[],
               gifts=GiftFigures(0, 0, 0, []), currency="CNY")
    assert 0 <= r["refund_rate"] <= 1 and r["gmv"] == paid - back
    assert r["conversion"] == (round((paid % 7) / (paid % 50), 4) if paid % 50 else 0.0)


def test_a_scripted_show_reports_its_known_figures() -> None:
    meta = {"state": "ended", "title": "Tea night", "host": "h1", "live_ms": str(10 * MIN), "ended_ms": str(52 * MIN + 20_000),
            "peak_online": "120", "online_sum": "90000", "online_samples": "2540", "comments": "311", "likes_base": "1000",
            "likes_end": "4500", "likes_now": "9999"}
    r = report("show1", meta, now_ms=99 * MIN, viewers=400, new_followers=37,
               orders=OrderFigures(orders=50, paid_amount=100_000, refunded_amount=5_000, buyers=40, refunded_orders=2),
               products=[ProductLine("tea", "Tea set", 30, 60_000), ProductLine("cup", "Cup", 20, 35_000)],
               gifts=GiftFigures(value=8_800, gifts=61, reversed_value=10, top_gifters=[("v1", 5000), ("v2", 3800)]), currency="CNY")
    assert (r["duration_s"], r["duration_text"], r["peak_online"], r["avg_online"]) == (2540.0, "42 min", 120, 35.4)
    assert (r["viewers"], r["new_followers"], r["comments"], r["likes"]) == (400, 37, 311, 3500)
    assert r["gifts"] == {"count": 61, "value": 8800, "reversed_value": 10, "unit": "coins",
                          "top_gifters": [{"user": "v1", "value": 5000}, {"user": "v2", "value": 3800}]}
    assert (r["orders"], r["buyers"], r["gmv"], r["gmv_text"], r["refund_rate"], r["conversion"]) == (
        50, 40, 95_000, "¥950.00", 0.05, 0.1)
    assert r["top_products"][0] == {"product_id": "tea", "name": "Tea set", "units": 30, "gmv": 60_000, "gmv_text": "¥600.00"}
    assert (r["ended"], r["ended_ms"], r["live_ms"]) == (True, 52 * MIN + 20_000, 10 * MIN)
    assert summarize(meta).avg_online == 35.4
    live = report("show1", {**meta, "state": "live", "ended_ms": ""}, now_ms=20 * MIN, viewers=1, new_followers=0,
                  orders=OrderFigures(0, 0, 0, 0, 0), products=[], gifts=GiftFigures(0, 0, 0, []), currency="CNY")
    assert (live["ended"], live["duration_text"], live["likes"], live["ended_ms"]) == (False, "10 min", 8999, None)
    with pytest.raises(Conflict):
        report("r", {"state": "created"}, now_ms=1, viewers=0, new_followers=0, orders=OrderFigures(0, 0, 0, 0, 0), products=[],
               gifts=GiftFigures(0, 0, 0, []), currency="CNY")


async def test_a_show_run_through_the_gateways_reports_what_happened_the_same_on_every_node(
    gateway_factory: Any, token: Any, redis: Any, http: Any  # noqa: F811
) -> None:
    w = await World.make(gateway_factory, token, redis, http)
    other = await gateway_factory(database_url=w.node.settings.database_url)
    clients: list[Client] = []
    try:
        host, ops = token("h1", "host", ("show1",)), token("ops1", "ops")
        await w.room("show1", "h1")
        await w.call("GET", "/api/v1/rooms/show1/report", host, status=409)  # never live: no show yet
        await w.call("POST", "/api/v1/rooms/show1/live", host)
        for u in ("v1", "v3"):
            await w.call("POST", f"/api/v1/wallets/{u}/topup", ops, {"amount": 100, "idempotency_key": f"k-{u}"})
        for u in ("v1", "v2", "v3", "v4", "v1"):  # four viewers, v1 twice
            clients.append(await Client.connect(w.node.ws, "show1", token(u), fmt="json"))
        clients.append(await Client.connect(other.ws, "show1", token("v2"), fmt="json"))  # v2 on the other node too
        v1, v2, v3 = clients[0], clients[1], clients[2]
        for u in ("v1", "v2"):
            await w.call("POST", "/api/v1/hosts/h1/follow", token(u))
        for i in range(3):
            assert (await v1.request("comment", text=f"hello {i}"))["t"] != "error"
        assert (await v1.request("gift", gift_id="lollipop", count=2))["t"] != "error"  # 20 coins
        assert (await v3.request("gift", gift_id="heart", count=1))["t"] != "error"  # 5 coins
        await v2.send("like", count=7)
        await w.call("POST", "/api/v1/products", ops, {"id": "p1", "name": "Tea", "price": 1000})
        await w.call("POST", "/api/v1/products", ops, {"id": "p2", "name": "Cup", "price": 500})
        tea = await w.campaign("show1", stock=10, price=1000, product="p1")
        cup = await w.campaign("show1", stock=10, price=500, product="p2")
        await w.buy("v1", tea, 2)
        refunded = await w.buy("v2", tea, 1)
        await w.buy("v3", tea, 1, pay=False)  # reserved, never paid: not an order of the report
        await w.buy("v4", cup, 1)
        await w.settle()
        rf = await w.call("POST", f"/api/v1/orders/{refunded}/refunds", token("v2"), {"reason": "damaged"}, status=202)
        await w.call("POST", f"/api/v1/refunds/{rf['refund_id']}/approve", host, {})
        await w.node.services.wallet_outbox.flush()
        await w.settle()
        ledger = EarningsLedger(w.store, redis, Keys(w.node.settings.key_prefix), share=0.5)
        assert await drain_earnings(w.log, ledger, fetch_timeout_ms=50) > 0
        await w.node.services.reports.flush()
        await other.services.reports.flush()

        ended = await w.call("POST", "/api/v1/rooms/show1/end", host)
        assert ended["summary"]["comments"] == 3 and ended["summary"]["likes"] == 7
        r = await w.call("GET", "/api/v1/rooms/show1/report", host)
        assert (r["viewers"], r["new_followers"], r["comments"], r["likes"], r["ended"]) == (4, 2, 3, 7, True)
        assert r["gifts"]["value"] == 25 and r["gifts"]["count"] == 2
        assert r["gifts"]["top_gifters"] == [{"user": "v1", "value": 20}, {"user": "v3", "value": 5}]
        assert (r["orders"], r["buyers"], r["paid_amount"], r["refunded_amount"], r["gmv"]) == (3, 3, 3500, 1000, 2500)
        assert (r["refund_rate"], r["conversion"], r["gmv_text"], r["currency"]) == (0.2857, 0.75, "¥25.00", "CNY")
        assert [(p["product_id"], p["units"], p["gmv"]) for p in r["top_products"]] == [("p1", 2, 2000), ("p2", 1, 500)]
        assert r["duration_s"] == round((r["ended_ms"] - r["live_ms"]) / 1000, 3)
        assert r["peak_online"] >= 4 and 0 < r["avg_online"] <= r["peak_online"]
        again = await w.http.get(f"{other.url}/api/v1/rooms/show1/report", headers=bearer(ops))
        assert again.status == 200
        assert {**(await again.json()), "as_of_ms": 0} == {**r, "as_of_ms": 0}  # another node, the same report

        await w.call("GET", "/api/v1/rooms/show1/report", token("v1"), status=403)
        await w.call("GET", "/api/v1/rooms/nosuch/report", ops, status=404)
        assert (await w.http.get(f"{w.node.url}/api/v1/rooms/show1/report")).status == 401
        await w.call("GET", "/api/v1/rooms/bad%20room/report", ops, status=400)
    finally:
        for c in clients:
            await c.close()
        await w.close()


async def test_follower_marks_are_written_once_per_show_and_a_new_show_clears_them_and_its_viewers(redis: Any, keys: Keys) -> None:
    from livecommerce.rooms import RoomInfo
    from livecommerce.rooms_redis import RedisRooms
    from livecommerce.showreport_redis import ShowReportRedis

    rooms, counters = RedisRooms(redis, keys), ShowReportRedis(redis, keys)
    assert await rooms.create(RoomInfo("r1", "t", "h1", 1))
    assert (await rooms.transition("r1", "created", "live", now_ms=1000, online=0))[0]
    await counters.add_viewers({"r1": ["a", "b", "a"]})
    assert await counters.mark_followers("r1", 1000, "followers_base", 5)
    assert not await counters.mark_followers("r1", 1000, "followers_base", 9)  # a second node's go-live hook: the first stands
    assert not await counters.mark_followers("r1", 999, "followers_end", 9)  # another show's end writes nothing
    await redis.sadd(keys.entity("fan", "h1", "followers"), "x", "y")
    assert await counters.followers("h1") == 2
    meta, viewers = await counters.read("r1")
    assert meta is not None and (meta["followers_base"], viewers, "followers_end" in meta) == ("5", 2, False)
    assert (await rooms.transition("r1", "live", "ended", now_ms=2000, online=0))[0]
    assert (await rooms.transition("r1", "ended", "live", now_ms=3000, online=0))[0]  # the next show starts clean
    meta, viewers = await counters.read("r1")
    assert meta is not None and ("followers_base" in meta, viewers, meta["online_samples"]) == (False, 0, "0")
    assert await counters.read("nosuch") == (None, 0)


async def test_a_failing_end_hook_is_logged_and_the_show_still_ends(gateway_factory: Any, token: Any, http: Any) -> None:  # noqa: F811
    node = await gateway_factory()
    host = token("h1", "host", ("r2",))

    async def broken(room: str, pub: dict[str, Any]) -> None:
        raise RuntimeError("a bug in a hook")

    node.gw.hooks.ended.insert(0, broken)
    for path, body in (("/api/v1/rooms", {"id": "r2"}), ("/api/v1/rooms/r2/live", None), ("/api/v1/rooms/r2/end", None)):
        r = await http.post(node.url + path, json=body, headers=bearer(host))
        assert r.status in (200, 201), await r.text()
    assert (await r.json())["state"] == "ended"
