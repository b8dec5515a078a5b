"""The cart over HTTP on a real gateway: add, view with the proposal, checkout (idempotent,
all or nothing, bad input 4xx with a reason), pay with the dev path, the order's lines."""

from __future__ import annotations

from typing import Any

import pytest

TEE = {"id": "tee", "name": "Cotton tee", "skus": [
    {"id": "red", "attrs": {"colour": "red"}, "price": 1000, "stock": 5, "limit": 2},
    {"id": "blue", "attrs": {"colour": "blue"}, "price": 1200, "stock": 1}]}
MUG = {"id": "mug", "name": "Mug", "price": 500, "stock": 3}


async def test_a_viewer_fills_a_cart_checks_out_once_and_pays(api_node: Any) -> None:
    _, api, token = api_node
    h1, v, w = token("h1", "host", ("r1",)), token("v"), token("w")
    await api.ok("POST", "/products", h1, TEE, status=201)
    await api.ok("POST", "/products", h1, MUG, status=201)
    await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "tee", "sku": "red", "qty": 2})
    cart = await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "mug"})
    assert [(ln["sku"], ln["qty"], ln["unit_price"], ln["ok"]) for ln in cart["lines"]] == [("red", 2, 1000, True),
                                                                                            ("default", 1, 500, True)]
    assert (cart["subtotal"], cart["coupons"]["proposed"]) == (2500, [])
    cart = await api.ok("PUT", "/rooms/r1/cart/items/tee/red", v, {"qty": 3})
    assert cart["lines"][0]["problem"] == "limit_reached"
    await api.ok("PUT", "/rooms/r1/cart/items/tee/red", v, {"qty": 2})
    for bad, code in [({"lines": "x"}, "invalid"), ({"coupon_ids": [1]}, "invalid"), ({"nope": 1}, "invalid")]:
        st, body = await api.call("POST", "/rooms/r1/cart/checkout", v, bad, headers={"Idempotency-Key": "bad"})
        assert (st, body["error"]["code"]) == (400, code)
    st, body = await api.call("POST", "/rooms/r1/cart/checkout", v, {})
    assert (st, body["error"]["code"]) == (400, "idempotency_key_required")
    order = await api.ok("POST", "/rooms/r1/cart/checkout", v, {}, status=201, headers={"Idempotency-Key": "c1"})
    again = await api.ok("POST", "/rooms/r1/cart/checkout", v, {}, status=201, headers={"Idempotency-Key": "c1"})
    assert again["order_id"] == order["order_id"] and order["amount"] == 2500
    assert (await api.ok("GET", "/rooms/r1/cart", v))["lines"] == []  # the ordered lines left the cart
    # another buyer: the blue tee and 3 mugs; only 2 mugs left: refused, nothing held
    st, body = await api.call("POST", "/rooms/r1/cart/checkout", w, {"lines": [
        {"product_id": "tee", "sku": "blue", "qty": 1}, {"product_id": "mug", "qty": 3}]}, headers={"Idempotency-Key": "c2"})
    assert (st, body["error"]["code"]) == (409, "sold_out")
    p = await api.ok("GET", "/products/tee", h1)
    assert {s["id"]: s["units"]["reserved"] for s in p["skus"]} == {"red": 2, "blue": 0}
    paid = await api.ok("POST", f"/orders/{order['order_id']}/pay", v, {})
    assert (paid["outcome"], paid["amount"]) == ("paid", 2500)
    got = await api.ok("GET", f"/orders/{order['order_id']}", v)
    assert [ln["sku"] for ln in got["lines"]] == ["red", "default"] and got["cart"]["state"] == "paid"
    assert (await api.call("GET", f"/orders/{order['order_id']}", w))[0] == 404


async def test_a_price_changed_between_the_read_and_the_hold_is_refused_and_a_fresh_read_buys_at_the_new_price(
        api_node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    node, api, token = api_node
    h1, v = token("h1", "host", ("r1",)), token("v")
    await api.ok("POST", "/products", h1, TEE, status=201)
    await api.ok("POST", "/products", h1, MUG, status=201)
    await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "tee", "sku": "red", "qty": 2})
    await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "mug"})
    cart = node.services.carts.cart
    priced = cart._price
    changed: list[int] = []

    async def price_then_the_host_changes_it(*a: Any, **kw: Any) -> Any:
        got = await priced(*a, **kw)  # the checkout read the prices: the host's real PATCH lands now
        changed.append((await api.ok("PATCH", "/products/tee/skus/red", h1, {"price": 1100}))["v"])
        return got

    monkeypatch.setattr(cart, "_price", price_then_the_host_changes_it)
    st, body = await api.call("POST", "/rooms/r1/cart/checkout", v, {}, headers={"Idempotency-Key": "k1"})
    monkeypatch.undo()
    assert changed and (st, body["error"]["code"]) == (409, "price_changed"), body
    assert "the price of tee/red changed" in body["error"]["message"] and "read the cart again" in body["error"]["message"]
    # nothing held: the mug (held first, product ids in order) went back, the tee was never taken
    for pid, sku, left in (("tee", "red", 5), ("mug", "default", 3)):
        units = {s["id"]: s["units"] for s in (await api.ok("GET", f"/products/{pid}", h1))["skus"]}[sku]
        assert (units["available"], units["reserved"], units["sold"]) == (left, 0, 0), (pid, units)
    st, again = await api.call("POST", "/rooms/r1/cart/checkout", v, {}, headers={"Idempotency-Key": "k1"})
    assert (st, again["error"]["code"]) == (409, "price_changed")  # the key's answer stays the refusal
    # the buyer reads the cart again (the new price) and checks out with a new key
    cart_now = await api.ok("GET", "/rooms/r1/cart", v)
    assert [(ln["sku"], ln["unit_price"]) for ln in cart_now["lines"]] == [("red", 1100), ("default", 500)]
    order = await api.ok("POST", "/rooms/r1/cart/checkout", v, {}, status=201, headers={"Idempotency-Key": "k2"})
    assert order["amount"] == 2 * 1100 + 500 and [ln["unit_price"] for ln in order["lines"]] == [1100, 500]
    red = {s["id"]: s["units"] for s in (await api.ok("GET", "/products/tee", h1))["skus"]}["red"]
    assert (red["available"], red["reserved"]) == (3, 2)


