"""Rooms: the life-cycle table, the show summary, host-only actions, products and pins."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from livecommerce.errors import BadFrame, Conflict
from livecommerce.pins import new_product
from livecommerce.rooms import new_room, step, summarize
from tests.waiting import wait_until
from tests.wsclient import Client, next_of, nothing_of


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


# ---------------------------------------------------------------- pure rules
def test_room_life_cycle_table() -> None:
    assert step("created", "go_live") == ("live", True)
    assert step("live", "end") == ("ended", True)
    assert step("ended", "go_live") == ("live", True)  # the next show in the same room
    assert step("live", "go_live") == ("live", False)
    assert step("ended", "end") == ("ended", False)
    with pytest.raises(Conflict):
        step("created", "end")


def test_summary_is_computed_from_the_stored_fields() -> None:
    meta = {"state": "ended", "live_ms": "1000", "ended_ms": "61500", "peak_online": "7", "comments": "12", "likes_base": "100", "likes_end": "350"}
    s = summarize(meta)
    assert (s.duration_s, s.peak_online, s.comments, s.likes) == (60.5, 7, 12, 250)
    with pytest.raises(Conflict):
        summarize({**meta, "state": "live"})


def test_room_and_product_validation() -> None:
    assert new_room({"id": "r-1", "host": "x"}, creator="h", creator_role="host", now_ms=1).host == "h"
    assert new_room({"id": "r-1", "host": "x"}, creator="o", creator_role="ops", now_ms=1).host == "x"
    for body in ({"id": "bad room"}, {"id": ""}, {"id": "r", "title": 5}):
        with pytest.raises(BadFrame):
            new_room(body, creator="h", creator_role="host", now_ms=1)
    assert new_product({"name": " Tea ", "price": 1999}, default_id="p9").to_dict() == {"id": "p9", "name": "Tea", "price": 1999, "image": ""}
    for body in ({"name": "x", "price": -1}, {"name": "", "price": 1}, {"name": "x", "price": 1.5}):
        with pytest.raises(BadFrame):
            new_product(body, default_id="p")


# ---------------------------------------------------------------- over HTTP and WebSocket
async def test_only_the_rooms_host_or_ops_create_rooms(gateway_factory, token):
    node = await gateway_factory()
    url = f"{node.url}/api/v1/rooms"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"id": "r1"}, headers=auth(token("v"))) as r:
            assert r.status == 403
        async with http.post(url, json={"id": "r1"}, headers=auth(token("h", "host", ("other",)))) as r:
            assert r.status == 403
        async with http.post(url, json={"id": "r1", "title": "Tea night"}, headers=auth(token("h", "host", ("r1",)))) as r:
            assert r.status == 201
            assert await r.json() == {"id": "r1", "title": "Tea night", "host": "h", "state": "created", "created_ms": (await r.json())["created_ms"]}
        async with http.post(url, json={"id": "r1"}, headers=auth(token("ops", "ops"))) as r:
            assert r.status == 409
        async with http.post(url, json={"id": "r2", "host": "h7"}, headers=auth(token("ops", "ops"))) as r:
            assert r.status == 201 and (await r.json())["host"] == "h7"
        async with http.post(url, json={"id": "r3"}) as r:
            assert r.status == 401
        async with http.get(f"{url}/nosuch") as r:
            assert r.status == 404


async def test_a_show_goes_live_and_ends_with_its_summary_for_every_viewer(gateway_factory, token, redis, keys):
    a, b = await gateway_factory(), await gateway_factory()
    room = "show1"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{a.url}/api/v1/rooms", json={"id": room, "title": "Spring tea"}, headers=auth(token("h", "host", (room,)))) as r:
            assert r.status == 201
        host = await Client.connect(a.ws, room, token("h", "host", (room,)))
        viewers = [await Client.connect(n.ws, room, token(f"v{i}")) for i, n in enumerate((a, a, b))]
        assert viewers[0].welcome["d"]["show"]["state"] == "created"
        await wait_until(lambda: a.gw.hub.online(room), until=lambda n: n == 4, what="the 4 online (2 nodes) in Redis")
        live = await host.request("room.live")
        went_live = time.monotonic()
        assert live["t"] == "ack" and live["d"]["state"] == "live"
        for v in viewers:
            e = await next_of(v, "room.live")
            assert e["d"]["title"] == "Spring tea" and "seq" in e
        # a second press is a no-op: no second room.live
        assert (await host.request("room.live"))["d"]["state"] == "live"
        for i, v in enumerate(viewers):
            await v.request("comment", text=f"hello {i}")
            await v.request("like", count=10 + i)
        await host.request("comment", text="welcome all")

        async def counted() -> tuple[int, int]:  # each node's once-a-second tick adds its share
            meta = await a.services.rooms.rooms.get(room)
            return int(meta.get("comments") or 0), int(await redis.get(keys.room_likes(room)) or 0)

        await wait_until(counted, until=lambda got: got == (4, 33), what="the comments and likes of both nodes in Redis")
        await asyncio.sleep(max(0.0, went_live + 1.3 - time.monotonic()))  # the show lasts 1.3 s at least
        end = await host.request("room.end")
        assert end["t"] == "ack", end
        for v in viewers:
            e = await next_of(v, "room.ended")
            d = e["d"]
            assert d["comments"] == 4 and d["likes"] == 33
            assert d["peak_online"] == 4 and d["duration_s"] >= 1.3
            assert d["ended_ms"] > d["live_ms"]
        await nothing_of(viewers[0], "room.live", 0.2)
        again = await host.request("room.end")  # no-op: same summary, no second event
        assert again["d"]["summary"] == end["d"]["summary"]
        await nothing_of(viewers[1], "room.ended", 0.3)
        async with http.get(f"{b.url}/api/v1/rooms/{room}") as r:
            stored = await r.json()
        assert stored["state"] == "ended" and stored["summary"] == end["d"]["summary"]
        # the next show in the same room starts from zero
        await host.request("room.live")
        await host.request("comment", text="round two")  # counted before the ack; room.end adds it
        second = await host.request("room.end")
        assert second["d"]["summary"]["likes"] == 0 and second["d"]["summary"]["comments"] == 1


async def test_host_actions_are_refused_to_viewers_and_to_hosts_of_other_rooms(gateway_factory, token):
    node = await gateway_factory()
    room = "r1"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{node.url}/api/v1/rooms", json={"id": room}, headers=auth(token("ops", "ops"))) as r:
            assert r.status == 201
        viewer = await Client.connect(node.ws, room, token("v"))
        stranger = await Client.connect(node.ws, room, token("h2", "host", ("elsewhere",)))
        for c in (viewer, stranger):
            for t in ("room.live", "room.end"):
                reply = await c.request(t)
                assert reply["t"] == "error" and reply["d"]["code"] == "forbidden", reply
            assert (await c.request("pin", product_id="p1"))["d"]["code"] == "forbidden"
        for tok in (token("v"), token("h2", "host", ("elsewhere",))):
            for path in ("live", "end", "pin"):
                async with http.post(f"{node.url}/api/v1/rooms/{room}/{path}", json={"product_id": "p1"}, headers=auth(tok)) as r:
                    assert r.status == 403, (path, await r.text())
        ops = await Client.connect(node.ws, room, token("ops", "ops"))
        early = await ops.request("room.end")
        assert early["t"] == "error" and early["d"]["code"] == "conflict"  # never went live
        async with http.post(f"{node.url}/api/v1/rooms/{room}/live", headers=auth(token("h", "host", (room,)))) as r:
            assert r.status == 200 and (await r.json())["state"] == "live"
        assert (await next_of(viewer, "room.live"))["d"]["by"] == "h"
        async with http.post(f"{node.url}/api/v1/rooms/unknown/live", headers=auth(token("ops", "ops"))) as r:
            assert r.status == 404
        async with http.post(f"{node.url}/api/v1/rooms/{room}/end", headers=auth(token("ops", "ops"))) as r:
            assert r.status == 200 and (await r.json())["state"] == "ended"
        assert (await next_of(viewer, "room.ended"))["d"]["by"] == "ops"


async def test_pinned_product_reaches_viewers_and_late_joiners_with_the_active_sale(gateway_factory, token):
    node = await gateway_factory()
    room = "r1"
    host_tok = token("h", "host", (room,))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{node.url}/api/v1/products", json={"id": "tea", "name": "Tea set", "price": 1999}, headers=auth(host_tok)) as r:
            assert r.status == 201
        async with http.post(f"{node.url}/api/v1/products", json={"name": "x", "price": 1}, headers=auth(token("v"))) as r:
            assert r.status == 403
        host = await Client.connect(node.ws, room, host_tok)
        viewer = await Client.connect(node.ws, room, token("v"))
        assert viewer.welcome["d"]["pin"] is None
        reply = await host.request("pin", product_id="tea")
        assert reply["t"] == "ack", reply
        e = await next_of(viewer, "product.pinned")
        assert (e["d"]["name"], e["d"]["price"], e["d"]["sale"], e["d"]["stock_left"]) == ("Tea set", 1999, None, None)
        late = await Client.connect(node.ws, room, token("late"))
        assert late.welcome["d"]["pin"]["product_id"] == "tea"
        assert (await host.request("pin", product_id="nosuch"))["d"]["code"] == "not_found"

        # the flash-sale code plugs in through this hook
        async def sale_for_product(room_id: str, product_id: str) -> dict[str, Any] | None:
            return {"sale_id": "s1", "price": 999, "remaining": 42} if product_id == "tea" else None

        node.services.rooms.sale_for_product = sale_for_product
        async with http.post(f"{node.url}/api/v1/rooms/{room}/pin", json={"product_id": "tea"}, headers=auth(host_tok)) as r:
            assert r.status == 200
        e = await next_of(viewer, "product.pinned")
        assert e["d"]["sale"]["sale_id"] == "s1" and e["d"]["stock_left"] == 42
        late2 = await Client.connect(node.ws, room, token("late2"))
        assert late2.welcome["d"]["pin"]["stock_left"] == 42
        async with http.delete(f"{node.url}/api/v1/rooms/{room}/pin", headers=auth(host_tok)) as r:
            assert (await r.json())["unpinned"] is True
        await next_of(viewer, "product.unpinned")
        late3 = await Client.connect(node.ws, room, token("late3"))
        assert late3.welcome["d"]["pin"] is None
