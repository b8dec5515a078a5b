"""Fuzzing the receive boundary: random and mutated frames, msgpack and JSON.

Two layers, driven by hypothesis:

* the pure codec and command parser (``decode_frame`` + ``parse_command``): many cases;
  every input is either a command or a :class:`BadFrame` whose wire code is in the
  README's table, never any other exception;
* a live ``livecommerce gateway`` process over real WebSocket connections: each fuzzed frame
  is followed by a ``ping`` probe; every frame before the ``pong`` must be a contract answer
  (an error frame with a known code, an ack, a room event) or the connection must close
  with a documented code; a neighbour connection in the same room keeps answering; at the
  end the process is alive and logged nothing at ERROR level (no ``dispatch.internal``).

Case counts: the ``lc-fuzz`` hypothesis profiles keep CI short; ``LC_FUZZ_EXAMPLES=N`` runs N
cases per test. The long run (>= 10,000 cases through the live gateway)::

    LC_FUZZ_EXAMPLES=10000 python -m pytest tests/test_fuzz.py -s -p no:cacheprovider --timeout 3600

Each test prints its case count and the answers it saw.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

import msgpack
import pytest
import redis as sync_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from livecommerce.auth import issue_token
from livecommerce.coupons import ClaimReject
from livecommerce.errors import BadFrame, LiveCommerceError, wire_error
from livecommerce.flash_sale import Reject
from livecommerce.lottery import EntryReject
from livecommerce.protocol.codec import decode_frame
from livecommerce.protocol.commands import COMMANDS, Command, parse_command
from scripts.chaos_rush import Proc, free_port, gateway_proc, lc_env

EXAMPLES = int(os.environ.get("LC_FUZZ_EXAMPLES", "0"))
MAX_FRAME = 16 * 1024  # LC_MAX_FRAME_BYTES default
TRANSPORT_MAX = 64 * 1024  # beyond this aiohttp closes with 1009

settings.register_profile("lc-fuzz-pure", max_examples=EXAMPLES or 400, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("lc-fuzz-live", max_examples=EXAMPLES or 200, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])

# codes a client may see: the README table, the errors table, and the documented rejects
CONTRACT = {"bad_frame", "unknown_type", "invalid", "frame_too_big", "forbidden", "moderated", "rate_limited", "unauthorized"}
ERRORS_TABLE = {"not_found", "conflict", "unavailable"}
DOMAIN = {*get_args(Reject), *get_args(ClaimReject), *get_args(EntryReject), "insufficient_funds", "unknown_gift"}
# the cart's commands answer their HTTP routes' codes (README, docs/commerce.md "Cart and checkout")
CART = {"cart_full", "qty_too_large", "archived", "sku_archived", "no_product", "no_sku", "price_changed", "cart_empty",
        "too_many_coupons", "coupon_not_usable", "order_exists", "idempotency_conflict", "idempotency_in_flight"}
PARSER_CODES = {"bad_frame", "unknown_type", "invalid", "frame_too_big"}
ALLOWED_CODES = CONTRACT | ERRORS_TABLE | DOMAIN | CART
CLOSE_CODES = {1009, 4429}  # transport limit; flooding

# ============================================================================ strategies
FIELDS = ["t", "id", "d", "text", "count", "gift_id", "combo_id", "sale_id", "qty", "request_id", "lottery_id", "drop_id",
          "product_id", "since", "room"]
KNOWN_IDS = ["rose", "heart", "s1", "p1", "x", "a" * 64, "a" * 65, "", " ", "../etc", "a:b", "\u0000", "é"]
huge_ints = st.sampled_from([0, -1, 1, 2**31, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1, 10**6, 10**6 + 1, 1000, 1001])
scalars = st.one_of(
    st.none(), st.booleans(), huge_ints, st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80), st.sampled_from(KNOWN_IDS), st.binary(max_size=40),
)
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=6), st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)), kids, max_size=4)), max_leaves=12)
# field values: mostly plausible (so that many frames reach the handlers), sometimes anything
field_values = st.one_of(st.sampled_from(KNOWN_IDS), st.integers(1, 5), st.text(min_size=1, max_size=30), values)


def json_safe(v: Any) -> Any:
    """What JSON can carry of a value (bytes as text, NaN kept: Python's json emits it)."""
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    if isinstance(v, dict):
        return {str(json_safe(k)) if not isinstance(k, str) else k: json_safe(x) for k, x in v.items()}
    return v


@st.composite
def command_like(draw: st.DrawFn) -> dict[str, Any]:
    """A valid-looking command with mutated fields: right ``t``, fields of any type."""
    t = draw(st.one_of(st.sampled_from(sorted(COMMANDS)), st.sampled_from(["", "PING", "buy ", "batch", "welcome", "t" * 300]),
                       st.text(max_size=12), scalars))
    d = draw(st.dictionaries(st.sampled_from(FIELDS[3:]), field_values, max_size=5))
    frame: dict[str, Any] = {"t": t}
    if draw(st.booleans()):
        frame["id"] = draw(st.one_of(st.integers(-5, 10**20), st.text(max_size=80), values))
    where = draw(st.sampled_from(["d", "top", "bad_d"]))
    if where == "d":
        frame["d"] = d
    elif where == "top":
        frame.update(d)
    else:
        frame["d"] = draw(values)
    return frame


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Flip, insert or delete bytes at the given places."""
    b = bytearray(data)
    for kind, pos, val in edits:
        if not b:
            b.append(val)
            continue
        i = pos % len(b)
        if kind == 0:
            b[i] = val
        elif kind == 1:
            b.insert(i, val)
        else:
            del b[i]
    return bytes(b)


@dataclass(frozen=True)
class Frame:
    kind: str
    data: bytes | str
    fmt: str  # the connection's format


edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)), max_size=4)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    kind = draw(st.sampled_from(["command-msgpack", "command-json", "mutated-msgpack", "mutated-json", "value-msgpack",
                                 "value-json", "deep", "huge-number", "escapes", "junk", "cross-format", "oversize"]))
    if kind in ("command-msgpack", "mutated-msgpack", "value-msgpack"):
        obj = draw(command_like() if kind != "value-msgpack" else values)
        try:
            data: bytes | str = msgpack.packb(obj, use_bin_type=True)
        except (OverflowError, ValueError, TypeError):
            data = msgpack.packb({"t": "ping"})
        if kind == "mutated-msgpack":
            data = mutate(data, draw(edits))
        return Frame(kind, data, "msgpack")
    if kind in ("command-json", "mutated-json", "value-json"):
        obj = json_safe(draw(command_like() if kind != "value-json" else values))
        text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
        if kind == "mutated-json":
            text = mutate(text.encode("utf-8", "surrogatepass"), draw(edits)).decode("utf-8", "replace")
        return Frame(kind, text, "json")
    if kind == "deep":
        depth = draw(st.integers(50, MAX_FRAME - 20))
        if draw(st.booleans()):
            return Frame(kind, "[" * depth + "]" * draw(st.integers(0, depth)), "json")
        opener = draw(st.sampled_from([b"\x91", b"\x81\xa1t"]))
        return Frame(kind, opener * (depth // len(opener)) + b"\xc0", "msgpack")
    if kind == "huge-number":
        num = draw(st.sampled_from(["1" * 5000, "-" + "9" * 4301, "1e999999", "-1e-999999", "NaN", "Infinity", "-Infinity",
                                    str(2**64), str(2**63), str(-(2**63) - 1), str(2**64 - 1), "-0",
                                    "1" * 400 + ".5", "0x10", "1_000"]))
        key = draw(st.sampled_from(["qty", "count", "id", "sale_id", "text"]))
        t = draw(st.sampled_from(["buy", "like", "gift", "comment", "ping"]))
        return Frame(kind, f'{{"t":"{t}","id":{num},"d":{{"{key}":{num},"sale_id":"s1","request_id":"r1","gift_id":"rose"}}}}',
                     draw(st.sampled_from(["json", "msgpack"])))
    if kind == "escapes":  # strings JSON can carry and UTF-8 cannot (lone surrogates), NULs, controls
        text = draw(st.sampled_from(["\\ud800", "\\udfff\\ud800", "a\\u0000b", "\\u202e\\u200b", "\\ud83d\\ude00",
                                     "\\u001b[31m", "%s%n", "\\\\", "\\/"]))
        t = draw(st.sampled_from(["comment", "buy", "gift", "lottery.enter", "coupon.claim"]))
        return Frame(kind, f'{{"t":"{t}","id":"{text}","d":{{"text":"{text}","sale_id":"{text}","request_id":"{text}",'
                           f'"gift_id":"{text}","lottery_id":"{text}","drop_id":"{text}"}}}}', "json")
    if kind == "junk":
        return Frame(kind, draw(st.binary(min_size=0, max_size=200)), draw(st.sampled_from(["msgpack", "json"])))
    if kind == "cross-format":  # text on a msgpack connection, binary JSON on a JSON one
        obj = json_safe(draw(command_like()))
        if draw(st.booleans()):
            return Frame(kind, json.dumps(obj), "msgpack")
        return Frame(kind, json.dumps(obj).encode(), "json")
    size = draw(st.sampled_from([MAX_FRAME + 1, MAX_FRAME * 2, TRANSPORT_MAX + 1]))
    return Frame(kind, json.dumps({"t": "comment", "d": {"text": "x" * size}}), "json")


# ============================================================================ the pure layer
def test_codec_and_parser_answer_every_input_per_the_contract() -> None:
    seen: Counter[str] = Counter()

    @settings(settings.get_profile("lc-fuzz-pure"))
    @given(frames())
    def one(f: Frame) -> None:
        seen["cases"] += 1
        try:
            frame = decode_frame(f.data, f.fmt, max_bytes=MAX_FRAME)  # type: ignore[arg-type]
            cmd = parse_command(frame)
        except BadFrame as exc:
            we = wire_error(exc)
            assert we.code in PARSER_CODES, (we.code, exc.message)
            assert we.close is None  # parse errors never close the connection
            assert isinstance(exc.message, str) and len(exc.message) < 300
            seen[we.code] += 1
            return
        assert isinstance(cmd, Command) and isinstance(frame["t"], str)
        assert cmd.id is None or isinstance(cmd.id, (int, str))
        seen["parsed"] += 1

    one()
    print(f"\ncodec fuzz: {seen['cases']} cases: {dict(seen)}")
    assert seen["cases"] >= min(EXAMPLES or 400, 400) * 0.9


@settings(settings.get_profile("lc-fuzz-pure"), max_examples=max(EXAMPLES, 200))
@given(values)
def test_parsed_commands_only_hold_valid_fields(obj: Any) -> None:
    frame = obj if isinstance(obj, dict) else {"t": "buy", "d": obj}
    frame = {**frame, "t": frame.get("t") if isinstance(frame.get("t"), str) and frame.get("t") else "buy"}
    try:
        cmd = parse_command(frame)
    except LiveCommerceError as exc:
        assert wire_error(exc).code in PARSER_CODES
        return
    for name in ("qty", "count"):
        v = getattr(cmd, name, None)
        if v is not None:
            assert isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 9999
    for name in ("sale_id", "request_id", "gift_id", "lottery_id", "drop_id", "product_id"):
        v = getattr(cmd, name, None)
        if v is not None:
            assert isinstance(v, str) and 1 <= len(v) <= 64 and all(c.isalnum() or c in "-_.:" for c in v)
    text = getattr(cmd, "text", None)
    if text is not None:
        assert isinstance(text, str) and text


# ============================================================================ the live gateway
@dataclass
class Live:
    proc: Proc
    ws: str
    secret: str
    tokens: list[str] = field(default_factory=list)

    def url(self, fmt: str, user: str) -> str:
        tok = issue_token(self.secret, user=user, role="viewer", now_s=int(time.time()), ttl_s=7200)
        return f"{self.ws}?room=fuzz&format={fmt}&token={tok}"


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    import asyncio

    from livecommerce.migrations import upgrade
    from scripts.chaos_rush import wait_ready

    work = tmp_path_factory.mktemp("fuzz")
    db = f"sqlite+aiosqlite:///{work}/fuzz.db"
    asyncio.run(upgrade(db))
    prefix = f"fz{uuid.uuid4().hex[:8]}"
    secret = secrets.token_hex(24)
    port = free_port()
    # rate limits far up, so that frames reach the parser and the handlers, not the bucket
    env = lc_env(redis_url=redis_url, key_prefix=prefix, database_url=db, secret=secret, log_json="1",
                 command_rate="100000", command_burst="100000", comment_rate="100000", comment_burst="100000",
                 dev_pay="1")  # the dev /pay reads its body, as in `livecommerce dev`
    proc = gateway_proc("gw-fuzz", port, env, work)
    proc.start()
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{port}", 60, proc))
        yield Live(proc, f"ws://127.0.0.1:{port}/ws", secret)
    finally:
        proc.stop()
        r = sync_redis.Redis.from_url(redis_url)
        for k in r.scan_iter(match=f"{prefix}:*", count=1000):
            r.delete(k)
        r.close()


class Peer:
    """One fuzzing connection per format, reopened after a documented close."""

    def __init__(self, live: Live, fmt: str) -> None:
        self.live, self.fmt = live, fmt
        self.conn: ClientConnection | None = None
        self.probe = 0
        self.opens = 0

    def ensure(self) -> ClientConnection:
        if self.conn is None:
            # entered by hand: this object closes it (websockets >= 17.1 warns on a bare connect())
            self.conn = connect(self.live.url(self.fmt, f"fuzzer-{self.fmt}"), max_size=None, open_timeout=10,
                                ping_interval=None).__enter__()  # its keepalive pings would draw from the global random
            self.opens += 1
            assert self.decode(self.conn.recv(10))["t"] == "welcome"
        return self.conn

    def decode(self, raw: bytes | str) -> dict[str, Any]:
        return msgpack.unpackb(raw, raw=False) if isinstance(raw, bytes) else json.loads(raw)  # type: ignore[no-any-return]

    def ping_frame(self) -> bytes | str:
        self.probe += 1
        f = {"t": "ping", "id": f"probe-{self.probe}"}
        return msgpack.packb(f) if self.fmt == "msgpack" else json.dumps(f)

    def exchange(self, data: bytes | str) -> tuple[list[dict[str, Any]], int | None]:
        """Send a frame then a probe; return the frames before the probe's pong, or the
        close code if the server closed the connection."""
        conn = self.ensure()
        got: list[dict[str, Any]] = []
        try:
            conn.send(data)
            conn.send(self.ping_frame())
            want = f"probe-{self.probe}"
            while True:
                f = self.decode(conn.recv(10))
                if f.get("t") == "pong" and f.get("id") == want:
                    return got, None
                got.append(f)
        except ConnectionClosed:
            code = conn.close_code
            self.conn = None
            return got, code


REPLIES = {"ack", "error", "pong", "order.reserved", "coupon.claimed"}


def check_answers(f: Frame, got: list[dict[str, Any]], code: int | None, seen: Counter[str]) -> None:
    for g in got:
        t = g.get("t")
        assert isinstance(t, str), g
        if t == "error":
            c = g["d"]["code"]
            assert c in ALLOWED_CODES, f"undocumented error code {c!r} for a {f.kind} frame: {g}"
            assert g["d"].get("message") != "internal error"
            seen[f"error:{c}"] += 1
        elif t in REPLIES:
            seen[t] += 1
        else:  # a room event (our own comment, online counts, ...)
            assert "room" in g, g
            seen["event"] += 1
    replies = [g for g in got if g.get("t") in REPLIES]
    if code is None:
        assert len(replies) <= 1, got  # one answer per frame (likes answer nothing... an ack)
    else:
        assert code in CLOSE_CODES, f"closed with {code} after a {f.kind} frame ({len(f.data)} bytes)"
        if code == 1009:
            assert len(f.data) > TRANSPORT_MAX
        seen[f"close:{code}"] += 1


def errors_logged_since(live: Live, offset: int) -> list[str]:
    """ERROR lines (unhandled exceptions, ``dispatch.internal``) the process logged after ``offset``."""
    with open(live.proc.log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if '"level": "error"' in line or '"level": "critical"' in line
            or "dispatch.internal" in line or line.startswith("Traceback")]


def test_live_gateway_answers_every_fuzzed_frame_per_the_contract(live: Live) -> None:
    offset = live.proc.log_path.stat().st_size
    peers = {fmt: Peer(live, fmt) for fmt in ("msgpack", "json")}
    neighbour = Peer(live, "json")
    neighbour.ensure()
    seen: Counter[str] = Counter()

    @settings(settings.get_profile("lc-fuzz-live"))
    @given(frames())
    def one(f: Frame) -> None:
        seen["cases"] += 1
        seen[f"kind:{f.kind}"] += 1
        got, code = peers[f.fmt].exchange(f.data)
        check_answers(f, got, code, seen)
        if seen["cases"] % 50 == 0:  # the neighbour keeps working throughout
            _, ncode = neighbour.exchange(json.dumps({"t": "ping"}))
            assert ncode is None, f"the neighbour was closed with {ncode}"

    one()
    _, ncode = neighbour.exchange(json.dumps({"t": "ping", "id": "last"}))
    assert ncode is None
    assert live.proc.alive(), "the gateway process exited"
    bad = errors_logged_since(live, offset)
    assert not bad, bad[:3]
    n = seen["cases"]
    print(f"\nlive fuzz: {n} cases, {sum(p.opens for p in peers.values())} connections opened: "
          f"{dict(sorted(seen.items()))}")
    assert n >= min(EXAMPLES or 200, 200) * 0.9


# frames the fuzzer found that once broke a connection or answered ``internal``
REGRESSIONS = [
    Frame("escapes", '{"t":"ping","id":"\\ud800"}', "json"),  # the echoed id could not be encoded: connection dropped
    Frame("escapes", '{"t":"ping","id":"\\ud800"}', "msgpack"),
    Frame("escapes", '{"t":"comment","id":1,"d":{"text":"\\udc00"}}', "json"),  # internal error on broadcast
    Frame("huge-number", '{"t":"buy","id":18446744073709551616,"d":{}}', "msgpack"),  # id past msgpack's range
    Frame("huge-number", '{"t":"ping","id":-9223372036854775809}', "msgpack"),
    Frame("huge-number", '{"t":"ping","id":' + "9" * 5000 + "}", "json"),
]


def test_live_gateway_answers_the_frames_that_once_broke_it(live: Live) -> None:
    offset = live.proc.log_path.stat().st_size
    seen: Counter[str] = Counter()
    for f in REGRESSIONS:
        peer = Peer(live, f.fmt)
        got, code = peer.exchange(f.data)
        assert code is None, f"{f} closed the connection with {code}"
        check_answers(f, got, code, seen)
        assert [g["d"]["code"] for g in got if g["t"] == "error"] in (["bad_frame"], ["invalid"]), (f, got)
        assert peer.conn is not None
        peer.conn.close()
    assert not errors_logged_since(live, offset)


# ============================================================================ HTTP bodies
HTTP_POSTS = ["/api/v1/rooms/fuzz/announce", "/api/v1/campaigns", "/api/v1/rooms", "/api/v1/products", "/api/v1/rooms/fuzz/pin",
              "/api/v1/rooms/fuzz/coupons", "/api/v1/rooms/fuzz/lotteries", "/api/v1/sales/s1/buy", "/api/v1/orders/s1.x/pay",
              "/api/v1/wallets/fuzzer/topup", "/api/v1/points/fuzzer/redeem", "/api/v1/orders/s1.x/cancel",
              "/api/v1/orders/s1.x/payments", "/api/v1/payments/webhook"]
JSON_ESCAPES = ['"\\ud800"', '{"text":"\\udc00x"}', '{"id":"\\ud800","room":"fuzz","text":"x"}', '[1,2', '{"text":NaN}',
                '{"text":"' + "9" * 5000 + '"}', "1" * 5000, '{"amount":1e999,"idempotency_key":"k"}', "null", '"x"']


@st.composite
def http_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    path = draw(st.sampled_from(HTTP_POSTS))
    kind = draw(st.sampled_from(["value", "command", "escape", "junk"]))
    if kind == "value":
        body = json.dumps(json_safe(draw(values))).encode()
    elif kind == "command":
        body = json.dumps(json_safe(draw(command_like()))).encode()
    elif kind == "escape":
        body = draw(st.sampled_from(JSON_ESCAPES)).encode()
    else:
        body = draw(st.binary(max_size=300))
    return path, body


def test_live_http_api_answers_every_fuzzed_body_per_the_contract(live: Live) -> None:
    import urllib.error
    import urllib.request

    offset = live.proc.log_path.stat().st_size
    ops = issue_token(live.secret, user="fuzzer", role="ops", now_s=int(time.time()), ttl_s=7200)
    base = live.ws.replace("ws://", "http://").removesuffix("/ws")
    seen: Counter[str] = Counter()

    @settings(settings.get_profile("lc-fuzz-live"), max_examples=EXAMPLES or 100)
    @given(http_bodies())
    def one(case: tuple[str, bytes]) -> None:
        path, body = case
        seen["cases"] += 1
        req = urllib.request.Request(base + path, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {ops}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        assert status < 500 or status == 503, (path, body[:200], status, raw[:300])
        if status >= 400:
            err = json.loads(raw)["error"]
            assert isinstance(err["code"], str) and err["code"] != "internal", err
            seen[f"{status}:{err['code']}"] += 1
        else:
            seen[str(status)] += 1

    one()
    assert live.proc.alive(), "the gateway process exited"
    bad = errors_logged_since(live, offset)
    assert not bad, bad[:3]
    print(f"\nhttp fuzz: {seen['cases']} cases: {dict(sorted(seen.items()))}")
