"""The hub on the in-memory twins: presence through the port, gap repair from the history."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from gateway.hub import Hub
from gateway.metrics import Metrics
from livecommerce.broker import MemoryBroker
from livecommerce.presence import MemoryPresence
from tests.waiting import wait_until


class FakeConn:
    """What the hub reads of a connection while it only counts and delivers."""

    def __init__(self, room: str, user: str) -> None:
        self.room, self.user, self.fmt, self.skip_seq = room, user, "json", 0


def node(settings, keys, shared_broker: dict, shared_presence: dict, name: str) -> Hub:
    s = settings.replace(node_id=name)
    return Hub(s, MemoryBroker(keys, shared=shared_broker), MemoryPresence(shared_presence), Metrics())


def shared_broker() -> dict[str, Any]:
    return {"subs": defaultdict(set), "hist": defaultdict(list), "seq": {}}


async def connect(hub: Hub, room: str, user: str) -> None:
    conn: Any = FakeConn(room, user)
    hub.attach(conn, await hub.join(conn))


async def test_online_counts_add_up_across_nodes_through_the_presence_port(settings, keys):
    broker, presence = shared_broker(), {}
    a, b = node(settings, keys, broker, presence, "a"), node(settings, keys, broker, presence, "b")
    await connect(a, "r", "u1")
    await connect(a, "r", "u2")
    await connect(b, "r", "u3")
    await a.sync_online()
    await b.sync_online()
    await a.sync_online()
    assert a.rooms["r"].online == b.rooms["r"].online == 3
    assert a.rooms["r"].pending[-1]["t"] == "online" and a.rooms["r"].pending[-1]["d"] == {"count": 3}
    assert await b.online("r") == 3
    n = len(a.rooms["r"].pending)
    await a.sync_online()
    assert len(a.rooms["r"].pending) == n  # unchanged: nothing pushed


async def test_a_seq_gap_is_filled_from_the_history_in_order(settings, keys):
    hub = node(settings, keys, shared_broker(), {}, "a")
    seen: list[int] = []
    hub.observe(("*",), lambda env: seen.append(env["d"]["i"]))
    await connect(hub, "r", "u1")
    publisher = MemoryBroker(keys, shared=hub.broker._shared)  # type: ignore[attr-defined]
    channel = keys.room_channel("r")

    async def publish(i: int) -> None:
        await publisher.publish_room("r", {"t": "comment", "room": "r", "ts": 1, "d": {"i": i}}, now_ms=1000)

    await publish(1)
    await wait_until(lambda: list(seen), until=lambda s: s == [1], what="event 1")
    await hub.broker.unsubscribe(channel)  # pub/sub loses 2 and 3
    await publish(2)
    await publish(3)
    await hub.broker.subscribe(channel)
    await publish(4)
    await wait_until(lambda: list(seen), until=lambda s: s == [1, 2, 3, 4], what="2 and 3 read back, then 4")
    assert not hub.gaps.waiting


async def test_a_resubscribed_channel_reads_back_what_it_missed(settings, keys):
    hub = node(settings, keys, shared_broker(), {}, "a")
    seen: list[int] = []
    hub.observe(("*",), lambda env: seen.append(env["d"]["i"]))
    await connect(hub, "r", "u1")
    publisher = MemoryBroker(keys, shared=hub.broker._shared)  # type: ignore[attr-defined]
    for i in (1, 2):
        if i == 2:
            await hub.broker.unsubscribe(keys.room_channel("r"))
        await publisher.publish_room("r", {"t": "comment", "room": "r", "ts": 1, "d": {"i": i}}, now_ms=1000)
        await asyncio.sleep(0)  # the twin delivers on the next loop turn
    await hub.broker.subscribe(keys.room_channel("r"))
    hub.gaps.on_resubscribed({keys.room_channel("r")})
    await wait_until(lambda: list(seen), until=lambda s: s == [1, 2], what="event 2 read back")
    await hub.stop()
