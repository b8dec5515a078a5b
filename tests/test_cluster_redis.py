"""Redis Cluster as a first-class backend: the broker (sharded pub/sub, the publish script
with SPUBLISH inside), history, presence, rooms, flash sales, checkout, the Redis Streams log
and the orders worker on a local 3-master cluster; then failovers of a 3+3 cluster (a master
killed with SIGKILL, and a graceful CLUSTER FAILOVER) with gateways that keep running."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import aiohttp
import pytest
import redis as sync_redis

from livecommerce.broker import split_room_message
from livecommerce.broker_redis import RedisBroker
from livecommerce.devcluster.topology import RedisClusterNodes
from livecommerce.keys import Keys
from livecommerce.log_redis import RedisLog
from livecommerce.redis_conn import connect
from tests.waiting import wait_until
from tests.wsclient import Client
from workers.orders import OrdersWorker

pytestmark = pytest.mark.cluster


def now_ms() -> int:
    return int(time.time() * 1000)


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def shard_subscribers(client: Any, channel: str) -> int:
    """How many connections the owner of ``channel``'s slot has SSUBSCRIBEd to it."""
    got = await client.pubsub_shardnumsub(channel, target_nodes=client.get_node_from_key(channel))
    return sum(int(n) for _, n in got)


async def shard_subscribed(client: Any, channels: list[str]) -> None:
    """Until every channel's owner counts a subscriber: the broker sends SSUBSCRIBE without
    waiting for the answer."""
    async def counts() -> list[int]:
        return [await shard_subscribers(client, ch) for ch in channels]

    await wait_until(counts, until=lambda n: all(n), what=f"a shard subscriber of each of {channels}")


async def next_of(c: Client, t: str, within: float = 5.0) -> dict[str, Any]:
    while True:
        e = await c.next_event(within)
        if e["t"] == t:
            return e


async def drain_notices(c: Client, quiet_s: float = 0.6) -> list[dict[str, Any]]:
    """Every ``notice`` until nothing came for ``quiet_s``."""
    out = []
    with contextlib.suppress(TimeoutError):
        while True:
            e = await c.next_event(quiet_s)
            if e["t"] == "notice":
                out.append(e)
    return out


def rooms_on_every_shard(client: Any, keys: Keys, n_shards: int) -> list[str]:
    """One room id per master, by the owner of the room channel's slot."""
    owners: dict[str, str] = {}
    i = 0
    while len(owners) < n_shards:
        room = f"r{i}"
        owners.setdefault(client.get_node_from_key(keys.room_channel(room)).name, room)
        i += 1
    return list(owners.values())


