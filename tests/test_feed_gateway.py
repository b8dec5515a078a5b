"""``GET /api/v1/feed`` on real gateway nodes: every live room once, no host twice on a
page, an ended room never listed (on the node that ended it and on another one, at once),
rankings that follow the live signals, and an experiment switching a viewer to the
personalised ranker fed by the real profiles worker."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from gateway.openapi import document
from livecommerce.experiments import Experiment, Variant
from livecommerce.keys import Keys
from livecommerce.log_open import open_log
from livecommerce.store_sql import SqlStore
from tests.fixtures_gateway import GatewayFactory
from tests.test_openapi import validate
from tests.waiting import wait_until
from tests.wsclient import Client
from workers.growth import GrowthWorker
from workers.growth import drain as growth_drain
from workers.profiles import ProfilesWorker
from workers.profiles import drain as profiles_drain

ROOMS = {"fa": ("ha", "tea"), "fb": ("hb", "beauty"), "fc": ("hc", "tea"), "fd": ("ha", "toys"), "fe": ("he", "food")}


DOC = document()


async def _call(s: aiohttp.ClientSession, method: str, url: str, token: str, **kw: Any) -> tuple[int, Any]:
    """Call and check the answer against its OpenAPI schema (the documented status)."""
    async with s.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kw) as r:
        data = await r.json()
        template = next(p for p in DOC["paths"] if re.fullmatch(re.sub(r"{\w+}", "[^/]+", p), r.url.path))
        resp = DOC["paths"][template][method.lower()]["responses"][str(r.status)]
        assert not validate(data, resp["content"]["application/json"]["schema"], DOC), (template, data)
        return r.status, data


async def test_the_feed_lists_live_rooms_with_diversity_and_never_an_ended_one(
    gateway_factory: GatewayFactory, token: Callable[..., str], redis: aioredis.Redis, keys: Keys
) -> None:
    n1, n2 = await gateway_factory(), await gateway_factory()
    ops = token("boss", "ops")
    viewers: list[Client] = []
    async with aiohttp.ClientSession() as s:
        for room, (host, cat) in ROOMS.items():
            assert (await _call(s, "POST", f"{n1.url}/api/v1/rooms", ops, json={"id": room, "title": room.upper(), "host": host}))[0] == 201
            st, _ = await _call(s, "PUT", f"{n1.url}/api/v1/rooms/{room}/category", token(host, "host", (room,)), json={"category": cat})
            assert st == 200
            if room != "fe":  # fe stays "created": never listed
                assert (await _call(s, "POST", f"{n1.url}/api/v1/rooms/{room}/live", ops))[0] == 200
        st, feed = await _call(s, "GET", f"{n2.url}/api/v1/feed?limit=10", token("v0"))
        assert st == 200 and feed["ranker"] == "popularity" and feed["cold_start"] is True
        page1 = [i["room"] for i in feed["items"]]
        assert feed["total_live"] == 4 and feed["pages"] == 2 and len(page1) == 3  # host ha has two rooms
        assert len({i["host"] for i in feed["items"]}) == 3 and all(i["why"] for i in feed["items"])
        st, feed2 = await _call(s, "GET", f"{n2.url}/api/v1/feed?limit=10&page=2", token("v0"))
        assert sorted(page1 + [i["room"] for i in feed2["items"]]) == ["fa", "fb", "fc", "fd"]
        assert {i["category"] for i in feed["items"] + feed2["items"]} == {"tea", "beauty", "toys"}

        # three viewers in fc: within seconds it tops the popularity feed on both nodes
        viewers = [await Client.connect(n1.ws, "fc", token(f"w{i}"), fmt="json") for i in range(3)]

        async def fc_first() -> bool:
            got = [(await _call(s, "GET", f"{n.url}/api/v1/feed", token("v0")))[1] for n in (n1, n2)]
            return all(g["items"][0]["room"] == "fc" and g["items"][0]["online"] == 3 for g in got)

        await wait_until(fc_first, timeout=30, interval=0.2, what="fc on top of the feed with 3 online, on both nodes")

        # fc ends on n1: neither node lists it, at once
        assert (await _call(s, "POST", f"{n1.url}/api/v1/rooms/fc/end", ops))[0] == 200
        for n in (n1, n2):
            st, after = await _call(s, "GET", f"{n.url}/api/v1/feed", token("v0"))
            assert "fc" not in [i["room"] for i in after["items"]] and after["total_live"] == 3
        # ops see the candidates with their signals; viewers may not pick a ranker
        st, rooms = await _call(s, "GET", f"{n2.url}/api/v1/feed/rooms", ops)
        assert st == 200 and sorted(r["room"] for r in rooms["rooms"]) == ["fa", "fb", "fd"]
        assert (await _call(s, "GET", f"{n2.url}/api/v1/feed?ranker=personalised", token("v0")))[0] == 403
        assert (await _call(s, "GET", f"{n2.url}/api/v1/feed?limit=0", token("v0")))[0] == 400
    for c in viewers:
        await c.close()


async def test_an_experiment_switches_a_viewer_to_the_personalised_feed(
    gateway_factory: GatewayFactory, token: Callable[..., str], redis: aioredis.Redis, keys: Keys
) -> None:
    node = await gateway_factory()
    ops = token("boss", "ops")
    body = {"id": "feed-rank", "salt": "feed-salt", "variants": [
        {"name": "control", "weight": 1, "flags": {"feed.ranker": "popularity"}},
        {"name": "personal", "weight": 1, "flags": {"feed.ranker": "personalised"}}]}
    exp = Experiment("feed-rank", "feed-salt", (Variant("control", 1, {}), Variant("personal", 1, {})))
    fan = next(u for u in (f"fan{i}" for i in range(100)) if exp.assign(u) == "personal")
    other = next(u for u in (f"pop{i}" for i in range(100)) if exp.assign(u) == "control")
    async with aiohttp.ClientSession() as s:
        assert (await _call(s, "POST", f"{node.url}/api/v1/experiments", ops, json=body))[0] == 201
        for room, (host, cat) in list(ROOMS.items())[:3]:
            await _call(s, "POST", f"{node.url}/api/v1/rooms", ops, json={"id": room, "host": host})
            await _call(s, "PUT", f"{node.url}/api/v1/rooms/{room}/category", ops, json={"category": cat})
            await _call(s, "POST", f"{node.url}/api/v1/rooms/{room}/live", ops)
        crowd = [await Client.connect(node.ws, "fa", token(f"w{i}"), fmt="json") for i in range(2)]
        assert (await _call(s, "POST", f"{node.url}/api/v1/hosts/hb/fanclub", token(fan)))[0] == 202  # follows and joins
        durable = open_log(node.settings, redis)
        store = SqlStore(node.settings.database_url)
        try:
            await profiles_drain(durable, ProfilesWorker(store, redis, keys, secret=node.settings.secret), fetch_timeout_ms=100)

            async def fa_first() -> Any:
                _, f = await _call(s, "GET", f"{node.url}/api/v1/feed", token(other))
                return f if f["items"][0]["room"] == "fa" else None

            pop = await wait_until(fa_first, timeout=30, interval=0.2, what="fa on top of the popularity feed")
            assert pop["ranker"] == "popularity" and pop["experiment"] == {"id": "feed-rank", "arm": "control"}
            st, mine = await _call(s, "GET", f"{node.url}/api/v1/feed", token(fan))
            assert mine["ranker"] == "personalised" and mine["experiment"] == {"id": "feed-rank", "arm": "personal"}
            assert mine["cold_start"] is False
            assert mine["items"][0]["room"] == "fb" and mine["items"][0]["reasons"][:2] == ["followed", "fan_club"]
            assert mine["items"][0]["why"] == "You follow hb"
            c = await Client.connect(node.ws, "fb", token(fan), fmt="json")
            assert c.welcome["d"]["flags"]["feed.ranker"] == "personalised" and c.welcome["d"]["experiments"] == {"feed-rank": "personal"}
            await c.close()
            # every viewer shown a flag (the feed's readers, and the crowd's welcome) is exposed once
            seen = [fan, other, "w0", "w1"]
            worker = GrowthWorker(store, redis, keys)
            await wait_until(lambda: _drained(durable, worker, len(seen)), timeout=10, interval=0.2, what="the growth worker applied every exposure")
            st, res = await _call(s, "GET", f"{node.url}/api/v1/experiments/feed-rank/results", ops)
            want = {"control": 0, "personal": 0}
            for u in seen:
                want[exp.assign(u)] += 1
            assert st == 200 and {a["arm"]: a["exposed"] for a in res["arms"]} == want
        finally:
            await store.close()
            await durable.close()
            for cl in crowd:
                await cl.close()


async def _drained(durable: Any, worker: GrowthWorker, want: int) -> bool:
    await growth_drain(durable, worker, fetch_timeout_ms=100)
    return worker.applied >= want
