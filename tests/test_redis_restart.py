"""A real Redis server restarted under a live gateway.

The gateway's pub/sub reader must notice the dead connection, reconnect with backoff and
resubscribe every room on its own; connected clients then get new events again, and a
client that reconnects with ``since=`` hears either ``recovered: false`` (the restarted
Redis lost the history) or the events the history holds, with seqs still rising (the seq
counter is re-seeded from the clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis as sync_redis
import websockets

from tests.waiting import wait_until, wait_until_sync
from tests.wsclient import Client

ROOM = "restart"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` (no persistence) that can be stopped and started again
    on the same port."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = self.proc

        def answers() -> bool:
            try:
                return bool(sync_redis.Redis(port=self.port, socket_connect_timeout=0.2).ping())
            except sync_redis.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {proc.returncode}") from None
                return False

        wait_until_sync(answers, timeout=timeout, what=f"redis-server on {self.port} to answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def announce(http: aiohttp.ClientSession, base: str, ops: str, text: str) -> int | None:
    """Publish a ``notice``; its seq, or None while Redis is not back (HTTP 503)."""
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        r = await http.post(f"{base}/api/v1/rooms/{ROOM}/announce", json={"text": text},
                            headers={"Authorization": f"Bearer {ops}"}, timeout=aiohttp.ClientTimeout(total=5))
        if r.status == 200:
            return int((await r.json())["seq"])
        assert r.status == 503, (r.status, await r.text())
    return None


async def next_notice(c: Client, wait_s: float) -> dict:
    while True:
        e = await c.next_event(wait_s)
        if e["t"] == "notice":
            return e


async def test_gateway_resubscribes_after_a_redis_restart_and_clients_recover(
    private_redis: RedisServer, gateway_factory, token, tmp_path: Path
) -> None:
    node = await gateway_factory(redis_url=private_redis.url, database_url=f"sqlite+aiosqlite:///{tmp_path}/r.db")
    broker = node.gw.broker
    ops = token("ops1", "ops")
    stay = await Client.connect(node.ws, ROOM, token("stay"), fmt="json")
    leaver = await Client.connect(node.ws, ROOM, token("leaver"))
    async with aiohttp.ClientSession() as http:
        before = [await announce(http, node.url, ops, f"before-{i}") for i in range(3)]
        assert all(s is not None for s in before)
        assert [e["d"]["text"] for e in [await next_notice(stay, 5) for _ in range(3)]] == ["before-0", "before-1", "before-2"]
        last_seen = [await next_notice(leaver, 5) for _ in range(3)][-1]["seq"]
        await leaver.close()
        # concurrent work fills the gateway's command pool: those connections die with Redis
        crowd = await asyncio.gather(*(Client.connect(node.ws, ROOM, token(f"crowd{i}")) for i in range(8)))
        await asyncio.gather(*(announce(http, node.url, ops, f"crowd-{i}") for i in range(8)))
        for c in crowd:
            await c.close()
        assert sorted([(await next_notice(stay, 5))["d"]["text"] for _ in range(8)]) == [f"crowd-{i}" for i in range(8)]

        reconnects = broker.reconnects
        private_redis.stop()
        await wait_until(lambda: not broker.connected.is_set(), what="the pub/sub reader to notice Redis is down")
        down = await announce(http, node.url, ops, "while-down")
        assert down is None, "publishing without Redis must answer 503, not pretend"
        r = await http.get(node.url + "/readyz")
        assert r.status == 503
        # a viewer arriving now is told so at once (error frame, then a close), not left hanging
        async with asyncio.timeout(15):
            ws = await websockets.connect(f"{node.ws}?room={ROOM}&format=json&token={token('late')}")
            frames = []
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    frames.append(json.loads(await ws.recv()))
        assert frames and frames[-1]["t"] == "error" and frames[-1]["d"]["code"] == "unavailable", frames
        assert ws.close_code == 1011
        private_redis.start()

        # the gateway reconnects and resubscribes without help; events flow again
        await wait_until(lambda: broker.reconnects, until=lambda n: n > reconnects, timeout=20, what="the pub/sub reader to resubscribe")
        assert broker.reconnects > reconnects, "the pub/sub reader never resubscribed"
        sent = 0

        async def heard() -> dict | None:  # publish (503 until Redis is back), then listen
            nonlocal sent
            seq = await announce(http, node.url, ops, f"after-{sent}")
            sent += 1
            if seq is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    return await next_notice(stay, 1.0)
            return None

        got = await wait_until(heard, timeout=20, interval=0.2, what="an announcement after the restart, heard by the client that stayed")
        assert got is not None and got["d"]["text"].startswith("after-"), got
        assert got["seq"] > last_seen, "seqs must keep rising after a restart that lost the counter"
        after_seq = got["seq"]

        # clients coming back with since= from before the restart are served (no stale pooled
        # connection answers them "unavailable"); the history is gone
        back_crowd = await asyncio.gather(*(Client.connect(node.ws, ROOM, token(f"crowd{i}"), since=last_seen) for i in range(8)))
        for again in back_crowd:
            assert again.welcome["d"]["recovered"] is False
            await again.close()
        back = await Client.connect(node.ws, ROOM, token("leaver"), since=last_seen)
        assert back.welcome["d"]["seq"] >= after_seq
        if back.welcome["d"]["recovered"]:
            replay = await back.next_frame(5)
            assert replay["t"] == "batch"
            seqs = [e["seq"] for e in replay["items"] if "seq" in e]
            assert seqs == sorted(seqs) and all(s > last_seen for s in seqs)
        # and live events reach it too, as they reach the client that never left
        seq = await announce(http, node.url, ops, "final")
        assert seq is not None and seq > after_seq
        for c in (back, stay):
            e = await next_notice(c, 5)
            while e["d"]["text"] != "final":
                e = await next_notice(c, 5)
            assert e["seq"] == seq
        # /readyz went back to 200
        r = await http.get(node.url + "/readyz")
        assert r.status == 200, await r.text()
        await back.close()
    await stay.close()