async def test_a_checkout_in_an_ended_show_answers_room_ended_and_a_retry_of_an_order_made_before_gets_it(
        api_node: Any) -> None:
    from gateway.cart import parse_checkout
    from livecommerce.auth import Identity

    node, api, token = api_node
    h1, v = token("h1", "host", ("r1",)), token("v")
    await api.ok("POST", "/products", h1, TEE, status=201)
    await api.ok("POST", "/rooms", h1, {"id": "r1", "title": "Show"}, status=201)
    await api.ok("POST", "/rooms/r1/live", h1, {})
    before = await api.ok("POST", "/rooms/r1/cart/checkout", v, {"lines": [{"product_id": "tee", "sku": "red"}]},
                          status=201, headers={"Idempotency-Key": "before-end"})
    await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "tee", "sku": "blue"})
    await api.ok("POST", "/rooms/r1/end", h1, {})
    st, body = await api.call("POST", "/rooms/r1/cart/checkout", v, {}, headers={"Idempotency-Key": "after-end"})
    assert (st, body["error"]["code"]) == (409, "room_ended"), body
    blue = {s["id"]: s["units"] for s in (await api.ok("GET", "/products/tee", h1))["skus"]}["blue"]
    assert blue["reserved"] == 0 and blue["available"] == 1  # nothing held
    assert [ln["sku"] for ln in (await api.ok("GET", "/rooms/r1/cart", v))["lines"]] == ["blue"]  # the cart is kept
    # the same key again over HTTP replays its stored answer; a retry whose answer was not
    # kept (the key released after a failure) reaches the checkout itself: the order made
    # before the end, not room_ended
    st, again = await api.call("POST", "/rooms/r1/cart/checkout", v, {"lines": [{"product_id": "tee", "sku": "red"}]},
                               headers={"Idempotency-Key": "before-end"})
    assert st == 201 and again["order_id"] == before["order_id"], again
    placed = await node.services.carts.checkout(Identity("v", "viewer"), "r1", "before-end",
                                                parse_checkout({"lines": [{"product_id": "tee", "sku": "red"}]}))
    assert placed.body["order_id"] == before["order_id"] and placed.body["duplicate"] is True


async def test_the_cart_offers_the_rooms_unclaimed_coupons_with_what_each_would_save(api_node: Any) -> None:
    _, api, token = api_node
    h1, v, w = token("h1", "host", ("r1",)), token("v"), token("w")
    await api.ok("POST", "/products", h1, TEE, status=201)
    big = (await api.ok("POST", "/rooms/r1/coupons", h1, {"kind": "full_reduction", "threshold": 1500, "value": 300,
                                                           "quantity": 2}, status=201))["drop_id"]
    small = (await api.ok("POST", "/rooms/r1/coupons", h1, {"kind": "full_reduction", "threshold": 0, "value": 100,
                                                             "quantity": 2}, status=201))["drop_id"]

    def claimable(cart: dict[str, Any]) -> list[tuple[str, int, str | None]]:
        return [(c["drop_id"], c["saves"], c.get("reason")) for c in cart["coupons"]["claimable"]]

    cart = await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "tee", "sku": "red", "qty": 1})  # 1000
    assert cart["coupons"]["proposed"] == [] and claimable(cart) == [(small, 100, None), (big, 0, "below_threshold")]
    cart = await api.ok("PUT", "/rooms/r1/cart/items/tee/red", v, {"qty": 2})  # 2000: both apply, the bigger first
    assert claimable(cart) == [(big, 300, None), (small, 100, None)]
    mine = (await api.ok("POST", f"/coupons/{big}/claim", v, status=201))["coupon_id"]
    cart = await api.ok("GET", "/rooms/r1/cart", v)
    assert (cart["coupons"]["proposed"], cart["coupons"]["discount"]) == ([mine], 300)
    assert claimable(cart) == [(small, 0, None)]  # one shop coupon an order: claiming the small one would not add
    # another buyer takes the last small coupons: nothing left to offer
    await api.ok("POST", f"/coupons/{small}/claim", w, status=201)
    await api.ok("POST", f"/coupons/{small}/claim", token("x"), status=201)
    assert claimable(await api.ok("GET", "/rooms/r1/cart", v)) == []
