"""The pure protocol core: codec, commands, error table, recovery plan. Values in, values out."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.errors import (
    BadFrame,
    Flooding,
    Forbidden,
    FrameTooBig,
    RateLimited,
    Unauthorized,
    Unavailable,
    wire_error,
)
from livecommerce.protocol.codec import decode_frame, encode_batch
from livecommerce.protocol.commands import Buy, Comment, HostAction, parse_command
from livecommerce.protocol.events import recovery_plan


def test_msgpack_and_json_frames_decode_to_the_same_command():
    frame = {"t": "buy", "id": 3, "d": {"sale_id": "s1", "qty": 2, "request_id": "r-1"}}
    a = parse_command(decode_frame(msgpack.packb(frame), "msgpack", max_bytes=1024))
    b = parse_command(decode_frame(json.dumps(frame), "json", max_bytes=1024))
    assert a == b == Buy(id=3, sale_id="s1", qty=2, request_id="r-1")


def test_fields_may_sit_at_the_top_level():
    assert parse_command({"t": "comment", "text": "hi"}) == Comment(text="hi")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"t": "warp"}, "unknown_type"),
        ({"t": "comment", "d": {"text": 3}}, "invalid"),
        ({"t": "buy", "d": {"sale_id": "s", "qty": 0, "request_id": "r"}}, "invalid"),
        ({"t": "buy", "d": {"sale_id": "s", "qty": True, "request_id": "r"}}, "invalid"),
        ({"t": "buy", "d": {"sale_id": "s/../x", "qty": 1, "request_id": "r"}}, "invalid"),
        ({"t": "comment", "id": {"x": 1}, "d": {"text": "a"}}, "invalid"),
        ({"t": "comment", "d": []}, "invalid"),
    ],
)
def test_invalid_commands_raise_bad_frame_with_a_code(frame, code):
    with pytest.raises(BadFrame) as info:
        parse_command(frame)
    assert info.value.code == code


def test_host_actions_keep_their_body():
    cmd = parse_command({"t": "sale.start", "id": 1, "d": {"sale_id": "s1"}})
    assert isinstance(cmd, HostAction) and cmd.action == "sale.start" and cmd.d == {"sale_id": "s1"}


def test_oversized_frame_is_refused_before_decoding():
    with pytest.raises(FrameTooBig):
        decode_frame(b"\x80" * 2000, "msgpack", max_bytes=1000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_either_decode_or_raise_bad_frame(data):
    try:
        frame = decode_frame(data, "msgpack", max_bytes=1000)
    except BadFrame:
        return
    assert isinstance(frame["t"], str)
    try:
        parse_command(frame)
    except BadFrame:
        pass


def test_error_table_maps_each_error_to_its_wire_code():
    assert (wire_error(Unauthorized("x")).close, wire_error(Unauthorized("x")).http) == (4401, 401)
    assert wire_error(Flooding("x")).close == 4429
    assert wire_error(RateLimited("x")).close is None and wire_error(RateLimited("x")).code == "rate_limited"
    assert wire_error(Forbidden("x")).http == 403
    assert wire_error(Unavailable("x")).http == 503
    assert wire_error(BadFrame("x", code="unknown_type")).code == "unknown_type"
    internal = wire_error(KeyError("secret detail"))
    assert internal.code == "internal" and internal.echo is False


def test_batch_frames_hold_every_item_in_order():
    items = [{"t": "comment", "seq": i, "d": {"text": str(i)}} for i in range(3)]
    for fmt in ("msgpack", "json"):
        raw = encode_batch("r", items, fmt)
        obj = msgpack.unpackb(raw) if fmt == "msgpack" else json.loads(raw)
        assert obj == {"t": "batch", "room": "r", "items": items}


def test_recovery_replays_critical_events_and_only_the_latest_counter():
    events = [
        {"t": "comment", "seq": 1},
        {"t": "likes", "seq": 2, "d": {"total": 5}},
        {"t": "sale.started", "seq": 3},
        {"t": "likes", "seq": 4, "d": {"total": 9}},
        {"t": "order.paid", "seq": 5},
    ]
    out = recovery_plan(events)
    assert [e["seq"] for e in out] == [1, 3, 4, 5]


def test_recovery_skips_old_comments_in_a_large_gap_but_keeps_critical_ones():
    events = [{"t": "comment", "seq": i} for i in range(1, 501)] + [{"t": "sale.ended", "seq": 501}]
    out = recovery_plan(events, max_skippable=100)
    assert out[-1]["t"] == "sale.ended"
    assert [e["seq"] for e in out[:-1]] == list(range(401, 501))
