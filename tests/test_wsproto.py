"""The own transport's sans-I/O core (gateway/wsproto.py): bytes in, values out.

Frames are built by the ``websockets`` library (the client side of the wire) and by
``gateway/wsframe.py`` (the server's frames, masked here as a client would), fed whole, in
pieces and fragmented; every protocol error answers its close code.
"""

from __future__ import annotations

import ast
import json
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Close as WClose
from websockets.frames import Frame, Opcode

from gateway import wsproto
from gateway.wsframe import OP_BINARY, OP_TEXT, close_frame, ws_frame
from gateway.wsproto import Close, Failed, FrameReader, HandshakeError, Message, Ping, Pong


def client(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=True)


def masked(server_frame: bytes, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A server frame (gateway/wsframe.py) as a client would send it: mask bit and key."""
    b0, b1 = server_frame[0], server_frame[1]
    n = b1 & 0x7F
    head = 2 + (2 if n == 126 else 8 if n == 127 else 0)
    payload = server_frame[head:]
    body = bytes(x ^ key[i % 4] for i, x in enumerate(payload))
    return bytes((b0, b1 | 0x80)) + server_frame[2:head] + key + body


def feed_in_pieces(reader: FrameReader, data: bytes, cuts: list[int]) -> list[wsproto.Event]:
    out: list[wsproto.Event] = []
    last = 0
    for c in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        out.extend(reader.feed(data[last:c]))
        last = c
    return out


# ====================================================================== the handshake
HEAD = (b"GET /ws?room=r1&token=abc&format=json&room=ignored HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nOrigin: https://shop.example\r\n\r\n")


def test_the_accept_key_is_rfc_6455s_example() -> None:
    assert wsproto.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_an_upgrade_request_parses_and_is_answered_101_with_the_accept_key() -> None:
    assert wsproto.head_end(HEAD[:-2]) == -1
    assert wsproto.head_end(HEAD + b"\x81") == len(HEAD)
    req = wsproto.parse_head(HEAD)
    assert (req.method, req.path) == ("GET", "/ws")
    assert req.params() == {"room": "r1", "token": "abc", "format": "json"}  # the first of a repeated name
    assert req.header("origin") == "https://shop.example" and req.wants_websocket()
    answer = wsproto.accept(req)
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and answer.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ((b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), "Unsupported version"),
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"c2hvcnQ="), "Handshake error"),
        ((b"dGhlIHNhbXBsZSBub25jZQ==", b"not base64!!"), "Handshake error"),
        ((b"keep-alive, Upgrade", b"keep-alive"), "No CONNECTION upgrade hdr"),
        ((b"GET /ws", b"PUT /ws"), "needs GET"),
    ],
)
def test_an_upgrade_without_valid_websocket_headers_is_refused_400(change: tuple[bytes, bytes], reason: str) -> None:
    req = wsproto.parse_head(HEAD.replace(*change))
    with pytest.raises(HandshakeError, match=reason) as exc:
        wsproto.accept(req)
    assert exc.value.status == 400


@pytest.mark.parametrize(
    "head",
    [b"GET /ws\r\n\r\n", b"GET /ws HTTP/2\r\n\r\n", b"GET ws HTTP/1.1\r\n\r\n", b"GET /ws HTTP/1.1\r\nNo colon\r\n\r\n",
     b"GET /ws HTTP/1.1\r\nBad Name: x\r\n\r\n", b"GET /ws HTTP/1.1\r\nX: a\x00b\r\n\r\n", b"\r\n\r\n"],
)
def test_a_malformed_request_head_is_a_400(head: bytes) -> None:
    with pytest.raises(HandshakeError) as exc:
        wsproto.parse_head(head)
    assert exc.value.status == 400


def test_a_request_head_past_the_limit_is_refused_before_it_ends() -> None:
    with pytest.raises(HandshakeError, match="over"):
        wsproto.head_end(b"GET /ws HTTP/1.1\r\nX: " + b"a" * wsproto.MAX_HEAD)


def test_a_refusal_is_the_json_error_body_with_its_length_and_closes() -> None:
    out = wsproto.refusal(429, "rate_limited", "too many connections from this address")
    head, body = out.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429 Too Many Requests") and b"Connection: close" in head
    assert b"Content-Type: application/json" in head and f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"error": {"code": "rate_limited", "message": "too many connections from this address"}}


# ====================================================================== frames
@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_frames_of_every_length_encoding_from_websockets_parse_to_their_message(size: int, opcode: Opcode) -> None:
    data = b"x" * size
    (ev,) = FrameReader(1 << 20).feed(client(opcode, data))
    assert ev == Message(data.decode() if opcode == Opcode.TEXT else data)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(st.tuples(st.booleans(), st.binary(max_size=300), st.integers(1, 4)), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    ping_at=st.integers(0, 6),
)
def test_messages_in_any_fragmentation_and_any_read_sizes_come_out_whole_and_in_order(
    messages: list[tuple[bool, bytes, int]], cuts: list[int], ping_at: int
) -> None:
    wire = b""
    expected: list[wsproto.Event] = []
    for i, (text, data, parts) in enumerate(messages):
        payload = data.hex().encode() if text else data  # text must be UTF-8
        step = max(1, len(payload) // parts)
        chunks = [payload[j : j + step] for j in range(0, len(payload), step)] or [b""]
        for k, chunk in enumerate(chunks):
            op = (Opcode.TEXT if text else Opcode.BINARY) if k == 0 else Opcode.CONT
            wire += client(op, chunk, fin=k == len(chunks) - 1)
            if i == ping_at and k == 0 and len(chunks) > 1:  # a control frame between fragments
                wire += client(Opcode.PING, b"hb")
                expected.append(Ping(b"hb"))
        expected.append(Message(payload.decode() if text else payload))
    wire += client(Opcode.CLOSE, WClose(1000, "bye").serialize())
    expected.append(Close(1000, "bye"))
    got = feed_in_pieces(FrameReader(1 << 20), wire, cuts)
    # the ping may be reported before the message it interrupted completes: compare per kind
    assert [e for e in got if isinstance(e, Message)] == [e for e in expected if isinstance(e, Message)]
    assert [e for e in got if not isinstance(e, Message)] == [e for e in expected if not isinstance(e, Message)]


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=70_000), text=st.booleans())
def test_the_servers_own_frames_masked_parse_back_to_their_payload(payload: bytes, text: bool) -> None:
    body = payload.hex().encode()[: len(payload)] if text else payload
    frame = ws_frame(body, OP_TEXT if text else OP_BINARY)
    (ev,) = FrameReader(1 << 20).feed(masked(frame))
    assert ev == Message(body.decode() if text else body)


def test_ping_pong_and_close_with_code_and_reason() -> None:
    r = FrameReader(1024)
    evs = r.feed(client(Opcode.PING, b"p") + client(Opcode.PONG, b"q") + masked(close_frame(4001, "gone")))
    assert evs == [Ping(b"p"), Pong(b"q"), Close(4001, "gone")]
    assert r.done and r.feed(client(Opcode.TEXT, b"after")) == []


def test_a_close_without_status_has_no_code() -> None:
    assert FrameReader(1024).feed(client(Opcode.CLOSE, b"")) == [Close(None, "")]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (Frame(Opcode.TEXT, b"hi").serialize(mask=False), 1002),  # unmasked
        (bytes((0x81 | 0x40, 0x80)) + b"\0\0\0\0", 1002),  # RSV1 without an extension
        (bytes((0x83, 0x80)) + b"\0\0\0\0", 1002),  # opcode 3 is reserved
        (client(Opcode.CONT, b"x"), 1002),  # nothing to continue
        (client(Opcode.TEXT, b"a", fin=False) + client(Opcode.TEXT, b"b"), 1002),  # a new message mid-message
        (masked(bytes((0x09, 1)) + b"x"), 1002),  # fragmented control frame (FIN clear)
        (bytes((0x89, 0x80 | 126)) + struct.pack("!H", 126) + b"\0\0\0\0" + b"x" * 126, 1002),  # control over 125
        (client(Opcode.CLOSE, b"\x03"), 1002),  # a 1-byte close payload
        (client(Opcode.CLOSE, struct.pack("!H", 1005)), 1002),  # a code never sent on the wire
        (client(Opcode.CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),  # reason not UTF-8
        (client(Opcode.TEXT, b"\xc3\x28"), 1007),  # text not UTF-8
        (client(Opcode.TEXT, b"\xc3", fin=False) + client(Opcode.CONT, b"\x28"), 1007),
        (bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 63) + b"\0\0\0\0", 1002),  # length with the high bit
    ],
)
def test_each_protocol_error_fails_with_its_close_code(wire: bytes, code: int) -> None:
    r = FrameReader(1024)
    evs = r.feed(wire)
    assert isinstance(evs[-1], Failed) and evs[-1].code == code, evs
    assert r.done and r.feed(client(Opcode.TEXT, b"more")) == []


def test_a_message_over_the_limit_fails_1009_from_its_header_alone() -> None:
    frame = client(Opcode.BINARY, b"x" * 2000)
    assert FrameReader(1000).feed(frame[:8]) == [Failed(1009, "message over 1000 bytes")]


def test_fragments_that_add_up_past_the_limit_fail_1009() -> None:
    r = FrameReader(1000)
    assert r.feed(client(Opcode.BINARY, b"x" * 600, fin=False)) == []
    (ev,) = r.feed(client(Opcode.CONT, b"x" * 600))
    assert isinstance(ev, Failed) and ev.code == 1009


def test_messages_before_an_error_in_the_same_read_are_kept() -> None:
    evs = FrameReader(1024).feed(client(Opcode.TEXT, b"ok") + client(Opcode.CONT, b"x"))
    assert evs[0] == Message("ok") and isinstance(evs[1], Failed)


def test_the_core_imports_no_io() -> None:
    tree = ast.parse(Path(wsproto.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not names & {"asyncio", "socket", "aiohttp", "websockets", "selectors", "ssl"}, names
    assert os.path.basename(wsproto.__file__) == "wsproto.py"