# ---------------------------------------------------------------- broker
async def test_publish_script_spublishes_in_the_rooms_slot_and_history_recovers(cluster_redis, keys) -> None:
    await cluster_redis.initialize()
    room = "tea"
    slots = {cluster_redis.keyslot(k) for k in
             (keys.room_seq(room), keys.room_hist(room), keys.room_channel(room), keys.room_online(room))}
    assert len(slots) == 1, "a room's seq, history, channel and presence must share one slot"
    pub, a, b = (RedisBroker(cluster_redis, keys) for _ in range(3))
    assert a._sharded
    got_a: list[tuple[int, dict[str, Any]]] = []
    got_b: list[tuple[int, dict[str, Any]]] = []
    a.set_handler(lambda ch, data: got_a.append(split_room_message(data)))
    b.set_handler(lambda ch, data: got_b.append(split_room_message(data)))
    await a.subscribe(keys.room_channel(room))
    await b.subscribe(keys.room_channel(room))
    seqs = [await pub.publish_room(room, {"t": "notice", "room": room, "ts": 1, "d": {"i": i}}, now_ms=now_ms())
            for i in range(20)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20
    await wait_until(lambda: (len(got_a), len(got_b)), until=lambda n: n == (20, 20), what="20 deliveries to each subscriber")
    for got in (got_a, got_b):
        assert [s for s, _ in got] == seqs and [e["d"]["i"] for _, e in got] == list(range(20))
    hist = await pub.history(room, seqs[9])
    assert hist.recovered and [e["seq"] for e in hist.events] == seqs[10:] and hist.top == seqs[-1]
    for br in (pub, a, b):
        await br.close()


async def test_a_node_reads_rooms_on_every_shard_at_once(cluster_redis, keys) -> None:
    """One reader per shard: a room on a busy shard never waits for an idle shard's read."""
    await cluster_redis.initialize()
    rooms = rooms_on_every_shard(cluster_redis, keys, 3)
    sub, pub = RedisBroker(cluster_redis, keys), RedisBroker(cluster_redis, keys)
    latency: list[float] = []

    def handler(ch: str, data: bytes) -> None:
        _, env = split_room_message(data)
        latency.append(time.time() * 1000 - env["ts"])

    sub.set_handler(handler)
    for room in rooms:
        await sub.subscribe(keys.room_channel(room))
    await shard_subscribed(cluster_redis, [keys.room_channel(room) for room in rooms])
    for _ in range(30):  # only the first room speaks: the other shards' readers stay idle
        await pub.publish_room(rooms[0], {"t": "notice", "room": rooms[0], "ts": time.time() * 1000, "d": {}}, now_ms=now_ms())
        await asyncio.sleep(0.03)  # pacing: the idle shards' reads time out in between
    await wait_until(lambda: len(latency), until=lambda n: n == 30, what="30 deliveries")
    assert sorted(latency)[-2] < 250, f"deliveries waited on idle shards: {sorted(latency)[-5:]} ms"
    await sub.close()
    await pub.close()


# ---------------------------------------------------------------- the gateway on the cluster
async def test_a_show_runs_across_two_gateways_on_the_cluster(gateway_factory, token, redis_cluster_url) -> None:
    a = await gateway_factory(redis_url=redis_cluster_url, comment_rate=100.0, comment_burst=100)
    b = await gateway_factory(redis_url=redis_cluster_url)
    room = f"show{uuid.uuid4().hex[:6]}"
    host_tok = token("h", "host", (room,))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{a.url}/api/v1/rooms", json={"id": room, "title": "Tea"}, headers=auth(host_tok)) as r:
            assert r.status == 201, await r.text()
        host = await Client.connect(a.ws, room, host_tok)
        viewers = [await Client.connect((a, b)[i % 2].ws, room, token(f"v{i}"), fmt=("json", "msgpack")[i % 2]) for i in range(4)]

        async def online() -> int:  # presence: each node writes its count once a second
            async with http.get(f"{b.url}/api/v1/rooms/{room}/online") as r:
                return int((await r.json())["online"])

        assert await wait_until(online, until=lambda n: n == 5, what="5 online across both gateways") == 5
        assert (await host.request("room.live"))["d"]["state"] == "live"
        for i in range(10):
            await host.request("comment", text=f"c{i}")
        for v in viewers:
            assert (await next_of(v, "room.live"))["d"]["title"] == "Tea"
            comments = [e for e in await v.events(10) if e["t"] == "comment"]
            assert [e["d"]["text"] for e in comments] == [f"c{i}" for i in range(10)]
        # the rooms tick (a script per room on a cluster) adds comments: all of them before the end
        # (one popped by a tick still in flight when the room ends would not count)
        await wait_until(lambda: a.services.rooms.rooms.get(room), until=lambda meta: int(meta["comments"]) == 10,
                         what="the 10 comments in the room's stored statistics")
        end = await host.request("room.end")
        assert end["t"] == "ack" and end["d"]["summary"]["comments"] == 10, end
        # a viewer comes back to the other gateway with since=: exactly what it missed
        v0 = viewers[0]
        last = (await next_of(v0, "room.ended"))["seq"]
        await v0.close()
        await a.gw.publish(room, "notice", {"text": "after"})
        back = await Client.connect(b.ws, room, token("v0"), since=last)
        assert back.welcome["d"]["recovered"] is True
        assert [e["d"]["text"] for e in await back.events(1)] == ["after"]


async def test_flash_sale_checkout_and_the_orders_worker_on_the_cluster(gateway_factory, token, redis_cluster_url,
                                                                        cluster_redis) -> None:
    a = await gateway_factory(redis_url=redis_cluster_url, log_partitions=4)
    b = await gateway_factory(redis_url=redis_cluster_url, log_partitions=4)
    ops = token("ops1", "ops")
    sid = f"s{uuid.uuid4().hex[:8]}"
    room = "shop"
    async with aiohttp.ClientSession() as http:
        body = {"id": sid, "room": room, "product_id": "p1", "price": 500, "stock": 5, "per_user_limit": 2,
                "starts_ms": now_ms() - 1000, "duration_s": 600}
        async with http.post(a.url + "/api/v1/campaigns", json=body, headers=auth(ops)) as r:
            assert r.status == 201, await r.text()
        buyers = [await Client.connect((a, b)[i % 2].ws, room, token(f"b{i}")) for i in range(6)]
        results = await asyncio.gather(*(c.request("buy", sale_id=sid, qty=1, request_id=f"rq{i}") for i, c in enumerate(buyers)))
        reserved = [r for r in results if r["t"] == "order.reserved"]
        assert len(reserved) == 5 and sum(r["t"] == "error" and r["d"]["code"] == "sold_out" for r in results) == 1
        again = await buyers[0].request("buy", sale_id=sid, qty=1, request_id="rq0")
        if results[0]["t"] == "order.reserved":
            assert again["d"]["duplicate"] is True and again["d"]["order_id"] == results[0]["d"]["order_id"]
        paid = reserved[0]["d"]["order_id"]
        owner = next(i for i, r in enumerate(results) if r.get("d", {}).get("order_id") == paid)
        async with http.post(f"{b.url}/api/v1/orders/{paid}/pay", json={}, headers=auth(token(f"b{owner}"))) as r:
            assert (await r.json())["outcome"] == "paid"
        cancelled = reserved[1]["d"]["order_id"]
        async with http.post(f"{a.url}/api/v1/orders/{cancelled}/cancel", headers=auth(ops)) as r:
            assert (await r.json())["outcome"] == "released"
        worker = OrdersWorker(a.settings, redis=cluster_redis)
        assert isinstance(worker.log, RedisLog) and worker.log.partitions == 4
        try:
            assert await worker.drain() >= 7  # 5 reserved (+ the duplicate's), 1 paid, 1 cancelled
            assert await worker.drain() == 0
        finally:
            await worker.close()
        async with http.get(f"{b.url}/api/v1/sales/{sid}/stats", headers=auth(ops)) as r:
            st = await r.json()
        assert st["conserved"] and (st["stock"], st["remaining"], st["reserved"], st["paid"]) == (5, 1, 3, 1)
        assert st["sql"]["units"] == {"reserved": 3, "paid": 1, "cancelled": 1}, st
    # the log's partitions are spread over the shards
    streams = [Keys(a.settings.key_prefix).stream(f"orders:{p}") for p in range(4)]
    assert len({cluster_redis.get_node_from_key(s).name for s in streams}) >= 2


# ---------------------------------------------------------------- failover
async def announce_loop(http: aiohttp.ClientSession, url: str, tok: str, room: str, stop: asyncio.Event,
                        published: list[tuple[int, str]], every_s: float = 0.03) -> None:
    """Announce ``n<i>`` until stopped; keep (seq, text) of those the gateway acknowledged."""
    i = 0
    while not stop.is_set():
        text = f"n{i}"
        i += 1
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.post(f"{url}/api/v1/rooms/{room}/announce", json={"text": text}, headers=auth(tok),
                                 timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status == 200:
                    published.append(((await r.json())["seq"], text))
        await asyncio.sleep(every_s)  # pacing


def replicas_caught_up(ha: RedisClusterNodes, port: int) -> bool:
    with sync_redis.Redis(port=port, decode_responses=True) as m:
        info = m.info("replication")
    offset = int(info["master_repl_offset"])
    return all(int(v["offset"]) >= offset for k, v in info.items() if k.startswith("slave") and isinstance(v, dict))


async def test_a_killed_master_fails_over_and_viewers_miss_nothing(ha_cluster: RedisClusterNodes, gateway_factory, token) -> None:
    a = await gateway_factory(redis_url=ha_cluster.url)
    b = await gateway_factory(redis_url=ha_cluster.url)
    room = "live1"
    keys = Keys(a.settings.key_prefix)
    ops = token("ops1", "ops")
    viewers = [await Client.connect((a, b)[i % 2].ws, room, token(f"v{i}"), fmt="json") for i in range(4)]
    published: list[tuple[int, str]] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        loop = asyncio.create_task(announce_loop(http, a.url, ops, room, stop, published))
        await wait_until(lambda: len(published), until=lambda n: n >= 10, what="10 announcements")
        victim = ha_cluster.master_of(keys.room_channel(room))
        # pause, let the replica catch up (replication is asynchronous), then kill -9 the master
        stop.set()
        await loop
        await wait_until(lambda: replicas_caught_up(ha_cluster, victim), what="replica caught up")
        before = len(published)
        leaver = viewers.pop()
        left_at = published[-1][0]
        await leaver.close()
        stop.clear()
        loop = asyncio.create_task(announce_loop(http, a.url, ops, room, stop, published))
        ha_cluster.kill9(victim)
        promoted = await asyncio.to_thread(ha_cluster.wait_owner_change, keys.room_channel(room), victim)
        await wait_until(lambda: len(published), until=lambda n: n >= before + 20, timeout=30, what="20 announcements after the failover")
        stop.set()
        await loop
    assert promoted != victim
    assert a.gw.broker.reconnects >= 1 and b.gw.broker.reconnects >= 1, "the gateways never resubscribed"
    want = [t for _, t in published]
    for v in viewers:  # still connected all along: every event exactly once, in order
        got = await drain_notices(v, 1.5)
        texts = [e["d"]["text"] for e in got]
        assert texts == want, f"viewer missed or repeated events across the failover: {sorted(set(want) ^ set(texts))[:10]}"
        assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    # the one who left before the kill comes back, to the other gateway, with since=
    back = await Client.connect(b.ws, room, token("v3"), since=left_at, fmt="json")
    assert back.welcome["d"]["recovered"] is True
    missed = [e["d"]["text"] for e in await drain_notices(back, 1.0)]
    assert missed == [t for s, t in published if s > left_at]


async def test_a_graceful_failover_reroutes_a_subscriber_that_never_publishes(ha_cluster: RedisClusterNodes, keys) -> None:
    """Redis 7.0 leaves a demoted master's shard subscribers subscribed (silently, on a
    replica): the broker's topology watch moves them to the new owner."""
    sub_client, pub_client = connect(ha_cluster.url), connect(ha_cluster.url)
    sub, pub = RedisBroker(sub_client, keys, topology_check_s=0.5), RedisBroker(pub_client, keys)
    got: list[int] = []
    sub.set_handler(lambda ch, data: got.append(split_room_message(data)[0]))
    room = "quiet"
    await sub.subscribe(keys.room_channel(room))
    await shard_subscribed(sub_client, [keys.room_channel(room)])
    old = ha_cluster.master_of(keys.room_channel(room))
    replica = next(n["port"] for n in ha_cluster.nodes()
                   if n["role"] == "replica" and n["master"] == next(m["id"] for m in ha_cluster.nodes() if m["port"] == old))
    with sync_redis.Redis(port=replica) as r:
        r.execute_command("CLUSTER", "FAILOVER")
    await asyncio.to_thread(ha_cluster.wait_owner_change, keys.room_channel(room), old)
    seqs = []

    async def heard() -> bool:  # publish until the subscriber hears the last one
        if seqs and seqs[-1] in got:
            return True
        with contextlib.suppress(Exception):
            seqs.append(await pub.publish_room(room, {"t": "notice", "room": room, "ts": 1, "d": {}}, now_ms=now_ms()))
        return False

    await wait_until(heard, interval=0.1, what="the subscriber to hear a notice after the failover (not stay on the demoted master)")
    assert seqs and seqs[-1] in got, "the subscriber stayed on the demoted master"
    assert sub.reconnects >= 1
    for br, c in ((sub, sub_client), (pub, pub_client)):
        await br.close()
        await c.aclose()
