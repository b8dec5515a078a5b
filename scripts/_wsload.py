"""Light WebSocket load clients shared by the benchmarks (``bench_fanout``, ``bench_conns``).

The load generator must not be the bottleneck, so the clients are raw asyncio protocols:
one ``data_received`` callback parses the (unmasked) server frames in place, with no task,
no queue and no per-frame await. Client frames (pongs, the Socket.IO connect packet) are
masked with a zero key, which RFC 6455 allows.

Client kinds (same room semantics, same payload dict ``d`` carrying ``bs`` step, ``bi``
index, ``bt`` publish time):

* ``lc``: livecommerce ``/ws?room=&token=`` (msgpack); ready on ``welcome``; counts the
  ``notice`` items inside ``batch`` frames (and single ``notice`` frames).
* ``lcj``: the same with ``format=json`` (text frames, ``json.loads``).
* ``nchan``: Nchan's WebSocket subscriber ``/sub?id=ROOM``; each message is one text frame
  whose body is what the publisher POSTed (a JSON envelope with ``d``).
* ``relay``: the minimal relay's ``/ws?room=`` (msgpack envelope, one frame per message).
* ``sio``: Socket.IO over the engine.io WebSocket transport (``42["notice",{...}]`` text
  frames); answers engine.io pings.

Latency is kept per step in a histogram of 0.1 ms buckets up to 10 s, per process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import time
from typing import Any

import msgpack

HIST_RES = 10_000  # buckets per second: 0.1 ms
HIST_CAP = 100_000  # 10 s; the last bucket holds everything slower

_unpackb = msgpack.unpackb
_json_loads = json.loads
_now = time.time


def raise_nofile(want: int | None = None) -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (or ``want``); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else min(max(want, soft), hard)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class StepStats:
    __slots__ = ("count", "first", "hist", "last")

    def __init__(self) -> None:
        self.count = 0
        self.hist = [0] * (HIST_CAP + 1)
        self.first = 0.0
        self.last = 0.0

    def export(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "first": self.first,
            "last": self.last,
            "hist": {i: n for i, n in enumerate(self.hist) if n},
        }


class Totals:
    """Per process counters; ``steps`` maps step id to its stats."""

    def __init__(self) -> None:
        self.steps: dict[int, StepStats] = {}
        self.cur: StepStats | None = None  # where counting clients add (set by "step")
        self.marker = b"\x00never\x00"  # the current step's marker, see step_marker()
        self.frames = 0
        self.items = 0
        self.ready = 0
        self.failed = 0
        self.closed = 0
        self.other: dict[str, int] = {}

    def step(self, s: int) -> StepStats:
        st = self.steps.get(s)
        if st is None:
            st = self.steps[s] = StepStats()
        return st


def _mask0(payload: bytes, opcode: int) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


SIO_CONNECT = _mask0(b"40", 0x1)

SIO_PONG = _mask0(b"3", 0x1)


class WsClient(asyncio.Protocol):
    """One WebSocket client. ``kind`` picks the handshake and the frame decoder."""

    __slots__ = ("buf", "full", "host", "kind", "path", "ready", "tot", "transport", "upgraded")

    def __init__(self, kind: str, host: str, path: str, tot: Totals, *, full: bool = True) -> None:
        self.kind = kind
        self.full = full
        self.host = host
        self.path = path
        self.tot = tot
        self.buf = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    # ---- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16))
        transport.write(  # type: ignore[attr-defined]
            b"GET " + self.path.encode() + b" HTTP/1.1\r\nHost: " + self.host.encode()
            + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(False)
        else:
            self.tot.closed += 1
        self.transport = None

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(True)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # ---- receiving
    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.tot.other["bad_status:" + buf[:12].decode(errors="replace")] = 1
                self.buf = b""
                if self.transport is not None:
                    self.transport.close()
                return
            self.upgraded = True
            buf = buf[end + 4 :]
            if self.kind == "relay" or self.kind == "nchan":
                self._set_ready()
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b1 = buf[pos + 1] & 0x7F
            if b1 < 126:
                hdr = 2
            elif b1 == 126:
                if n - pos < 4:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                hdr = 4
            else:
                if n - pos < 10:
                    break
                b1 = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            end = pos + hdr + b1
            if end > n:
                break
            op = buf[pos] & 0x0F
            payload = buf[pos + hdr : end]
            pos = end
            if op == 2 or op == 1:
                self.on_frame(payload)
            elif op == 9:  # ping
                if self.transport is not None:
                    self.transport.write(_mask0(payload, 0xA))
            elif op == 8:  # close
                if self.transport is not None:
                    self.transport.close()
        self.buf = buf[pos:] if pos < n else b""

    def on_frame(self, payload: bytes) -> None:
        tot = self.tot
        tot.frames += 1
        if not self.full and self.upgraded and self.ready.done():
            # counting client: a C-level scan for the current step's marker (it opens the
            # text of every message of the step), no decoding
            n = payload.count(tot.marker)
            if n:
                tot.items += n
                st = tot.cur
                if st is not None:
                    st.count += n
                    st.last = _now()
                return
            if self.kind != "sio":
                return
        if self.kind == "sio":
            if payload[:2] == b"42":
                ev = json.loads(payload[2:])
                self.record(ev[1])
            elif payload == b"2":
                if self.transport is not None:
                    self.transport.write(SIO_PONG)
            elif payload[:1] == b"0":
                if self.transport is not None:
                    self.transport.write(SIO_CONNECT)
            elif payload[:2] == b"40":
                self._set_ready()
            return
        obj = _unpackb(payload) if self.kind == "lc" or self.kind == "relay" else _json_loads(payload)
        t = obj.get("t")
        if t == "batch":
            now = _now()
            for e in obj["items"]:
                if e.get("t") == "notice":
                    self._rec(e["d"], now)
                else:
                    tot.other[e.get("t", "?")] = tot.other.get(e.get("t", "?"), 0) + 1
        elif t == "notice":
            self.record(obj["d"])
        elif t == "welcome":
            self._set_ready()
        elif t == "error":
            k = "error:" + str((obj.get("d") or {}).get("code"))
            tot.other[k] = tot.other.get(k, 0) + 1
        else:
            tot.other[str(t)] = tot.other.get(str(t), 0) + 1

    def record(self, d: dict[str, Any]) -> None:
        self._rec(d, _now())

    def _rec(self, d: dict[str, Any], now: float) -> None:
        s = d.get("bs")
        if s is None:
            return
        tot = self.tot
        tot.items += 1
        st = tot.steps.get(s)
        if st is None:
            st = tot.step(s)
            st.first = now
        st.count += 1
        st.last = now
        i = int((now - d["bt"]) * HIST_RES)
        if i > HIST_CAP:
            i = HIST_CAP
        elif i < 0:
            i = 0
        st.hist[i] += 1


def client_path(kind: str, room: str, token: str | None) -> str:
    if kind == "lc":
        return f"/ws?room={room}&token={token}"
    if kind == "lcj":
        return f"/ws?room={room}&format=json&token={token}"
    if kind == "nchan":
        return f"/sub?id={room}"
    if kind == "relay":
        return f"/ws?room={room}"
    if kind == "sio":
        return f"/socket.io/?EIO=4&transport=websocket&room={room}"
    raise ValueError(kind)


async def open_clients(
    kind: str,
    host: str,
    port: int,
    paths: list[str],
    *,
    local_ips: list[str],
    tot: Totals,
    concurrency: int = 64,
    limit_s: float = 60.0,
    full: list[bool] | None = None,
) -> list[WsClient]:
    """Connect every path (one client each), ``concurrency`` handshakes at a time.
    ``full[i]`` false makes client i a counting client (no decoding, no latency)."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    clients: list[WsClient] = []

    async def one(i: int, path: str) -> None:
        async with sem:
            ip = local_ips[i % len(local_ips)] if local_ips else None
            proto: WsClient | None = None
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: WsClient(kind, f"{host}:{port}", path, tot, full=full[i] if full else True),
                        host,
                        port,
                        local_addr=(ip, 0) if ip else None,
                    ),
                    limit_s,
                )
                ok = await asyncio.wait_for(asyncio.shield(proto.ready), limit_s)
            except (TimeoutError, OSError) as exc:
                if proto is not None:  # a late handshake must not join the room behind our back
                    proto.close()
                tot.failed += 1
                key = "connect:" + exc.__class__.__name__
                tot.other[key] = tot.other.get(key, 0) + 1
                return
            if ok:
                tot.ready += 1
                clients.append(proto)
            else:
                tot.failed += 1

    await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    return clients


