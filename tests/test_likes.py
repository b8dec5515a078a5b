"""Likes: per-node aggregation, one ``likes {total}`` per room per second, exact totals."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import websockets

from livecommerce.likes import LikeTally, PushGate
from tests.waiting import wait_until

CLIENTS = 50
RATE = 10_000  # likes per second over all clients
SECONDS = 2.0
PER_FRAME = 5


def test_tally_sums_per_room_and_hands_over_once() -> None:
    t = LikeTally()
    for _ in range(100):
        t.add("a", 3)
    t.add("b", 1)
    assert t.pending("a") == 300
    assert t.take() == {"a": 300, "b": 1}
    assert t.take() == {}
    t.restore({"a": 5})
    t.add("a", 1)
    assert t.take() == {"a": 6}
    with pytest.raises(ValueError):
        t.add("a", 0)


def test_push_gate_lets_a_total_through_only_when_it_changed() -> None:
    g = PushGate()
    assert g.changed("a", 10) and not g.changed("a", 10) and g.changed("a", 11)
    g.keep_only(["b"])
    assert g.changed("a", 11)  # forgotten: pushed again to new local viewers


class Liker:
    """One real WebSocket client sending ``like`` frames on a fixed schedule and recording
    every ``likes`` event it receives with its arrival time."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.acked = 0
        self.errors: list[dict[str, Any]] = []
        self.likes: list[tuple[float, int]] = []
        self.welcome: dict[str, Any] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            f = json.loads(raw)
            for e in f["items"] if f["t"] == "batch" else [f]:
                if e["t"] == "ack":
                    self.acked += 1
                elif e["t"] == "error":
                    self.errors.append(e)
                elif e["t"] == "likes":
                    self.likes.append((time.monotonic(), e["d"]["total"]))
                elif e["t"] == "welcome":
                    self.welcome = e

    async def send_likes(self, start: float, frames: int, interval: float) -> None:
        for i in range(frames):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing: frames on a fixed schedule
            await self.ws.send(json.dumps({"t": "like", "id": i, "d": {"count": PER_FRAME}}))


async def test_ten_thousand_likes_a_second_give_about_one_likes_event_per_second_with_the_exact_total(gateway_factory, token, redis, keys):
    nodes = [await gateway_factory(), await gateway_factory()]  # likes are aggregated per node
    room = "hot"
    likers = []
    for i in range(CLIENTS):
        ws = await websockets.connect(f"{nodes[i % 2].ws}?room={room}&token={token(f'fan{i}')}&format=json", max_size=None)
        likers.append(Liker(ws))
    frames = int(RATE * SECONDS / PER_FRAME / CLIENTS)  # per client
    interval = SECONDS / frames
    t0 = time.monotonic() + 0.1
    await asyncio.gather(*(c.send_likes(t0, frames, interval) for c in likers))
    send_s = time.monotonic() - t0
    sent = CLIENTS * frames * PER_FRAME
    # every like was accepted, and the counter is exact
    await wait_until(lambda: sum(c.acked for c in likers), until=lambda n: n >= CLIENTS * frames, what="every like frame acked")
    assert not [e for c in likers for e in c.errors]
    assert sum(c.acked for c in likers) == CLIENTS * frames
    await wait_until(lambda: [c.likes[-1][1] if c.likes else None for c in likers], until=lambda last: last == [sent] * CLIENTS,
                     what="the last flush and push: the exact total at every liker")
    observed_s = time.monotonic() - t0
    assert int(await redis.get(keys.room_likes(room))) == sent == RATE * SECONDS
    counts = []
    for c in likers:
        totals = [t for _, t in c.likes]
        counts.append(len(totals))
        assert totals and totals[-1] == sent, totals  # the exact total reaches every viewer
        assert totals == sorted(totals)
        gaps = [b - a for (a, _), (b, _) in zip(c.likes, c.likes[1:], strict=False)]
        assert all(g > 0.7 for g in gaps), gaps  # about once a second, never faster
        assert observed_s - 2.5 <= len(totals) <= observed_s + 1.5
    assert send_s < SECONDS * 1.5, f"the clients only managed {sent / send_s:,.0f} likes/s"
    print(f"\n{sent} likes from {CLIENTS} clients in {send_s:.2f}s ({sent / send_s:,.0f}/s); "
          f"likes events per client over {observed_s:.1f}s: min {min(counts)} max {max(counts)}")
    for c in likers:
        await c.ws.close()
        await c.reader


async def test_a_late_joiner_gets_the_likes_total_in_welcome(gateway_factory, token, redis, keys):
    node = await gateway_factory()
    await redis.set(keys.room_likes("r1"), 41)
    ws = await websockets.connect(f"{node.ws}?room=r1&token={token('v')}&format=json")
    c = Liker(ws)
    await ws.send(json.dumps({"t": "like", "id": 1, "d": {"count": 1}}))
    await wait_until(lambda: c.likes and c.likes[-1][1], until=lambda total: total == 42, timeout=4, what="likes 42 pushed")
    assert c.welcome["d"]["likes"] in (41, 42)
    assert c.likes[-1][1] == 42
    await ws.close()
    await c.reader
