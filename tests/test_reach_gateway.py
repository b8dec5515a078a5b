"""Follower reach end to end on two real gateway nodes: follow over HTTP, the host goes live on
one node, the reach worker fans out, a follower connected to the *other* node gets
``host.live`` pushed, an offline follower finds it in the welcome's unread count and in the
inbox; schedules over HTTP, a subscriber reminded at the start, the feed's upcoming shows;
every refusal a 4xx with a reason."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from livecommerce import reach_sql
from livecommerce.broker_redis import RedisBroker
from livecommerce.keys import Keys
from livecommerce.notify import Notifier
from livecommerce.reach_redis import RedisReach
from livecommerce.schema import fan_members
from tests.test_refunds import World, bearer, http  # noqa: F401  (fixture)
from tests.waiting import wait_until
from tests.wsclient import Client, next_of
from workers.profiles import drain as profiles_drain
from workers.reach import ReachWorker, Sweeper


def reach_worker(w: World) -> tuple[ReachWorker, RedisBroker]:
    keys = Keys(w.node.settings.key_prefix)
    broker = RedisBroker(w.redis, keys)
    return ReachWorker(w.store, RedisReach(w.redis, keys), Notifier(w.redis, broker, keys)), broker


async def online(node: Any, user: str) -> None:
    await wait_until(lambda: node.gw.presence.user_nodes([user]), until=lambda got: bool(got.get(user)),
                     what=f"{user} in presence")


async def test_a_follower_on_the_other_node_gets_host_live_and_an_offline_one_finds_it_on_connect(
        gateway_factory: Any, token: Any, redis: Any, http: Any) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http)
    other = await gateway_factory()
    worker, broker = reach_worker(w)
    try:
        host = token("h1", "host", ("show",))
        await w.room("show", "h1")
        await w.room("lobby", "h9")
        for u in ("f1", "f2", "f3"):
            await w.call("POST", "/api/v1/hosts/h1/follow", token(u), status=202)
        await w.call("POST", "/api/v1/hosts/h1/follow", token("x1"), status=202)
        await w.call("DELETE", "/api/v1/hosts/h1/follow", token("x1"), status=202)  # unfollowed: no notice
        await profiles_drain(w.log, w.profiles, fetch_timeout_ms=50)
        c1 = await Client.connect(other.ws, "lobby", token("f1"), fmt="json")  # the other node
        c2 = await Client.connect(w.node.ws, "lobby", token("f2"))  # this node, msgpack
        cx = await Client.connect(other.ws, "lobby", token("x1"), fmt="json")
        assert "notifications" not in c1.welcome["d"]  # the welcome reads nothing: a count > 0 follows it
        for u, node in (("f1", other), ("f2", w.node), ("x1", other)):
            await online(node, u)
        live = await w.call("POST", "/api/v1/rooms/show/live", host)
        assert live["state"] == "live"
        assert await worker.drain(w.log, fetch_timeout_ms=50) == 1
        eid = f"host.live:show:{live['live_ms']}"
        for c in (c1, c2):
            e = await next_of(c, "host.live")
            assert e["d"] == {"id": eid, "host": "h1", "room": "show", "title": "show", "start_ms": live["live_ms"]}
            assert "room" not in e  # a private frame, not a room event
        assert await reach_sql.count_rows(w.store, eid) == (3, 3)
        # going live again (a repeated press) appends the same event: nobody is told twice
        await w.call("POST", "/api/v1/rooms/show/live", host)
        await worker.drain(w.log, fetch_timeout_ms=50)
        assert await reach_sql.count_rows(w.store, eid) == (3, 3) and worker.written == 3
        await c1.request("ping")  # the frames before the ping's answer hold no second host.live
        assert not [e for e in c1.buf if e["t"] == "host.live"]
        await cx.request("ping")
        assert not [e for e in cx.buf if e["t"] == "host.live"]
        # f3 was offline: the welcome counts it, the inbox lists it, marking it read clears it
        c3 = await Client.connect(other.ws, "lobby", token("f3"), fmt="json")
        assert (await next_of(c3, "notifications"))["d"] == {"unread": 1}
        box = await w.call("GET", "/api/v1/me/notifications", token("f3"))
        assert box["unread"] == 1 and [(i["id"], i["kind"], i["room"], i["read"]) for i in box["items"]] == [
            (eid, "host.live", "show", False)]
        assert await w.call("POST", "/api/v1/me/notifications/read", token("f3"), {"ids": [eid]}) == {"marked": 1, "unread": 0}
        await c3.close()
        c3 = await Client.connect(w.node.ws, "lobby", token("f3"), fmt="json")
        await c3.request("ping")  # nothing unread: no notifications frame before the ping's answer
        assert not [e for e in c3.buf if e["t"] == "notifications"]
        box = await w.call("GET", "/api/v1/me/notifications?unread=1", token("f3"))
        assert box == {"user": "f3", "unread": 0, "items": []}
        for c in (c1, c2, c3, cx):
            await c.close()
    finally:
        await broker.close()
        await w.close()


async def test_a_subscriber_is_reminded_at_the_start_and_the_feed_lists_the_schedule(
        gateway_factory: Any, token: Any, redis: Any, http: Any) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http)
    worker, broker = reach_worker(w)
    try:
        host = token("h1", "host", ("show",))
        await w.room("lobby", "h9")
        now = w.node.gw.now_ms()
        s = await w.call("POST", "/api/v1/hosts/h1/schedule", host,
                         {"title": "Spring tea", "start_ms": now + 120_000, "products": ["p1", "p2"], "room": "show"}, status=201)
        assert (s["state"], s["products"], s["room"], s["subscribers"]) == ("scheduled", ["p1", "p2"], "show", 0)
        await w.call("POST", "/api/v1/hosts/h1/follow", token("v1"), status=202)
        await profiles_drain(w.log, w.profiles, fetch_timeout_ms=50)
        assert (await w.call("POST", f"/api/v1/schedules/{s['id']}/subscribe", token("v1")))["changed"] is True
        assert (await w.call("POST", f"/api/v1/schedules/{s['id']}/subscribe", token("v1")))["changed"] is False
        await w.call("POST", f"/api/v1/schedules/{s['id']}/subscribe", token("v2"))
        mine = await w.call("GET", "/api/v1/hosts/h1/schedule", token("v1"))
        assert [(x["id"], x["subscribed"], x["subscribers"]) for x in mine["schedules"]] == [(s["id"], True, 2)]
        public = await http.get(w.node.url + "/api/v1/hosts/h1/schedule")
        assert (await public.json())["schedules"][0]["subscribed"] is False
        feed = await w.call("GET", "/api/v1/feed", token("v1"))
        assert [(x["id"], x["following"]) for x in feed["upcoming"]] == [(s["id"], True)]
        c1 = await Client.connect(w.node.ws, "lobby", token("v1"), fmt="json")
        await online(w.node, "v1")
        sweeper = Sweeper(w.store, RedisReach(w.redis, Keys(w.node.settings.key_prefix)), w.log, worker="t")
        assert await sweeper.sweep(now) == 0
        assert await sweeper.sweep(now + 120_000) == 1
        assert await worker.drain(w.log, fetch_timeout_ms=50) == 1
        e = await next_of(c1, "schedule.reminder")
        assert (e["d"]["schedule"], e["d"]["title"], e["d"]["room"]) == (s["id"], "Spring tea", "show")
        box = await w.call("GET", "/api/v1/me/notifications", token("v2"))
        assert [i["kind"] for i in box["items"]] == ["schedule.reminder"]
        got = await w.call("GET", f"/api/v1/schedules/{s['id']}", token("v2"))
        assert got["state"] == "reminded" and got["subscribed"] is True
        await c1.close()
    finally:
        await broker.close()
        await w.close()


async def test_unauthorized_and_bad_input_get_a_4xx_with_a_reason(gateway_factory: Any, token: Any, redis: Any,
                                                                 http: Any) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http)
    try:
        host, viewer = token("h1", "host", ("show",)), token("v1")
        now = w.node.gw.now_ms()
        good = {"title": "t", "start_ms": now + 60_000}

        async def status(method: str, path: str, tok: str | None, body: Any = None) -> tuple[int, str]:
            headers = bearer(tok) if tok else {}
            r = await http.request(method, w.node.url + path, json=body, headers=headers)
            data = await r.json()
            assert isinstance(data.get("error"), dict) or "code" in data or "message" in data, data
            return r.status, str(data)

        cases: list[tuple[str, str, str | None, Any, int]] = [
            ("GET", "/api/v1/me/notifications", None, None, 401),
            ("GET", "/api/v1/me/notifications?limit=0", viewer, None, 400),
            ("GET", "/api/v1/me/notifications?before_ms=x", viewer, None, 400),
            ("POST", "/api/v1/me/notifications/read", None, {"all": True}, 401),
            ("POST", "/api/v1/me/notifications/read", viewer, {"ids": []}, 400),
            ("POST", "/api/v1/me/notifications/read", viewer, {"all": False}, 400),
            ("POST", "/api/v1/hosts/h1/schedule", None, good, 401),
            ("POST", "/api/v1/hosts/h1/schedule", viewer, good, 403),
            ("POST", "/api/v1/hosts/h1/schedule", token("h2", "host", ("show",)), good, 403),
            ("POST", "/api/v1/hosts/h1/schedule", host, {**good, "room": "not-mine"}, 403),
            ("POST", "/api/v1/hosts/h1/schedule", host, {"title": "t", "start_ms": now - 3_600_000}, 400),
            ("POST", "/api/v1/hosts/h1/schedule", host, {"title": "", "start_ms": now + 1}, 400),
            ("POST", "/api/v1/hosts/h1/schedule", host, {"title": "t"}, 400),
            ("POST", "/api/v1/hosts/h1/schedule", host, {**good, "products": ["a b"]}, 400),
            ("POST", "/api/v1/hosts/bad%20host/schedule", host, good, 400),
            ("GET", "/api/v1/schedules/nope", None, None, 404),
            ("POST", "/api/v1/schedules/nope/subscribe", viewer, None, 404),
            ("POST", "/api/v1/schedules/nope/subscribe", None, None, 401),
        ]
        for method, path, tok, body, want in cases:
            got, text = await status(method, path, tok, body)
            assert got == want, (method, path, body, got, text)
        s = await w.call("POST", "/api/v1/hosts/h1/schedule", host, good, status=201)
        assert (await status("DELETE", f"/api/v1/schedules/{s['id']}", viewer))[0] == 403
        assert (await w.call("DELETE", f"/api/v1/schedules/{s['id']}", token("ops1", "ops")))["state"] == "cancelled"
        got, text = await status("DELETE", f"/api/v1/schedules/{s['id']}", host)
        assert got == 409 and "schedule_cancelled" in text
        got, text = await status("POST", f"/api/v1/schedules/{s['id']}/subscribe", viewer)
        assert got == 400 and "cancelled" in text
        async with aiohttp.ClientSession() as raw:
            r = await raw.post(w.node.url + "/api/v1/me/notifications/read", data=b"{not json", headers=bearer(viewer))
            assert r.status == 400
    finally:
        await w.close()


async def test_erasing_a_user_deletes_their_inbox_subscriptions_and_cursor(gateway_factory: Any, token: Any, redis: Any,
                                                                           http: Any) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http)
    worker, broker = reach_worker(w)
    try:
        host = token("h1", "host", ("show",))
        await w.room("show", "h1")
        await w.call("POST", "/api/v1/hosts/h1/follow", token("zed"), status=202)
        await profiles_drain(w.log, w.profiles, fetch_timeout_ms=50)
        live = await w.call("POST", "/api/v1/rooms/show/live", host)
        await worker.drain(w.log, fetch_timeout_ms=50)
        s = await w.call("POST", "/api/v1/hosts/h1/schedule", host, {"title": "t", "start_ms": live["live_ms"] + 60_000}, status=201)
        await w.call("POST", f"/api/v1/schedules/{s['id']}/subscribe", token("zed"))
        eid = f"host.live:show:{live['live_ms']}"
        assert (await reach_sql.fanout_state(w.store, eid) or {}).get("after_user") == "zed"
        assert (await w.call("GET", "/api/v1/me/notifications", token("zed")))["unread"] == 1
        gone = await w.call("DELETE", "/api/v1/me/data", token("zed"))
        assert gone["rows"]["notifications"] == 1 and gone["rows"]["schedule_subs"] == 1
        assert await reach_sql.inbox(w.store, "zed") == ([], 0)
        assert not await reach_sql.subscribed(w.store, "zed", [s["id"]])
        assert (await reach_sql.fanout_state(w.store, eid) or {}).get("after_user") == ""
        assert await RedisReach(w.redis, Keys(w.node.settings.key_prefix)).unread("zed") == 0
    finally:
        await broker.close()
        await w.close()


@pytest.mark.kafka
async def test_host_live_travels_through_kafka_too(gateway_factory: Any, token: Any, redis: Any, http: Any,  # noqa: F811
                                                   kafka_bootstrap: str) -> None:
    w = await World.make(gateway_factory, token, redis, http, kafka_bootstrap=kafka_bootstrap, kafka_idempotent=False,
                         kafka_session_timeout_ms=2000, kafka_partitions=2)
    worker, broker = reach_worker(w)
    try:
        async with w.store.write() as tx:
            await tx.conn.execute(fan_members.insert(), [
                {"host_id": "h1", "user_id": f"k{i}", "following": True, "member": False, "intimacy": 0, "updated_ms": 0}
                for i in range(25)])
        await w.room("show", "h1")
        c = await Client.connect(w.node.ws, "lobby", token("k3"), fmt="json")
        await online(w.node, "k3")
        live = await w.call("POST", "/api/v1/rooms/show/live", token("h1", "host", ("show",)))
        eid = f"host.live:show:{live['live_ms']}"
        await wait_until(lambda: worker.drain(w.log, fetch_timeout_ms=1500), until=lambda _: worker.written == 25,
                         timeout=30, what="the fan-out through Kafka")
        assert await reach_sql.count_rows(w.store, eid) == (25, 25)
        assert (await next_of(c, "host.live"))["d"]["id"] == eid
        await c.close()
    finally:
        await broker.close()
        await w.close()
