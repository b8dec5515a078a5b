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


class Recorder:
    """A transport that keeps what is written to it (frames arrive whole: one write, one frame)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


class WritingConn(FakeConn):
    """A connection the hub writes to: a real ``Conn``'s write-side fields and a recorder."""

    def __init__(self, room: str, user: str) -> None:
        super().__init__(room, user)
        self.transport = Recorder()
        self.closed, self.behind_since, self.frames_out, self.drops = False, 0.0, 0, 0

    def write(self, frame: bytes, **_: Any) -> int:  # the slow path (not taken: never behind)
        self.transport.write(frame)
        return 1

    def texts(self) -> list[str]:
        return [f[2:].decode() for f in self.transport.frames]  # frames under 126 bytes: 2-byte header


async def writing_room(hub: Hub, n: int) -> list[WritingConn]:
    conns = [WritingConn("r", f"u{i}") for i in range(n)]
    for c in conns:
        hub.attach(c, await hub.join(c))  # type: ignore[arg-type]
    return conns


def note(i: int) -> dict[str, Any]:
    return {"t": "notice", "room": "r", "ts": 1, "d": {"i": i}}


async def test_a_big_room_is_written_in_slices_and_its_frames_never_overtake_each_other(settings, keys, monkeypatch):
    import gateway.hub as hub_module

    monkeypatch.setattr(hub_module, "WRITE_SLICE", 3)
    hub = node(settings, keys, shared_broker(), {}, "a")
    conns = await writing_room(hub, 10)
    room = hub.rooms["r"]
    hub.send_local("r", note(1))
    hub.flush(room)
    assert [len(c.transport.frames) for c in conns].count(1) == 3  # the first slice only
    assert room.writing is not None
    # a critical frame before the loop's next turn: the batch in progress is finished first
    hub.send_local("r", {"t": "sale.started", "room": "r", "ts": 1, "d": {"i": 2}}, critical=True)
    assert sum(len(c.transport.frames) for c in conns) == 10 + 3  # the batch whole, the critical frame's first slice
    await wait_until(lambda: room.writing is None, what="the critical frame's slices written")
    for c in conns:
        assert [('"i":1' in t, '"i":2' in t) for t in c.texts()] == [(True, False), (False, True)], c.user
    # a batch left to itself is finished slice by slice by the loop
    hub.send_local("r", note(3))
    hub.flush(room)
    await wait_until(lambda: room.writing is None, what="the slices written")
    assert all(len(c.transport.frames) == 3 and '"i":3' in c.texts()[-1] for c in conns)
    # a drain finishes what is in progress at once
    hub.send_local("r", note(4))
    hub.flush(room)
    hub.finish_writes()
    assert room.writing is None and all(len(c.transport.frames) == 4 for c in conns)


async def test_a_quiet_room_flushes_at_once_and_a_busy_one_at_most_once_a_tick(settings, keys):
    hub = Hub(settings.replace(node_id="a", tick_ms=10_000, flush="adaptive"), MemoryBroker(keys, shared=shared_broker()),
              MemoryPresence({}), Metrics())
    [conn] = await writing_room(hub, 1)
    room = hub.rooms["r"]
    hub.send_local("r", note(1))
    await wait_until(lambda: len(conn.transport.frames), until=lambda n: n == 1, what="the quiet room's event at once")
    hub.send_local("r", note(2))
    hub.send_local("r", note(3))
    handle = room.flush_at
    assert isinstance(handle, asyncio.TimerHandle)  # the busy room waits for its next tick, both events in one batch
    assert abs(handle.when() - (room.last_flush + 10.0)) < 0.01
    assert len(conn.transport.frames) == 1
    handle.cancel()
    hub._flush_due(room)
    assert len(conn.transport.frames) == 2 and '"i":2' in conn.texts()[1] and '"i":3' in conn.texts()[1]


async def test_the_fixed_tick_mode_leaves_every_flush_to_the_tick(settings, keys):
    hub = Hub(settings.replace(node_id="a", flush="tick"), MemoryBroker(keys, shared=shared_broker()), MemoryPresence({}), Metrics())
    [conn] = await writing_room(hub, 1)
    hub.send_local("r", note(1))
    await asyncio.sleep(0)
    assert hub.rooms["r"].flush_at is None and conn.transport.frames == [] and hub.rooms["r"].pending
