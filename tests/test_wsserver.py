"""The gateway's own WebSocket transport (gateway/wsserver.py, ``LC_WS_TRANSPORT=own``) on a
real node: one port for /ws and HTTP, refusals as plain text, close codes, pipelining, no
task while idle, everything given back when a connection ends.

Every other gateway test runs on it too with ``LC_WS_TRANSPORT=own`` (tests/conftest.py);
these are the behaviours of the transport itself, on real sockets and the real
``websockets`` client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.frames import Frame, Opcode

from gateway.app import close_clients
from gateway.wsserver import WsLink
from tests.fixtures_gateway import Node
from tests.waiting import wait_until
from tests.wsclient import Client


@pytest.fixture
async def node(gateway_factory: Any) -> Node:
    n: Node = await gateway_factory(ws_transport="own")
    return n


def links(node: Node) -> list[WsLink]:
    return [c.link for room in node.gw.hub.rooms.values() for c in room.all() if isinstance(c.link, WsLink)]


async def raw_upgrade(node: Node, query: str, extra: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    port = int(node.url.rsplit(":", 1)[1])
    r, w = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write(f"GET /ws?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode() + extra)
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout=5)
    return r, w, head


async def read_frame(r: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await asyncio.wait_for(r.readexactly(2), timeout=5)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await r.readexactly(8))[0]
    return b0 & 0x0F, await r.readexactly(n)


async def test_http_and_websocket_share_the_port(node: Node, token: Any) -> None:
    c = await Client.connect(node.ws, "own1", token("u1"), fmt="json")
    async with aiohttp.ClientSession() as s:
        for _ in range(3):  # keep-alive: several requests on one handed-off connection
            assert (await s.get(node.url + "/healthz")).status == 200
        text = await (await s.get(node.url + "/metrics")).text()
        assert "lc_connections" in text
        r = await s.get(node.url + "/ws?room=own1&format=json")  # no Upgrade: aiohttp answers, as before
        assert r.status == 400
    assert (await c.request("ping"))["t"] == "pong"


@pytest.mark.parametrize(  # the documented JSON error body, as on aiohttp, with the reason as its message
    ("query", "status", "text"),
    [("room=&format=json", 400, "room must be"), ("room=a&format=xml", 400, "format must be"),
     ("room=a&since=-1", 400, "since must be")],
)
async def test_a_bad_request_is_refused_with_a_plain_text_reason(node: Node, query: str, status: int, text: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"{node.ws}?{query}")
    body = json.loads(info.value.response.body)
    assert info.value.response.status_code == status and body["error"]["code"] == "bad_request" and text in body["error"]["message"]


async def test_origin_draining_and_the_address_limit_are_refused_403_503_429(gateway_factory: Any, token: Any) -> None:
    node: Node = await gateway_factory(ws_transport="own", allowed_origins="https://shop.example", max_conns_per_ip=1)
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"{node.ws}?room=a&token={token('u')}", origin="https://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    first = await websockets.connect(f"{node.ws}?room=a&format=json&token={token('u')}", origin="https://shop.example")  # type: ignore[arg-type]
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"{node.ws}?room=a&token={token('u')}", origin="https://shop.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 429
    await first.close()
    await wait_until(lambda: not node.gw.hub.by_ip, timeout=5)  # the address's slot is given back
    node.gw.draining = True
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"{node.ws}?room=a&token={token('u')}", origin="https://shop.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 503 and "draining" in json.loads(info.value.response.body)["error"]["message"]


async def test_an_idle_connection_runs_no_task_and_keeps_no_queue(node: Node, token: Any) -> None:
    c = await Client.connect(node.ws, "own2", token("u1"), fmt="json")
    assert (await c.request("ping"))["t"] == "pong"
    (link,) = links(node)
    await wait_until(lambda: link.pump is None, timeout=5)
    assert link.inbox is None and link.lane is None and link.phase == "open"


async def test_pipelined_commands_are_answered_in_order_and_reading_resumes(node: Node, token: Any) -> None:
    c = await Client.connect(node.ws, "own3", token("u1"), fmt="json")
    n = 90  # past PIPELINE_DEPTH (reading pauses and resumes), within the command burst (100)
    await asyncio.gather(*(c.ws.send(json.dumps({"t": "ping", "id": i})) for i in range(n)))
    got = [await c.next_frame() for _ in range(n)]
    assert [f["id"] for f in got] == list(range(n)) and {f["t"] for f in got} == {"pong"}
    (link,) = links(node)
    assert not link.paused


async def test_ping_is_answered_and_a_client_close_is_echoed_and_released(node: Node, token: Any) -> None:
    ws = await websockets.connect(f"{node.ws}?room=own4&format=json&token={token('u1')}")
    assert json.loads(await ws.recv())["t"] == "welcome"
    await asyncio.wait_for(await ws.ping(b"hi"), timeout=5)
    await ws.close(4000, "bye")
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4000  # the server echoed it
    await wait_until(lambda: not node.gw.user_slots and not node.gw.hub.by_ip and not node.gw.hub.by_user, timeout=5)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (Frame(Opcode.TEXT, b'{"t":"ping"}').serialize(mask=False), 1002),  # unmasked
        (Frame(Opcode.TEXT, b"\xc3\x28").serialize(mask=True), 1007),  # not UTF-8
        (Frame(Opcode.BINARY, b"x" * 70_000).serialize(mask=True)[:14], 1009),  # over the limit: its header says so
    ],
    ids=["unmasked", "not-utf8", "too-big"],
)
async def test_a_protocol_error_closes_with_its_code(node: Node, token: Any, frame: bytes, code: int) -> None:
    r, w, head = await raw_upgrade(node, f"room=own5&format=json&token={token('u1')}")
    assert head.startswith(b"HTTP/1.1 101")
    op, welcome = await read_frame(r)
    assert json.loads(welcome)["t"] == "welcome"
    w.write(frame)
    while True:
        op, payload = await read_frame(r)
        if op == 0x8:
            break
    assert struct.unpack("!H", payload[:2])[0] == code
    assert await asyncio.wait_for(r.read(), 5) == b""  # and the socket closes
    w.close()
    await wait_until(lambda: not node.gw.user_slots and not node.gw.hub.by_ip, timeout=5)


async def test_frames_sent_with_the_handshake_are_answered_after_the_welcome(node: Node, token: Any) -> None:
    early = Frame(Opcode.TEXT, json.dumps({"t": "ping", "id": 7}).encode()).serialize(mask=True)
    r, w, _ = await raw_upgrade(node, f"room=own6&format=json&token={token('u1')}", extra=early)
    _, first = await read_frame(r)
    _, second = await read_frame(r)
    assert json.loads(first)["t"] == "welcome"
    assert (json.loads(second)["t"], json.loads(second)["id"]) == ("pong", 7)
    w.close()


async def test_a_bad_token_gets_the_error_frame_then_4401(node: Node) -> None:
    async with websockets.connect(f"{node.ws}?room=own7&format=json&token=garbage") as ws:
        assert json.loads(await ws.recv())["d"]["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401
    await wait_until(lambda: not node.gw.hub.by_ip, timeout=5)


async def test_drain_closes_every_viewer_with_1012(node: Node, token: Any) -> None:
    viewers = [await Client.connect(node.ws, "own8", token(f"v{i}"), fmt="json") for i in range(3)]
    assert await close_clients(node.gw) == 3
    for v in viewers:
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await v.ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1012
    await wait_until(lambda: not node.gw.hub.by_user, timeout=5)


async def test_a_dead_peer_is_pinged_then_dropped_by_the_hubs_sweep(gateway_factory: Any, token: Any) -> None:
    node: Node = await gateway_factory(ws_transport="own", heartbeat_s=0.4)
    r, w, _ = await raw_upgrade(node, f"room=own9&format=json&token={token('u1')}")
    await read_frame(r)  # welcome; from now on the client answers nothing
    seen_ping = False
    try:
        while True:
            op, _ = await read_frame(r)
            seen_ping = seen_ping or op == 0x9
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    assert seen_ping
    await wait_until(lambda: not node.gw.hub.by_user, timeout=5)
    w.close()


async def test_the_aiohttp_transport_still_serves_the_same_contract(gateway_factory: Any, token: Any) -> None:
    """``LC_WS_TRANSPORT=aiohttp``: the transport before M2 4/7, kept as a choice."""
    node: Node = await gateway_factory(ws_transport="aiohttp")
    c = await Client.connect(node.ws, "aio1", token("u1"), fmt="json")
    assert (await c.request("ping"))["t"] == "pong"
    assert not links(node)  # no WsLink: aiohttp's WebSocketResponse carries it
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"{node.ws}?room=&format=json")
    assert info.value.response.status_code == 400  # aiohttp's error middleware: the documented JSON body
    assert json.loads(info.value.response.body)["error"]["code"] == "bad_request"
    async with aiohttp.ClientSession() as s:
        assert (await s.get(node.url + "/healthz")).status == 200


async def test_a_request_head_that_never_ends_is_dropped(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.wsserver as wsserver

    monkeypatch.setattr(wsserver, "HEAD_TIMEOUT_S", 0.3)
    port = int(node.url.rsplit(":", 1)[1])
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /ws?room=slow HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    assert await asyncio.wait_for(r.read(), 5) == b""
    w.close()
