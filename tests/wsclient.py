"""A small test client over the real ``websockets`` library: flattens batches into events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
import websockets


class Client:
    def __init__(self, ws: Any, fmt: str) -> None:
        self.ws = ws
        self.fmt = fmt
        self.buf: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}
        self._ids = 0

    @classmethod
    async def connect(cls, base: str, room: str, token: str, *, fmt: str = "msgpack", since: int | None = None, **kw: Any) -> Client:
        url = f"{base}?room={room}&token={token}&format={fmt}"
        if since is not None:
            url += f"&since={since}"
        ws = await websockets.connect(url, max_size=None, **kw)
        c = cls(ws, fmt)
        first = await c.next_frame(5)
        assert first["t"] == "welcome", first
        c.welcome = first
        return c

    def decode(self, raw: bytes | str) -> dict[str, Any]:
        if isinstance(raw, bytes):
            return msgpack.unpackb(raw, raw=False)
        return json.loads(raw)

    async def next_frame(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.decode(await asyncio.wait_for(self.ws.recv(), timeout))

    async def next_event(self, timeout: float = 5.0, *, skip: tuple[str, ...] = ("online", "likes")) -> dict[str, Any]:
        while True:
            if not self.buf:
                f = await self.next_frame(timeout)
                self.buf.extend(f["items"] if f["t"] == "batch" else [f])
            e = self.buf.pop(0)
            if e["t"] not in skip:
                return e

    async def events(self, n: int, timeout: float = 5.0, **kw: Any) -> list[dict[str, Any]]:
        return [await self.next_event(timeout, **kw) for _ in range(n)]

    async def send(self, t: str, **d: Any) -> Any:
        self._ids += 1
        frame = {"t": t, "id": self._ids, "d": d}
        await self.ws.send(msgpack.packb(frame) if self.fmt == "msgpack" else json.dumps(frame))
        return self._ids

    async def request(self, t: str, timeout: float = 5.0, **d: Any) -> dict[str, Any]:
        """Send a command and wait for the reply with its id (room events are kept)."""
        cid = await self.send(t, **d)
        kept = []
        try:
            while True:
                e = await self.next_event(timeout, skip=())
                if e.get("id") == cid and e["t"] not in ("comment",):
                    return e
                kept.append(e)
        finally:
            self.buf[:0] = kept

    async def close(self) -> None:
        await self.ws.close()


async def next_of(c: Client, t: str, within: float = 5.0) -> dict[str, Any]:
    """The next room event of type ``t`` at ``c`` (others are skipped)."""
    while True:
        e = await c.next_event(within)
        if e["t"] == t:
            return e


async def nothing_of(c: Client, t: str, wait: float) -> None:
    """Assert that no event of type ``t`` reaches ``c`` for ``wait`` seconds."""
    try:
        while True:
            e = await c.next_event(wait)
            assert e["t"] != t, e
    except TimeoutError:
        return
