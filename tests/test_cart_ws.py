"""The cart over the WebSocket on a real gateway (real Redis, real WebSocket clients), and the
refusals that name their line on both transports:

* every cart command (``cart.get``, ``cart.add``, ``cart.set``, ``cart.remove``,
  ``cart.clear``, ``cart.checkout``) answers the HTTP route's body in its ``ack``; a change
  reaches the user's other connections in the room as ``cart.changed {room, v, qty}``, not
  the connection that made it;
* a checkout's ``request_id`` is its idempotency key: a retry answers the same order with
  ``duplicate: true``, another body under it is ``idempotency_conflict``, and the HTTP
  ``Idempotency-Key`` of the same value and body replays the same order (one binding);
* a refused checkout's error frame and HTTP 409 body carry the line's ``product_id`` and
  ``sku``;
* bad frames answer an error frame with the reason, and the connection keeps serving;
* a cart changed over HTTP is the cart ``cart.get`` reads.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_cart_gateway import MUG, TEE
from tests.waiting import wait_until
from tests.wsclient import Client, next_of


@pytest.fixture
async def world(api_node: Any) -> Any:
    node, api, token = api_node
    h1 = token("h1", "host", ("r1",))
    await api.ok("POST", "/products", h1, TEE, status=201)
    await api.ok("POST", "/products", h1, MUG, status=201)
    clients: list[Client] = []

    async def connect(user: str, room: str = "r1") -> Client:
        c = await Client.connect(node.ws, room, token(user), fmt="json")
        clients.append(c)
        # a push finds the user through presence, written in batches after the welcome
        await wait_until(lambda: node.gw.presence.user_nodes([user]), until=lambda got: bool(got.get(user)),
                         what=f"{user} in presence")
        return c

    yield api, token, connect, h1
    for c in clients:
        await c.close()


async def ack(c: Client, t: str, **d: Any) -> dict[str, Any]:
    got = await c.request(t, **d)
    assert got["t"] == "ack", got
    out: dict[str, Any] = got["d"]
    return out


async def error(c: Client, t: str, **d: Any) -> dict[str, Any]:
    got = await c.request(t, **d)
    assert got["t"] == "error", got
    out: dict[str, Any] = got["d"]
    return out


async def raw(c: Client, frame: Any) -> dict[str, Any]:
    """Send a frame as given (JSON text) and return the reply carrying its id."""
    await c.ws.send(json.dumps(frame))
    while True:
        e = await c.next_event(skip=("online", "likes", "cart.changed"))
        if e["t"] in ("ack", "error"):
            return e


def lines(cart: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(ln["product_id"], ln["sku"], ln["qty"]) for ln in cart["lines"]]


async def test_every_cart_command_answers_the_cart_and_tells_the_other_connections(world: Any) -> None:
    api, token, connect, _ = world
    a, b = await connect("v"), await connect("v")
    other = await connect("w")  # another user's cart is not this one
    empty = await ack(a, "cart.get")
    assert (lines(empty), empty["room"], empty["subtotal"]) == ([], "r1", 0)
    cart = await ack(a, "cart.add", product_id="tee", sku="red", qty=2)
    assert lines(cart) == [("tee", "red", 2)] and cart["subtotal"] == 2000
    seen = await next_of(b, "cart.changed")
    assert seen["room"] == "r1" and seen["d"] == {"room": "r1", "v": cart["v"], "qty": 2}
    cart = await ack(a, "cart.add", product_id="mug")  # the product's only SKU, one unit
    assert lines(cart) == [("tee", "red", 2), ("mug", "default", 1)]
    assert (await next_of(b, "cart.changed"))["d"] == {"room": "r1", "v": cart["v"], "qty": 3}
    cart = await ack(a, "cart.set", product_id="tee", sku="red", qty=1)
    assert lines(cart) == [("tee", "red", 1), ("mug", "default", 1)]
    cart = await ack(a, "cart.set", product_id="mug", sku="default", qty=0)  # 0 removes
    assert lines(cart) == [("tee", "red", 1)]
    cart = await ack(a, "cart.add", product_id="tee", sku="blue")
    cart = await ack(a, "cart.remove", product_id="tee", sku="red")
    assert lines(cart) == [("tee", "blue", 1)]
    assert (await ack(b, "cart.get")) == {**cart}  # the same cart from the other connection
    # a change over HTTP (no connection made it) reaches both; the first notice `a` sees is
    # this one: the notices of its own changes were not sent to it
    after = await api.ok("POST", "/rooms/r1/cart/items", token("v"), {"product_id": "mug", "qty": 2})
    assert (await next_of(a, "cart.changed"))["d"] == {"room": "r1", "v": after["v"], "qty": 3}
    for _ in range(4):
        assert (await next_of(b, "cart.changed"))["d"]["v"] < after["v"]  # clear ... remove, then the HTTP one
    assert (await next_of(b, "cart.changed"))["d"]["v"] == after["v"]
    cleared = await ack(b, "cart.clear")
    assert (lines(cleared), cleared["qty"], cleared["subtotal"]) == ([], 0, 0)
    assert (await next_of(a, "cart.changed"))["d"] == {"room": "r1", "v": cleared["v"], "qty": 0}
    assert lines(await ack(a, "cart.get")) == []
    assert lines(await ack(other, "cart.get")) == []
    # the cart answers refusals with the wire codes of the HTTP routes
    assert (await error(a, "cart.add", product_id="tee", sku="red", qty=100))["code"] == "invalid"  # 1..99 a line
    await ack(a, "cart.add", product_id="tee", sku="red", qty=98)
    assert (await error(a, "cart.add", product_id="tee", sku="red", qty=2))["code"] == "qty_too_large"
    assert (await error(a, "cart.add", product_id="nope"))["code"] == "not_found"
    assert (await error(a, "cart.add", product_id="tee", sku="green"))["code"] == "not_found"


async def test_a_checkout_over_the_socket_is_bound_to_its_request_id(world: Any) -> None:
    api, token, connect, _ = world
    a = await connect("v")
    await ack(a, "cart.add", product_id="tee", sku="red", qty=2)
    await ack(a, "cart.add", product_id="mug")
    order = await ack(a, "cart.checkout", request_id="co-1")
    assert (order["duplicate"], order["amount"], order["state"]) == (False, 2500, "reserved")
    assert [(ln["product_id"], ln["sku"], ln["qty"]) for ln in order["lines"]] == [("tee", "red", 2), ("mug", "default", 1)]
    assert lines(await ack(a, "cart.get")) == []  # the ordered lines left the cart
    again = await ack(a, "cart.checkout", request_id="co-1")  # the retry: the same order, nothing moves
    assert (again["order_id"], again["duplicate"], again["amount"]) == (order["order_id"], True, 2500)
    p = await api.ok("GET", "/products/tee", token("h1", "host", ("r1",)))
    assert {s["id"]: s["units"]["reserved"] for s in p["skus"]} == {"red": 2, "blue": 0}
    # the request_id with another body changes nothing
    err = await error(a, "cart.checkout", request_id="co-1", lines=[{"product_id": "mug", "qty": 1}])
    assert err["code"] == "idempotency_conflict" and "co-1" in err["message"]
    # one binding for both transports: the HTTP key of the same value and body is the same order
    st, body = await api.call("POST", "/rooms/r1/cart/checkout", token("v"), {}, headers={"Idempotency-Key": "co-1"})
    assert (st, body["order_id"]) == (201, order["order_id"])
    st, body = await api.call("POST", "/rooms/r1/cart/checkout", token("v"), {"coupon_ids": []},
                              headers={"Idempotency-Key": "co-1"})
    assert (st, body["error"]["code"]) == (422, "idempotency_conflict")
    # explicit lines, and an HTTP checkout retried over the socket
    placed = await api.ok("POST", "/rooms/r1/cart/checkout", token("v"), {"lines": [{"product_id": "mug", "qty": 1}]},
                          status=201, headers={"Idempotency-Key": "co-2"})
    retried = await ack(a, "cart.checkout", request_id="co-2", lines=[{"product_id": "mug", "qty": 1}])
    assert (retried["order_id"], retried["duplicate"]) == (placed["order_id"], True)
    # another user's request_id of the same value is another order
    w = await connect("w")
    await ack(w, "cart.add", product_id="tee", sku="blue")
    theirs = await ack(w, "cart.checkout", request_id="co-1")
    assert theirs["order_id"] != order["order_id"] and theirs["duplicate"] is False
    assert (await error(w, "cart.checkout", request_id="co-3"))["code"] == "cart_empty"


async def test_a_refused_checkout_names_its_line_on_both_transports(world: Any) -> None:
    api, token, connect, h1 = world
    w = await connect("w")
    # 3 mugs in stock: 4 are refused, nothing is held
    err = await error(w, "cart.checkout", request_id="r-1",
                      lines=[{"product_id": "tee", "sku": "blue", "qty": 1}, {"product_id": "mug", "qty": 4}])
    assert (err["code"], err["product_id"], err["sku"]) == ("sold_out", "mug", "default")
    p = await api.ok("GET", "/products/tee", h1)
    assert {s["id"]: s["units"]["reserved"] for s in p["skus"]} == {"red": 0, "blue": 0}
    again = await error(w, "cart.checkout", request_id="r-1",
                        lines=[{"product_id": "tee", "sku": "blue", "qty": 1}, {"product_id": "mug", "qty": 4}])
    assert (again["code"], again["product_id"], again["sku"]) == ("sold_out", "mug", "default")
    # over HTTP: the 409 body carries the line too, and so does its replay
    for _ in range(2):
        st, body = await api.call("POST", "/rooms/r1/cart/checkout", token("w"),
                                  {"lines": [{"product_id": "tee", "sku": "red", "qty": 3}]}, headers={"Idempotency-Key": "h-1"})
        assert st == 409 and body["error"]["code"] == "limit_reached"
        assert (body["error"]["product_id"], body["error"]["sku"]) == ("tee", "red")
    # a refusal without a line has no line fields
    st, body = await api.call("POST", "/rooms/r1/cart/checkout", token("w"),
                              {"lines": [{"product_id": "ghost", "qty": 1}]}, headers={"Idempotency-Key": "h-2"})
    assert (st, body["error"]["code"], body["error"]["product_id"]) == (409, "no_product", "ghost")
    assert "sku" not in body["error"]
    # an archived SKU: adding it is refused with the line, on both transports
    await api.ok("DELETE", "/products/tee/skus/blue", h1)
    err = await error(w, "cart.add", product_id="tee", sku="blue")
    assert (err["code"], err["product_id"], err["sku"]) == ("sku_archived", "tee", "blue")
    st, body = await api.call("POST", "/rooms/r1/cart/items", token("w"), {"product_id": "tee", "sku": "blue"})
    assert (st, body["error"]["code"], body["error"]["sku"]) == (409, "sku_archived", "blue")


async def test_bad_frames_answer_an_error_and_the_connection_keeps_serving(world: Any) -> None:
    _, _, connect, _ = world
    a = await connect("v")
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("cart.get", {"room": "r2"}, "unknown field 'room'"),
        ("cart.clear", {"x": 1}, "unknown field 'x'"),
        ("cart.add", {}, "product_id"),
        ("cart.add", {"product_id": ["tee"]}, "product_id"),
        ("cart.add", {"product_id": "tee", "sku": "red", "qty": "2"}, "qty"),
        ("cart.add", {"product_id": "tee", "sku": "red", "qty": 0}, "qty"),
        ("cart.add", {"product_id": "tee", "colour": "red"}, "unknown field 'colour'"),
        ("cart.add", {"product_id": "tee"}, "several SKUs"),
        ("cart.set", {"product_id": "tee", "sku": "red"}, "qty"),
        ("cart.set", {"product_id": "tee", "sku": "red", "qty": -1}, "qty"),
        ("cart.set", {"product_id": "tee", "sku": "red", "qty": True}, "qty"),
        ("cart.remove", {"product_id": "tee"}, "sku"),
        ("cart.remove", {"product_id": "tee", "sku": "red", "qty": 1}, "unknown field 'qty'"),
        ("cart.checkout", {}, "request_id"),
        ("cart.checkout", {"request_id": 7}, "request_id"),
        ("cart.checkout", {"request_id": "has space"}, "idempotency key"),
        ("cart.checkout", {"request_id": "k", "lines": "all"}, "lines"),
        ("cart.checkout", {"request_id": "k", "lines": [{"product_id": "tee", "n": 1}]}, "unknown field 'n'"),
        ("cart.checkout", {"request_id": "k", "coupon_ids": [1]}, "coupon_ids"),
        ("cart.checkout", {"request_id": "k", "pay": True}, "unknown field 'pay'"),
    ]
    for t, d, why in bad:
        err = await error(a, t, **d)
        assert err["code"] == "invalid" and why in err["message"], (t, d, err)
    # the envelope itself: `d` not a map, fields at the top level (an unknown one too)
    got = await raw(a, {"t": "cart.get", "id": "x1", "d": 5})
    assert (got["t"], got["id"], got["d"]["code"]) == ("error", "x1", "invalid")
    got = await raw(a, {"t": "cart.add", "id": "x2", "product_id": "tee", "sku": "red", "bogus": 1})
    assert (got["t"], got["id"], got["d"]["code"]) == ("error", "x2", "invalid") and "bogus" in got["d"]["message"]
    got = await raw(a, {"t": "cart.add", "id": "x3", "product_id": "tee", "sku": "red"})
    assert (got["t"], got["id"]) == ("ack", "x3") and lines(got["d"]) == [("tee", "red", 1)]
    got = await raw(a, {"t": "cart.nope", "id": "x4"})
    assert (got["t"], got["d"]["code"]) == ("error", "unknown_type")
    # still serving
    assert lines(await ack(a, "cart.get")) == [("tee", "red", 1)]


async def test_a_cart_changed_over_http_is_the_cart_the_socket_reads(world: Any) -> None:
    api, token, connect, _ = world
    a = await connect("v")
    v = token("v")
    await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "tee", "sku": "red", "qty": 2})
    await api.ok("POST", "/rooms/r1/cart/items", v, {"product_id": "mug", "qty": 1})
    over_http = await api.ok("PUT", "/rooms/r1/cart/items/tee/red", v, {"qty": 1})
    got = await ack(a, "cart.get")
    assert got == over_http and lines(got) == [("tee", "red", 1), ("mug", "default", 1)]
    # and the other way round: the socket's change is what HTTP reads
    await ack(a, "cart.remove", product_id="mug", sku="default")
    assert lines(await api.ok("GET", "/rooms/r1/cart", v)) == [("tee", "red", 1)]
    # another room's cart is another cart
    b = await connect("v", room="r2")
    assert lines(await ack(b, "cart.get")) == []