# ---------------------------------------------------------------- client processes
PROGRESS_SLOTS = 4  # ready, items, frames, closed


def client_process(
    pidx: int,
    spec: dict[str, Any],
    pipe: Any,
    progress: Any,
) -> None:
    """Entry point of one load process (multiprocessing, spawn).

    ``spec``: kind, host, port, room, first (global client index), count, local_ips,
    concurrency, and for ``lc`` the secret and token lifetime to mint viewer tokens.
    Talks to the parent over ``pipe``: sends ``("ready", info)``, then answers
    ``("collect", step)``, ``("info",)`` and ``("stop",)``.
    """
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(_client_main(pidx, spec, pipe, progress))


async def _client_main(pidx: int, spec: dict[str, Any], pipe: Any, progress: Any) -> None:
    kind = spec["kind"]
    tot = Totals()
    paths: list[str] = []
    first, count = spec["first"], spec["count"]
    if kind in ("lc", "lcj"):
        from livecommerce.auth import issue_token

        now = int(time.time())
        for g in range(first, first + count):
            tok = issue_token(spec["secret"], user=f"bench{g}", role="viewer", now_s=now, ttl_s=spec.get("ttl", 3600))
            paths.append(client_path(kind, spec["room"], tok))
    else:
        paths = [client_path(kind, spec["room"], None)] * count
    base = pidx * PROGRESS_SLOTS
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def publish_progress() -> None:
        progress[base] = tot.ready - tot.closed
        progress[base + 1] = tot.items
        progress[base + 2] = tot.frames
        progress[base + 3] = tot.closed
        if not stop.done():
            loop.call_later(0.25, publish_progress)

    publish_progress()
    t0 = time.perf_counter()
    clients = await open_clients(
        kind,
        spec["host"],
        spec["port"],
        paths,
        local_ips=spec.get("local_ips") or [],
        tot=tot,
        concurrency=spec.get("concurrency", 64),
        full=[is_full(g, spec.get("decode_frac", 1.0)) for g in range(first, first + count)],
    )
    took = time.perf_counter() - t0
    pipe.send(("ready", {"ready": tot.ready, "failed": tot.failed, "seconds": took, "other": dict(tot.other)}))

    def on_cmd() -> None:
        while pipe.poll():
            try:
                msg = pipe.recv()
            except EOFError:
                if not stop.done():
                    stop.set_result(None)
                return
            cmd = msg[0]
            if cmd == "step":
                tot.cur = tot.steps[msg[1]] = StepStats()  # fresh: nothing early counts
                tot.cur.first = time.time()
                tot.marker = step_marker(msg[1]).encode()
            elif cmd == "collect":
                st = tot.steps.pop(msg[1], None)
                if st is not None and st is tot.cur:
                    tot.cur = None
                pipe.send(("stats", msg[1], st.export() if st else None))
            elif cmd == "info":
                pipe.send(("info", _info(tot)))
            elif cmd == "stop":
                if not stop.done():
                    stop.set_result(None)

    loop.add_reader(pipe.fileno(), on_cmd)
    await stop
    loop.remove_reader(pipe.fileno())
    for c in clients:
        c.close()
    await asyncio.sleep(0.2)
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.send(("bye", _info(tot)))


def _info(tot: Totals) -> dict[str, Any]:
    return {
        "ready": tot.ready,
        "failed": tot.failed,
        "closed": tot.closed,
        "frames": tot.frames,
        "items": tot.items,
        "other": dict(tot.other),
    }


def step_marker(step: int) -> str:
    """Opens the text of every message of a step, so that counting clients can count a
    step's messages in a frame with ``bytes.count`` (JSON and msgpack keep it verbatim)."""
    return f"~s{step}~"


def is_full(g: int, frac: float) -> bool:
    """Whether global client ``g`` decodes every frame (``frac`` of clients, spread evenly)."""
    return int((g + 1) * frac) > int(g * frac)


def local_ips(n: int) -> list[str]:
    """Loopback source addresses 127.0.0.2.. so that per-address limits and ephemeral
    ports are spread the way they are for real clients."""
    return [f"127.0.{1 + i // 250}.{2 + i % 250}" for i in range(n)]
