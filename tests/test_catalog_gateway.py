"""The catalogue and the room's product list at the edge: real gateway nodes, real Redis and
SQLite, real WebSocket clients.

* products and SKUs over HTTP: who may change what (viewer 403, another host 403), bad
  bodies answered 4xx with the field and the fix, idempotent retries;
* the room's list: host changes reach viewers as ``bag.changed``, late joiners get it in
  ``welcome``, product changes refresh it, archiving takes a product off it;
* two nodes: a change made on node A reaches a viewer on node B and B's next joiner;
* the welcome of a room the node already serves reads nothing of the list from Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.fixtures_gateway import Api
from tests.waiting import wait_until
from tests.wsclient import Client, next_of

Json = Any


TEE = {"id": "tee", "name": "Cotton tee", "category": "clothing", "skus": [
    {"attrs": {"colour": "red", "size": "M"}, "price": 1999, "stock": 5, "image": "https://img.example/red.jpg"},
    {"attrs": {"colour": "red", "size": "L"}, "price": 2099, "stock": 3},
]}


async def test_hosts_manage_their_own_products_and_skus(api_node: Any) -> None:
    node, api, token = api_node
    h1, h2, ops, viewer = token("h1", "host", ("r1",)), token("h2", "host", ("r2",)), token("o", "ops"), token("v")
    p = await api.ok("POST", "/products", h1, TEE, status=201)
    assert (p["owner"], p["price"], p["price_max"], p["created"]) == ("h1", 1999, 2099, True)
    assert [(s["id"], s["stock"], s["units"]) for s in p["skus"]] == [
        ("red-M", 5, {"available": 5, "reserved": 0, "sold": 0, "stocked": 5}),
        ("red-L", 3, {"available": 3, "reserved": 0, "sold": 0, "stocked": 3})]
    assert p["options"] == [{"name": "colour", "values": ["red"]}, {"name": "size", "values": ["M", "L"]}]
    # the same definition again is the same product; another one under the id is refused
    again = await api.ok("POST", "/products", h1, TEE, status=200)
    assert again["created"] is False and again["v"] == 1
    assert (await api.call("POST", "/products", h1, {**TEE, "name": "Other"}))[1]["error"]["code"] == "product_exists"
    assert (await api.call("POST", "/products", h2, TEE))[0] == 403  # the id is h1's
    # public view: stock, no units; the owner and ops see units
    public = await api.ok("GET", "/products/tee")
    assert public["skus"][0]["stock"] == 5 and "units" not in public["skus"][0]
    assert "units" not in (await api.ok("GET", "/products/tee", h2))["skus"][0]
    assert "units" in (await api.ok("GET", "/products/tee", ops))["skus"][0]
    # who may change it
    for tok, code in ((viewer, 403), (h2, 403), (None, 401)):
        assert (await api.call("PATCH", "/products/tee", tok, {"name": "x"}))[0] == code
        assert (await api.call("PATCH", "/products/tee/skus/red-M", tok, {"price": 1}))[0] == code
        assert (await api.call("POST", "/products/tee/skus", tok, {"attrs": {"colour": "blue", "size": "M"}, "price": 1}))[0] == code
        assert (await api.call("DELETE", "/products/tee", tok))[0] == code
        assert (await api.call("DELETE", "/products/tee/skus/red-M", tok))[0] == code
    assert (await api.call("POST", "/products", viewer, {"name": "x", "price": 1}))[0] == 403
    assert (await api.call("POST", "/products", h1, {"name": "x", "price": 1, "owner": "h2"}))[0] == 403
    # the owner changes price, stock, image, adds and archives SKUs
    p = await api.ok("PATCH", "/products/tee/skus/red-M", h1, {"price": 1899, "add_stock": 2})
    assert (p["skus"][0]["price"], p["skus"][0]["stock"], p["v"]) == (1899, 7, 2)
    p = await api.ok("PATCH", "/products/tee/skus/red-L", h1, {"stock": 0, "image": "/static/l.png"})
    assert (p["skus"][1]["stock"], p["skus"][1]["image"]) == (0, "/static/l.png")
    p = await api.ok("POST", "/products/tee/skus", h1, {"attrs": {"colour": "blue", "size": "M"}, "price": 1999, "stock": 4},
                     status=201)
    assert [s["id"] for s in p["skus"]] == ["red-M", "red-L", "blue-M"] and p["skus"][2]["stock"] == 4
    p = await api.ok("DELETE", "/products/tee/skus/red-L", h1)
    assert p["skus"][1]["state"] == "archived" and p["price_max"] == 1999
    p = await api.ok("PATCH", "/products/tee", h1, {"name": "Tee", "description": "Soft"})
    assert (p["name"], p["description"]) == ("Tee", "Soft")
    # ops change anyone's; listing: a host its own, ops anyone's
    await api.ok("PATCH", "/products/tee", ops, {"category": "tops"})
    await api.ok("POST", "/products", h2, {"id": "mug", "name": "Mug", "price": 900}, status=201)
    assert [x["id"] for x in (await api.ok("GET", "/products", h1))["products"]] == ["tee"]
    assert (await api.call("GET", "/products?owner=h2", h1))[0] == 403
    assert sorted(x["id"] for x in (await api.ok("GET", "/products", ops))["products"]) == ["mug", "tee"]
    assert (await api.call("GET", "/products", viewer))[0] == 403
    archived = await api.ok("DELETE", "/products/tee", h1)
    assert archived["state"] == "archived"
    assert [x["id"] for x in (await api.ok("GET", "/products?state=active", ops))["products"]] == ["mug"]
    restored = await api.ok("PATCH", "/products/tee", h1, {"state": "active"})
    assert restored["state"] == "active"
    # SQL has what Redis has (reconcile finds nothing)
    report = await node.services.catalog.catalogue.reconcile("tee", repair=False, now_ms=node.gw.now_ms())
    assert report.drift == [] and report.conserved


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), [
    ("POST", "/products", {"name": "x"}, 400, "price: is required"),
    ("POST", "/products", {"name": "x", "price": 1.5}, 400, "price"),
    ("POST", "/products", {"name": "x", "price": 1, "colour": "red"}, 400, "colour"),
    ("POST", "/products", {"name": "x", "skus": [{"price": 1}, {"price": 2}]}, 400, "tells them apart"),
    ("POST", "/products", {"name": "x", "skus": [{"attrs": {"c": "r"}, "price": 1}, {"attrs": {"c": "r"}, "price": 1, "id": "z"}]},
     400, "skus[1].attrs"),
    ("POST", "/products", {"name": "x", "price": 1, "image": "javascript:x"}, 400, "http(s) URL"),
    ("POST", "/products", [1, 2], 400, "object"),
    ("PATCH", "/products/tee", {}, 400, "at least one"),
    ("PATCH", "/products/tee", {"state": "gone"}, 400, "state"),
    ("PATCH", "/products/tee/skus/red-M", {"stock": 1, "add_stock": 1}, 400, "add_stock"),
    ("PATCH", "/products/tee/skus/red-M", {"add_stock": -99}, 409, "stock_out_of_range"),
    ("PATCH", "/products/tee/skus/nope", {"price": 1}, 404, "no SKU"),
    ("PATCH", "/products/nope", {"name": "x"}, 404, "no product"),
    ("POST", "/products/tee/skus", {"attrs": {"colour": "red", "size": "M"}, "price": 1, "id": "again"}, 400, "already another SKU"),
    ("POST", "/products/tee/skus", {"attrs": {"colour": "red"}, "price": 1}, 400, "must name the options"),
])
async def test_bad_input_is_a_4xx_with_the_reason(api_node: Any, method: str, path: str, body: Json, status: int,
                                                  words: str) -> None:
    _, api, token = api_node
    h1 = token("h1", "host", ("r1",))
    await api.ok("POST", "/products", h1, TEE, status=201)
    got, data = await api.call(method, path, h1, body)
    assert got == status, data
    assert words in data["error"]["message"] or words == data["error"]["code"], data


async def test_writes_with_an_idempotency_key_run_once(api_node: Any) -> None:
    _, api, token = api_node
    h1 = token("h1", "host", ("r1",))
    key = {"Idempotency-Key": "restock-1"}
    await api.ok("POST", "/products", h1, TEE, status=201, headers={"Idempotency-Key": "create-1"})
    first = await api.ok("PATCH", "/products/tee/skus/red-M", h1, {"add_stock": 10}, headers=key)
    again = await api.ok("PATCH", "/products/tee/skus/red-M", h1, {"add_stock": 10}, headers=key)
    assert first == again and first["skus"][0]["stock"] == 15
    assert (await api.ok("GET", "/products/tee"))["skus"][0]["stock"] == 15  # added once
    got, data = await api.call("PATCH", "/products/tee/skus/red-M", h1, {"add_stock": 11}, headers=key)
    assert (got, data["error"]["code"]) == (422, "idempotency_conflict")
    again = await api.ok("POST", "/products", h1, TEE, status=201, headers={"Idempotency-Key": "create-1"})
    assert again["created"] is True  # the first answer, replayed


async def test_the_room_list_reaches_viewers_and_late_joiners(api_node: Any) -> None:
    node, api, token = api_node
    h1, h2, ops = token("h1", "host", ("r1",)), token("h2", "host", ("r2",)), token("o", "ops")
    await api.ok("POST", "/rooms", h1, {"id": "r1", "title": "Show"}, status=201)
    await api.ok("POST", "/products", h1, TEE, status=201)
    await api.ok("POST", "/products", h1, {"id": "mug", "name": "Mug", "price": 900, "stock": 10}, status=201)
    await api.ok("POST", "/products", h2, {"id": "h2-cup", "name": "Cup", "price": 500}, status=201)
    await api.ok("POST", "/products", ops, {"id": "gift-box", "name": "Gift box", "price": 100}, status=201)  # platform
    viewer = await Client.connect(node.ws, "r1", token("v1"), fmt="json")
    assert viewer.welcome["d"]["bag"] == {"items": [], "explaining": None, "v": 0}

    bag = await api.ok("POST", "/rooms/r1/bag/items", h1, {"product_id": "tee"})
    assert (bag["v"], bag["changed"], [i["product_id"] for i in bag["items"]]) == (1, True, ["tee"])
    assert bag["items"][0] == {"product_id": "tee", "name": "Cotton tee", "image": "https://img.example/red.jpg",
                               "price_min": 1999, "price_max": 2099, "skus": 2}
    e = await next_of(viewer, "bag.changed")
    assert (e["d"]["v"], e["d"]["by"], [i["product_id"] for i in e["d"]["items"]]) == (1, "h1", ["tee"])
    await api.ok("POST", "/rooms/r1/bag/items", h1, {"product_id": "mug", "position": 0})
    await api.ok("POST", "/rooms/r1/bag/items", h1, {"product_id": "gift-box"})
    bag = await api.ok("PUT", "/rooms/r1/bag/order", h1, {"product_ids": ["tee", "gift-box", "mug"]})
    assert [i["product_id"] for i in bag["items"]] == ["tee", "gift-box", "mug"]
    bag = await api.ok("PUT", "/rooms/r1/bag/explaining", h1, {"product_id": "mug"})
    assert (bag["explaining"], bag["v"]) == ("mug", 5)
    # the viewer saw every change, in order, the last one whole
    seen = [(await next_of(viewer, "bag.changed"))["d"]["v"] for _ in range(4)]
    assert seen == [2, 3, 4, 5]
    late = await Client.connect(node.ws, "r1", token("late"), fmt="json")
    assert late.welcome["d"]["bag"]["explaining"] == "mug" and late.welcome["d"]["bag"]["v"] == 5
    assert [i["product_id"] for i in late.welcome["d"]["bag"]["items"]] == ["tee", "gift-box", "mug"]
    assert (await api.ok("GET", "/rooms/r1/bag"))["v"] == 5

    # refusals: who, what, and a stale order
    assert (await api.call("POST", "/rooms/r1/bag/items", token("v1"), {"product_id": "tee"}))[0] == 403
    assert (await api.call("POST", "/rooms/r1/bag/items", h2, {"product_id": "h2-cup"}))[0] == 403  # not h2's room
    assert (await api.call("POST", "/rooms/r1/bag/items", h1, {"product_id": "h2-cup"}))[0] == 403  # h2's product
    got, data = await api.call("PUT", "/rooms/r1/bag/order", h1, {"product_ids": ["tee", "mug"]})
    assert (got, data["error"]["code"]) == (409, "bag_changed") and "gift-box" in data["error"]["message"]
    got, data = await api.call("PUT", "/rooms/r1/bag/explaining", h1, {"product_id": "h2-cup"})
    assert (got, data["error"]["code"]) == (409, "not_listed")
    assert (await api.call("POST", "/rooms/r1/bag/items", h1, {"product_id": "nope"}))[0] == 404
    assert (await api.call("POST", "/rooms/r1/bag/items", h1, {"product_id": "tee", "position": -1}))[0] == 400
    # a repeated add changes nothing (same v), and says so
    bag = await api.ok("POST", "/rooms/r1/bag/items", h1, {"product_id": "tee"})
    assert (bag["changed"], bag["v"]) == (False, 5)

    # the product's changes reach the list; archiving takes it off (and clears the marker)
    await api.ok("PATCH", "/products/mug/skus/default", h1, {"price": 800})
    e = await next_of(viewer, "bag.changed")
    while e["d"]["v"] < 6:
        e = await next_of(viewer, "bag.changed")
    assert next(i for i in e["d"]["items"] if i["product_id"] == "mug")["price_min"] == 800
    await api.ok("DELETE", "/products/mug", h1)
    e = await next_of(viewer, "bag.changed")
    assert [i["product_id"] for i in e["d"]["items"]] == ["tee", "gift-box"] and e["d"]["explaining"] is None
    assert (await api.call("POST", "/rooms/r1/bag/items", h1, {"product_id": "mug"}))[1]["error"]["code"] == "archived"
    # the host replaces the whole list; removing is idempotent
    bag = await api.ok("PUT", "/rooms/r1/bag", h1, {"product_ids": ["gift-box", "tee"], "explaining": "tee"})
    assert ([i["product_id"] for i in bag["items"]], bag["explaining"]) == (["gift-box", "tee"], "tee")
    bag = await api.ok("DELETE", "/rooms/r1/bag/items/tee", h1)
    assert ([i["product_id"] for i in bag["items"]], bag["explaining"]) == (["gift-box"], None)
    assert (await api.ok("DELETE", "/rooms/r1/bag/items/tee", h1))["changed"] is False
    for c in (viewer, late):
        await c.close()


async def test_a_change_on_one_node_reaches_viewers_and_joiners_on_another(gateway_factory: Any, token: Any) -> None:
    a = await gateway_factory(node_id="node-a")
    b = await gateway_factory(node_id="node-b")
    h1 = token("h1", "host", ("r1",))
    async with aiohttp.ClientSession() as http:
        api_a = Api(http, a.url)
        await api_a.ok("POST", "/products", h1, TEE, status=201)
        await api_a.ok("POST", "/products", h1, {"id": "mug", "name": "Mug", "price": 900}, status=201)
        await api_a.ok("POST", "/rooms/r1/bag/items", h1, {"product_id": "tee"})
        on_b = await Client.connect(b.ws, "r1", token("v1"))  # B serves r1 from now on
        assert on_b.welcome["d"]["bag"]["v"] == 1
        await api_a.ok("POST", "/rooms/r1/bag/items", h1, {"product_id": "mug", "position": 0})
        await api_a.ok("PUT", "/rooms/r1/bag/explaining", h1, {"product_id": "mug"})
        e = await next_of(on_b, "bag.changed")
        assert e["d"]["v"] == 2
        e = await next_of(on_b, "bag.changed")
        assert (e["d"]["v"], e["d"]["explaining"]) == (3, "mug")
        joiner = await Client.connect(b.ws, "r1", token("v2"))
        bag = joiner.welcome["d"]["bag"]
        assert ([i["product_id"] for i in bag["items"]], bag["explaining"], bag["v"]) == (["mug", "tee"], "mug", 3)
        assert b.services.bags.loads == 1  # B read the list once, when it first served r1
        for c in (on_b, joiner):
            await c.close()


class Monitor:
    """Every command the Redis server runs that names ``needle``, from MONITOR (the server
    is shared with other tests: only this test's keys are counted)."""

    def __init__(self, url: str, needle: str) -> None:
        self.url = url
        self.client = aioredis.Redis.from_url(url)
        self.needle = needle
        self.seen: list[str] = []
        self.marks: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Monitor:
        ready = asyncio.Event()

        async def run() -> None:
            async with self.client.monitor() as m:
                ready.set()
                async for info in m.listen():
                    cmd = str(info.get("command", ""))
                    if "lc-monitor-mark" in cmd:
                        self.marks.add(cmd.split()[-1])
                    elif self.needle in cmd:
                        self.seen.append(cmd)

        self._task = asyncio.get_running_loop().create_task(run())
        await ready.wait()
        await self.mark()
        return self

    async def mark(self) -> None:
        """Wait until MONITOR has passed every command sent before this call."""
        tag = uuid.uuid4().hex
        probe = aioredis.Redis.from_url(self.url)
        try:
            await probe.echo(f"lc-monitor-mark {tag}")
        finally:
            await probe.aclose()
        await wait_until(lambda: tag in self.marks, what="MONITOR to catch up")

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
        await self.client.aclose()


async def test_a_welcome_into_a_served_room_reads_nothing_of_the_list(gateway_factory: Any, token: Any, redis_url: str) -> None:
    if not redis_url.startswith("redis://"):
        pytest.skip("MONITOR needs a TCP Redis")
    node = await gateway_factory()
    h1 = token("h1", "host", ("r1",))
    bag_key = node.gw.keys.room("r1", "bag")
    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        await api.ok("POST", "/products", h1, TEE, status=201)
        await api.ok("POST", "/rooms/r1/bag/items", h1, {"product_id": "tee"})
        async with Monitor(redis_url, bag_key) as mon:
            first = await Client.connect(node.ws, "r1", token("v1"))  # the node starts serving r1
            await mon.mark()
            assert len(mon.seen) == 1 and mon.seen[0].startswith("HGET "), mon.seen  # loaded once
            mon.seen.clear()
            others = [await Client.connect(node.ws, "r1", token(f"v{i}")) for i in range(2, 12)]
            await mon.mark()
            assert mon.seen == []  # ten welcomes, no command on the list
            assert all(c.welcome["d"]["bag"]["v"] == 1 for c in [first, *others])
            # a change made elsewhere: the copy follows the event, still no read per join
            await api.ok("PUT", "/rooms/r1/bag/explaining", h1, {"product_id": "tee"})
            await next_of(first, "bag.changed")
            await mon.mark()  # the change's own commands (its script) are seen before the count starts
            mon.seen.clear()
            more = [await Client.connect(node.ws, "r1", token(f"w{i}")) for i in range(5)]
            await mon.mark()
            assert mon.seen == []
            assert all(c.welcome["d"]["bag"]["explaining"] == "tee" for c in more)
        for c in [first, *others, *more]:
            await c.close()


async def test_the_host_curates_the_list_with_websocket_commands(api_node: Any) -> None:
    node, api, token = api_node
    h1 = token("h1", "host", ("r1",))
    await api.ok("POST", "/products", h1, TEE, status=201)
    await api.ok("POST", "/products", h1, {"id": "mug", "name": "Mug", "price": 900}, status=201)
    host = await Client.connect(node.ws, "r1", h1)
    viewer = await Client.connect(node.ws, "r1", token("v1"))
    ack = await host.request("bag.add", product_id="tee")
    assert ack["t"] == "ack" and (ack["d"]["v"], ack["d"]["changed"]) == (1, True), ack
    await host.request("bag.set", product_ids=["tee", "mug"], explaining="tee")
    ack = await host.request("bag.explain", product_id="mug")
    assert ack["d"]["explaining"] == "mug"
    ack = await host.request("bag.order", product_ids=["mug", "tee"])
    assert [i["product_id"] for i in ack["d"]["items"]] == ["mug", "tee"]
    ack = await host.request("bag.remove", product_id="tee")
    assert [i["product_id"] for i in ack["d"]["items"]] == ["mug"] and ack["d"]["v"] == 5
    assert [(await next_of(viewer, "bag.changed"))["d"]["v"] for _ in range(5)] == [1, 2, 3, 4, 5]
    # refusals are error frames with the reason
    assert (await viewer.request("bag.add", product_id="tee"))["d"]["code"] == "forbidden"
    assert (await host.request("bag.order", product_ids=["tee"]))["d"]["code"] == "bag_changed"
    assert (await host.request("bag.add", product_id="a{b}"))["d"]["code"] == "invalid"
    assert (await host.request("bag.explain", product_id="tee"))["d"]["code"] == "not_listed"
    assert (await host.request("bag.explain"))["d"]["code"] == "invalid"  # null clears; absent is a mistake
    assert (await host.request("bag.add", product_id="nope"))["d"]["code"] == "not_found"
    for c in (host, viewer):
        await c.close()


async def test_a_list_stored_without_its_broadcast_still_reaches_the_nodes(api_node: Any) -> None:
    """A process killed between storing a list and publishing it: viewers and node copies
    do not hear of it; a copy older than its age is read again, and the host's retry of the
    (now unchanged) request publishes the list again."""
    from livecommerce.bag import Bag, item_of

    node, api, token = api_node
    h1 = token("h1", "host", ("r1",))
    await api.ok("POST", "/products", h1, TEE, status=201)
    await api.ok("POST", "/products", h1, {"id": "mug", "name": "Mug", "price": 900}, status=201)
    await api.ok("POST", "/rooms/r1/bag/items", h1, {"product_id": "tee"})
    viewer = await Client.connect(node.ws, "r1", token("v1"))
    bags = node.services.bags
    assert viewer.welcome["d"]["bag"]["v"] == 1 and bags.loads == 1
    before = await bags.bags.get("r1")
    mug = await bags.products.product("mug")
    stored, _ = await bags.bags.put("r1", Bag((*before.items, item_of(mug)), "mug", 2), expected_v=1)  # no publish
    assert stored
    early = await Client.connect(node.ws, "r1", token("v2"))
    assert early.welcome["d"]["bag"]["v"] == 1  # the copy, as promised: no read per join
    bags.max_age_s = 0.0  # the copy's age has passed: the next second reads it again
    await bags.on_second()
    late = await Client.connect(node.ws, "r1", token("v3"))
    assert (late.welcome["d"]["bag"]["v"], late.welcome["d"]["bag"]["explaining"]) == (2, "mug")
    # the host retries: nothing changes, the list goes out again and the viewer catches up
    again = await api.ok("PUT", "/rooms/r1/bag/explaining", h1, {"product_id": "mug"})
    assert (again["changed"], again["v"]) == (False, 2)
    e = await next_of(viewer, "bag.changed")
    assert (e["d"]["v"], [i["product_id"] for i in e["d"]["items"]]) == (2, ["tee", "mug"])
    # a resubscribed channel may have lost events: the node reads the list again, once
    loads = bags.loads
    bags.on_resubscribed({node.gw.keys.room_channel("r1")})
    after = await Client.connect(node.ws, "r1", token("v4"))
    assert after.welcome["d"]["bag"]["v"] == 2 and bags.loads == loads + 1
    for c in (viewer, early, late, after):
        await c.close()


async def test_a_refused_stock_change_leaves_the_price_alone(api_node: Any) -> None:
    _, api, token = api_node
    h1 = token("h1", "host", ("r1",))
    await api.ok("POST", "/products", h1, TEE, status=201)
    got, data = await api.call("PATCH", "/products/tee/skus/red-M", h1, {"price": 1, "add_stock": -99})
    assert (got, data["error"]["code"]) == (409, "stock_out_of_range")
    sku = (await api.ok("GET", "/products/tee"))["skus"][0]
    assert (sku["price"], sku["stock"]) == (1999, 5)
