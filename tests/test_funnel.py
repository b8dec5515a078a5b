"""Campaign funnels: who was in the room while a flash sale ran, who was shown the product,
who tried to buy (WebSocket and HTTP), reserved, paid and got a refund, and the GMV; the same
for a coupon drop in the room."""

from __future__ import annotations

from typing import Any

from livecommerce.funnel import STEPS, funnel
from tests.test_refunds import World, bearer, http  # noqa: F401  (fixture)
from tests.wsclient import Client


def test_the_funnel_json_is_simple_steps_with_rates() -> None:
    f = funnel("sale", "s1", "r1", {"viewers": 4, "saw": 2, "paid": 1}, gmv=100, refunded_amount=0)
    assert [s["step"] for s in f["steps"]] == list(STEPS)
    assert f["steps"][1] == {"step": "saw", "count": 2, "rate": 0.5} and f["counts"]["tried"] == 0
    assert funnel("coupon", "d", None, {}, gmv=0, refunded_amount=0)["steps"][0]["rate"] == 0.0


async def _until(c: Client, t: str) -> dict[str, Any]:
    while True:
        e = await c.next_event()
        if e["t"] == t:
            return e


async def test_a_sale_and_a_coupon_drop_report_their_funnel_and_gmv(gateway_factory: Any, token: Any, redis: Any,
                                                                    http: Any) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http)
    try:
        host, ops = token("h1", "host", ("live1",)), token("ops1", "ops")
        await w.room("live1", "h1")
        await w.call("POST", "/api/v1/products", host, {"id": "p1", "name": "Tea", "price": 3000})
        sid = f"fs{w.node.settings.node_id}"
        await w.call("POST", "/api/v1/campaigns", ops, {"id": sid, "room": "live1", "product_id": "p1", "price": 3000, "stock": 5,
                                                        "per_user_limit": 1, "starts_ms": w.node.gw.now_ms() + 3_600_000, "duration_s": 600})
        v1 = await Client.connect(w.node.ws, "live1", token("v1"), fmt="json")
        v2 = await Client.connect(w.node.ws, "live1", token("v2"), fmt="json")
        await w.call("POST", f"/api/v1/sales/{sid}/start", host)
        await _until(v1, "sale.started")
        await _until(v2, "sale.started")
        v3 = await Client.connect(w.node.ws, "live1", token("v3"), fmt="json")  # joins while it runs, nothing pinned
        f = await w.call("GET", f"/api/v1/sales/{sid}/funnel", host)
        assert (f["counts"]["viewers"], f["counts"]["saw"]) == (3, 2)
        await w.call("POST", "/api/v1/rooms/live1/pin", host, {"product_id": "p1"})
        await _until(v3, "product.pinned")
        v4 = await Client.connect(w.node.ws, "live1", token("v4"), fmt="json")  # joins while it is pinned
        r1 = await v1.request("buy", sale_id=sid, qty=1, request_id="a")
        assert r1["t"] == "order.reserved"
        r3 = await v3.request("buy", sale_id=sid, qty=2, request_id="b")
        assert r3["t"] == "error" and r3["d"]["code"] == "limit_reached"
        r2 = await w.http.post(f"{w.node.url}/api/v1/sales/{sid}/buy", json={"qty": 1, "request_id": "c"}, headers=bearer(token("v2")))
        assert r2.status == 201
        o1, o2 = r1["d"]["order_id"], (await r2.json())["order_id"]
        await w.call("POST", f"/api/v1/orders/{o1}/pay", token("v1"), {})
        await w.call("POST", f"/api/v1/orders/{o2}/cancel", token("v2"))
        await w.settle()
        rf = await w.call("POST", f"/api/v1/orders/{o1}/refunds", token("v1"), {"reason": "damaged"}, status=202)
        await w.call("POST", f"/api/v1/refunds/{rf['refund_id']}/approve", host, {})
        await w.settle()
        f = await w.call("GET", f"/api/v1/sales/{sid}/funnel", host)
        assert f["counts"] == {"viewers": 4, "saw": 4, "tried": 3, "reserved": 2, "paid": 1, "refunded": 1}
        assert (f["gmv"], f["refunded_amount"], f["room"]) == (0, 3000, "live1")
        assert f["steps"][2] == {"step": "tried", "count": 3, "rate": 0.75}
        await w.call("GET", f"/api/v1/sales/{sid}/funnel", token("v1"), status=403)

        # a coupon drop: everyone present sees it; one claims twice, one tries after it ran out
        drop = await w.call("POST", "/api/v1/rooms/live1/coupons", host, {"kind": "full_reduction", "value": 100, "quantity": 1,
                                                                          "drop_id": "cd1"}, status=201)
        assert drop["drop_id"] == "cd1"
        await _until(v1, "coupon.dropped")
        assert (await v1.request("coupon.claim", drop_id="cd1"))["t"] == "coupon.claimed"
        assert (await v1.request("coupon.claim", drop_id="cd1"))["d"]["code"] == "already_claimed"
        assert (await v4.request("coupon.claim", drop_id="cd1"))["d"]["code"] == "sold_out"
        fc = await w.call("GET", "/api/v1/coupons/cd1/funnel", host)
        assert fc["counts"] == {"viewers": 4, "saw": 4, "tried": 2, "reserved": 1, "paid": 0, "refunded": 0}
        assert fc["extra"] == {"quantity": 1, "claimed": 1, "used": 0, "remaining": 0}
        for c in (v1, v2, v3, v4):
            await c.close()
    finally:
        await w.close()
