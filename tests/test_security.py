"""Who may do what, and what nobody gets past: over real HTTP and WebSocket connections.

* The security matrix: one parametrized table of (action x role) cells against a real
  ``livecommerce gateway`` process. Roles: ``anon`` (no token, HTTP only), ``viewer``,
  ``buyer`` (a viewer who owns the order/wallet in question), ``host`` (of the room),
  ``other_host`` (a host of another room) and ``ops``. Each cell gets a fresh room, so
  allowed cells succeed and denied ones must fail with 401 / 403 / 404 (orders of others
  are hidden) or the ``forbidden`` error frame.
* Tokens: expired, tampered, wrong secret, ``alg: none``, another algorithm, unknown role,
  replayed after expiry: close 4401 on the WebSocket, 401 over HTTP.
* Limits: HTTP bodies (413), frames (``frame_too_big``, 1009 beyond the transport limit),
  connections per IP and per user (also when they race), Origin allow-list.
* No secret or token in the logs (the gateway runs at DEBUG level); comment text is
  broadcast as data, unchanged (escaping is the pages' job: docs/security.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import msgpack
import pytest
import redis as sync_redis
import websockets

from livecommerce.auth import issue_token
from scripts.chaos_rush import Proc, free_port, gateway_proc, lc_env, wait_ready
from tests.waiting import wait_until
from tests.wsclient import Client


# ============================================================================ the world
@dataclass
class World:
    """A real gateway process (DEBUG logs to a file) with a room per matrix cell."""

    base: str
    ws: str
    secret: str
    proc: Proc
    tokens: list[str] = field(default_factory=list)  # every token handed out (grepped in the logs)

    def token(self, user: str, role: str = "viewer", rooms: tuple[str, ...] = (), ttl: int = 3600) -> str:
        tok = issue_token(self.secret, user=user, role=role, rooms=rooms, now_s=int(time.time()), ttl_s=ttl)
        self.tokens.append(tok)
        return tok

    @property
    def ops(self) -> str:
        return self.token("ops1", "ops")


@pytest.fixture(scope="module")
def world(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import asyncio as aio

    from livecommerce.migrations import upgrade

    work = tmp_path_factory.mktemp("security")
    db = f"sqlite+aiosqlite:///{work}/sec.db"
    aio.run(upgrade(db))
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    secret = "sec-" + secrets.token_hex(32)  # >= 64 bytes: the HS512 case signs with it too
    port = free_port()
    env = lc_env(redis_url=redis_url, key_prefix=prefix, database_url=db, secret=secret, log_json="1", log_level="DEBUG",
                 test_coins="1", dev_pay="1",
                 # the /ws transport the suite runs on (tests.conftest: LC_WS_TRANSPORT)
                 ws_transport=os.environ.get("LC_WS_TRANSPORT", "aiohttp"))  # the matrix holds viewers topping up their own wallet and the dev /pay
    proc = gateway_proc("gw-sec", port, env, work)
    proc.start()
    w = World(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws", secret, proc)
    try:
        aio.run(wait_ready(w.base, 60, proc))
        yield w
    finally:
        proc.stop()
        r = sync_redis.Redis.from_url(redis_url)
        for k in r.scan_iter(match=f"{prefix}:*", count=1000):
            r.delete(k)
        r.close()


async def call(w: World, method: str, path: str, tok: str | None, body: Any = None) -> tuple[int, Any]:
    hdrs = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with aiohttp.ClientSession() as http:
        r = await http.request(method, w.base + path, json=body, headers=hdrs)
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def ok(w: World, method: str, path: str, body: Any = None, tok: str | None = None) -> Any:
    status, data = await call(w, method, path, tok or w.ops, body)
    assert status < 300, (method, path, status, data)
    return data


@dataclass
class Cell:
    """What one cell needs: a fresh room (host ``host1``), a buyer's order in it, ids."""

    room: str
    sale: str = ""
    order: str = ""
    buyer: str = "buyer1"
    extra: dict[str, str] = field(default_factory=dict)


async def new_cell(w: World) -> Cell:
    c = Cell(room=f"r{uuid.uuid4().hex[:10]}")
    await ok(w, "POST", "/api/v1/rooms", {"id": c.room, "title": "matrix", "host": "host1"})
    await ok(w, "POST", "/api/v1/products", {"id": f"p{c.room}", "name": "Tea", "price": 990})
    return c


async def with_order(w: World, c: Cell) -> None:
    c.sale = f"s{c.room}"
    await ok(w, "POST", "/api/v1/campaigns", {"id": c.sale, "room": c.room, "product_id": f"p{c.room}", "price": 990,
                                              "stock": 10, "per_user_limit": 5, "starts_ms": int(time.time() * 1000) - 1000,
                                              "duration_s": 3600})
    r = await ok(w, "POST", f"/api/v1/sales/{c.sale}/buy", {"qty": 1, "request_id": "q1"}, tok=w.token(c.buyer))
    c.order = r["order_id"]


async def with_future_sale(w: World, c: Cell) -> None:
    c.sale = f"f{c.room}"
    await ok(w, "POST", "/api/v1/campaigns", {"id": c.sale, "room": c.room, "product_id": f"p{c.room}", "price": 990,
                                              "stock": 10, "starts_ms": int(time.time() * 1000) + 3_600_000, "duration_s": 600})


async def with_live_room(w: World, c: Cell) -> None:
    await ok(w, "POST", f"/api/v1/rooms/{c.room}/live")


def role_token(w: World, role: str, c: Cell) -> str | None:
    if role == "anon":
        return None
    return {
        "viewer": lambda: w.token("viewer1"),
        "buyer": lambda: w.token(c.buyer),
        "host": lambda: w.token("host1", "host", (c.room, c.room + "n")),
        "other_host": lambda: w.token("host2", "host", ("elsewhere",)),
        "ops": lambda: w.ops,
    }[role]()  # type: ignore[operator]


Prep = Callable[[World, Cell], Awaitable[None]]


@dataclass(frozen=True)
class Action:
    """One row of the matrix. ``http``: (method, path with {room} {sale} {order} {buyer});
    ``ws``: a command sent on a connection to the cell's room. ``allowed``: the roles that
    succeed; every other role is denied (``denied`` HTTP status; ``forbidden`` on the WS)."""

    name: str
    allowed: frozenset[str]
    http: tuple[str, str] | None = None
    ws: str | None = None
    body: Callable[[Cell], Any] = lambda c: None
    prep: tuple[Prep, ...] = ()
    denied: int = 403
    ok_codes: tuple[str, ...] = ()  # an error code that still means "allowed" (e.g. a 409 on state)
    needs: str = ""  # a route only some installations have (skip the row without it)


HOSTS = frozenset({"host", "ops"})
SELF = frozenset({"buyer", "ops"})
EVERYONE = frozenset({"viewer", "buyer", "host", "other_host", "ops"})
LOTTERY = {"prize": {"kind": "product", "id": "p1"}, "duration_s": 60, "rule": "enter"}
COUPON = {"kind": "full_reduction", "threshold": 5000, "value": 500, "quantity": 10}

ACTIONS = [
    # host actions over the WebSocket
    Action("ws pin", HOSTS, ws="pin", body=lambda c: {"product_id": f"p{c.room}"}),
    Action("ws sale.start", HOSTS, ws="sale.start", body=lambda c: {"sale_id": c.sale}, prep=(with_future_sale,)),
    Action("ws lottery.start", HOSTS, ws="lottery.start", body=lambda c: LOTTERY),
    Action("ws coupon.drop", HOSTS, ws="coupon.drop", body=lambda c: COUPON),
    Action("ws room.live", HOSTS, ws="room.live"),
    Action("ws room.end", HOSTS, ws="room.end", prep=(with_live_room,)),
    # what everyone in a room may do
    Action("ws comment", EVERYONE, ws="comment", body=lambda c: {"text": "hello"}),
    Action("ws buy", EVERYONE, ws="buy", body=lambda c: {"sale_id": c.sale, "qty": 1, "request_id": "m1"}, prep=(with_order,)),
    # host actions over HTTP
    Action("pin", HOSTS, http=("POST", "/api/v1/rooms/{room}/pin"), body=lambda c: {"product_id": f"p{c.room}"}),
    Action("unpin", HOSTS, http=("DELETE", "/api/v1/rooms/{room}/pin")),
    Action("go live", HOSTS, http=("POST", "/api/v1/rooms/{room}/live")),
    Action("end show", HOSTS, http=("POST", "/api/v1/rooms/{room}/end"), prep=(with_live_room,)),
    Action("announce", HOSTS, http=("POST", "/api/v1/rooms/{room}/announce"), body=lambda c: {"text": "hi"}),
    Action("create campaign", HOSTS, http=("POST", "/api/v1/campaigns"),
           body=lambda c: {"room": c.room, "product_id": "p1", "price": 100, "stock": 5, "starts_ms": int(time.time() * 1000) + 60_000,
                           "duration_s": 60}),
    Action("start sale", HOSTS, http=("POST", "/api/v1/sales/{sale}/start"), prep=(with_future_sale,)),
    Action("stop sale", HOSTS, http=("POST", "/api/v1/sales/{sale}/stop"), prep=(with_order,)),
    Action("sale stats", HOSTS, http=("GET", "/api/v1/sales/{sale}/stats"), prep=(with_order,)),
    Action("room campaigns", HOSTS, http=("GET", "/api/v1/campaigns?room={room}")),
    Action("all campaigns", frozenset({"ops"}), http=("GET", "/api/v1/campaigns")),
    Action("drop coupons", HOSTS, http=("POST", "/api/v1/rooms/{room}/coupons"), body=lambda c: COUPON),
    Action("start lottery", HOSTS, http=("POST", "/api/v1/rooms/{room}/lotteries"), body=lambda c: LOTTERY),
    Action("create room", frozenset({"host", "ops"}), http=("POST", "/api/v1/rooms"), body=lambda c: {"id": c.room + "n"}),
    Action("create product", frozenset({"host", "other_host", "ops"}), http=("POST", "/api/v1/products"),
           body=lambda c: {"name": "Cup", "price": 100}),
    # a buyer's own things
    Action("list a user's orders", SELF, http=("GET", "/api/v1/orders?user={buyer}")),
    Action("read an order", SELF, http=("GET", "/api/v1/orders/{order}"), prep=(with_order,), denied=404),
    Action("pay an order", SELF, http=("POST", "/api/v1/orders/{order}/pay"), body=lambda c: {}, prep=(with_order,), denied=404),
    Action("cancel an order", SELF, http=("POST", "/api/v1/orders/{order}/cancel"), prep=(with_order,), denied=404),
    Action("top up a wallet", SELF, http=("POST", "/api/v1/wallets/{buyer}/topup"),
           body=lambda c: {"amount": 100, "idempotency_key": uuid.uuid4().hex}, needs="/api/v1/wallets/x"),
    Action("read a wallet", SELF, http=("GET", "/api/v1/wallets/{buyer}"), needs="/api/v1/wallets/x"),
    Action("read a wallet ledger", SELF, http=("GET", "/api/v1/wallets/{buyer}/ledger"), needs="/api/v1/wallets/x"),
    Action("read points", SELF, http=("GET", "/api/v1/points/{buyer}/ledger"), needs="/api/v1/points/x"),
    Action("redeem points", frozenset({"buyer"}), http=("POST", "/api/v1/points/{buyer}/redeem"),
           body=lambda c: {"value": 100, "request_id": "x1"}, ok_codes=("insufficient_points",), needs="/api/v1/points/x"),
    Action("read coupons", SELF, http=("GET", "/api/v1/users/{buyer}/coupons"), needs="/api/v1/users/x/coupons"),
    # ops endpoints
    Action("ops overview", frozenset({"ops"}), http=("GET", "/api/v1/ops/overview"), needs="/api/v1/ops/overview"),
    Action("ops alerts", frozenset({"ops"}), http=("GET", "/api/v1/ops/alerts"), needs="/api/v1/ops/overview"),
    Action("ops inventory report", frozenset({"ops"}), http=("GET", "/api/v1/ops/inventory/{sale}"), prep=(with_order,),
           needs="/api/v1/ops/overview"),
]


def cells() -> list[Any]:
    out = []
    for a in ACTIONS:
        for role in (["anon"] if a.http else []) + ["viewer", "buyer", "host", "other_host", "ops"]:
            verdict = "allowed" if role in a.allowed else "denied"
            out.append(pytest.param(a, role, id=f"{a.name}-{role}-{verdict}"))
    return out


async def installed(w: World, path: str) -> bool:
    """A route is installed when it does not answer aiohttp's plain-text 404."""
    status, data = await call(w, "GET", path, w.ops)
    return not (status in (404, 405) and not isinstance(data, dict))


@pytest.mark.parametrize(("action", "role"), cells())
async def test_security_matrix(world: World, action: Action, role: str) -> None:
    if action.needs and not await installed(world, action.needs):
        pytest.skip(f"{action.needs} is not installed in this build")
    c = await new_cell(world)
    for prep in action.prep:
        await prep(world, c)
    tok = role_token(world, role, c)
    allowed = role in action.allowed
    if action.http:
        method, path = action.http
        status, data = await call(world, method, path.format(room=c.room, sale=c.sale, order=c.order, buyer=c.buyer),
                                  tok, action.body(c))
        code = data.get("error", {}).get("code") if isinstance(data, dict) else None
        if allowed:
            assert status < 300 or code in action.ok_codes, (status, data)
        elif role == "anon":
            assert (status, code) == (401, "unauthorized"), (status, data)
        else:
            assert status == action.denied and code == {403: "forbidden", 404: "not_found"}[action.denied], (status, data)
        return
    assert tok is not None and action.ws is not None
    client = await Client.connect(world.ws, c.room, tok, fmt="json")
    try:
        reply = await client.request(action.ws, **(action.body(c) or {}))
    finally:
        await client.close()
    if allowed:
        assert reply["t"] != "error", reply
    else:
        assert reply["t"] == "error" and reply["d"]["code"] == "forbidden", reply


async def test_a_denied_host_action_changes_nothing(world: World) -> None:
    c = await new_cell(world)
    await with_future_sale(world, c)
    watcher = await Client.connect(world.ws, c.room, world.token("watcher"), fmt="json")
    intruder = await Client.connect(world.ws, c.room, world.token("host2", "host", ("elsewhere",)), fmt="json")
    for t, d in [("pin", {"product_id": f"p{c.room}"}), ("sale.start", {"sale_id": c.sale}), ("lottery.start", LOTTERY),
                 ("coupon.drop", COUPON), ("room.live", {})]:
        assert (await intruder.request(t, **d))["d"]["code"] == "forbidden"
    await ok(world, "POST", f"/api/v1/rooms/{c.room}/announce", {"text": "marker"})
    e = await watcher.next_event(5)
    assert (e["t"], e["d"]["text"]) == ("notice", "marker"), e  # nothing was broadcast before it
    stats = await ok(world, "GET", f"/api/v1/sales/{c.sale}/stats")
    assert stats["state"] == "scheduled"
    await intruder.close()
    await watcher.close()


# ============================================================================ tokens
def b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def bad_tokens(w: World) -> dict[str, str | None]:
    now = int(time.time())
    claims = {"sub": "mallory", "role": "viewer", "rooms": [], "iat": now, "exp": now + 3600}
    good = jwt.encode(claims, w.secret, algorithm="HS256")
    h, p, s = good.split(".")
    return {
        "missing": None,
        "garbage": "not-a-jwt",
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, w.secret, algorithm="HS256"),
        "tampered payload (viewer -> ops)": f"{h}.{b64({**claims, 'role': 'ops'})}.{s}",
        "tampered signature": f"{h}.{p}.{s[:-4]}{'AAAA' if not s.endswith('AAAA') else 'BBBB'}",
        "wrong secret": jwt.encode(claims, "not-the-secret-" + "x" * 32, algorithm="HS256"),
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({**claims, 'role': 'ops'})}.",
        "alg HS512 (not allowed)": jwt.encode(claims, w.secret, algorithm="HS512"),
        "unknown role": jwt.encode({**claims, "role": "admin"}, w.secret, algorithm="HS256"),
        "no expiry": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, w.secret, algorithm="HS256"),
        "oversized": good + "A" * 5000,
    }


BAD_TOKEN_CASES = ["missing", "garbage", "expired", "tampered payload (viewer -> ops)", "tampered signature", "wrong secret",
                   "alg none", "alg HS512 (not allowed)", "unknown role", "no expiry", "oversized"]


async def ws_refused_with_4401(w: World, tok: str | None) -> None:
    url = f"{w.ws}?room=tok&format=json" + (f"&token={tok}" if tok is not None else "")
    async with websockets.connect(url, max_size=None) as ws:
        frames = []
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    frames.append(json.loads(await ws.recv()))
    assert ws.close_code == 4401, (ws.close_code, frames)
    assert [f["t"] for f in frames] == ["error"] and frames[0]["d"]["code"] == "unauthorized", frames


@pytest.mark.parametrize("case", BAD_TOKEN_CASES)
async def test_bad_tokens_are_refused_on_ws_and_http(world: World, case: str) -> None:
    tok = bad_tokens(world)[case]
    if tok is not None:
        world.tokens.append(tok)
    await ws_refused_with_4401(world, tok)
    status, data = await call(world, "GET", "/api/v1/orders", tok)
    assert status == 401 and data["error"]["code"] == "unauthorized", (status, data)


async def test_a_token_replayed_after_expiry_is_refused(world: World) -> None:
    tok = world.token("shortlived", ttl=1)
    c = await Client.connect(world.ws, "tok", tok, fmt="json")  # works while valid
    await c.close()
    assert (await call(world, "GET", "/api/v1/orders", tok))[0] == 200
    await asyncio.sleep(max(0.0, jwt.decode(tok, options={"verify_signature": False})["exp"] - time.time()) + 0.1)
    await ws_refused_with_4401(world, tok)
    assert (await call(world, "GET", "/api/v1/orders", tok))[0] == 401


# ============================================================================ limits
async def test_big_http_bodies_get_413(world: World) -> None:
    status, data = await call(world, "POST", "/api/v1/campaigns", world.ops, {"pad": "x" * 100_000})
    assert status == 413 and data["error"]["code"] == "frame_too_big", (status, data)
    status, data = await call(world, "POST", "/api/v1/campaigns", world.ops, {"pad": "x" * 300_000})
    assert status == 413 and data["error"]["code"] == "frame_too_big", (status, data)

    async def chunks() -> Any:  # no Content-Length: the limit holds while reading
        for _ in range(100):
            yield b"x" * 1024

    async with aiohttp.ClientSession() as http:
        r = await http.post(world.base + "/api/v1/rooms/x/announce", data=chunks(), headers={"Authorization": f"Bearer {world.ops}"})
        assert r.status == 413 and (await r.json())["error"]["code"] == "frame_too_big"
    status, _ = await call(world, "GET", "/readyz", None)
    assert status == 200


async def test_frames_over_the_limit_get_frame_too_big_and_far_over_it_close_1009(world: World) -> None:
    c = await Client.connect(world.ws, "frames", world.token("big"), fmt="json")
    await c.ws.send(json.dumps({"t": "comment", "id": 1, "d": {"text": "x" * 20_000}}))
    reply = await c.next_frame(5)
    assert reply["t"] == "error" and reply["d"]["code"] == "frame_too_big", reply
    assert (await c.request("ping"))["t"] == "pong"  # the connection is still good
    await c.ws.send(msgpack.packb({"t": "comment", "d": {"text": "x" * 70_000}}))
    with pytest.raises(websockets.ConnectionClosed):
        await c.next_frame(5)
    assert c.ws.close_code == 1009


async def test_connections_per_ip_are_limited_even_when_they_race(gateway_factory, token) -> None:
    node = await gateway_factory(max_conns_per_ip=3)
    urls = [f"{node.ws}?room=ip&format=json&token={token(f'u{i}')}" for i in range(10)]
    opened: list[Any] = []

    async def one(url: str) -> int | str:
        try:
            ws = await websockets.connect(url)
        except websockets.InvalidStatus as exc:
            return exc.response.status_code
        opened.append(ws)
        try:
            async with asyncio.timeout(5):
                return json.loads(await ws.recv())["t"]  # type: ignore[no-any-return]
        except websockets.ConnectionClosed:
            return ws.close_code or 0

    results = await asyncio.gather(*(one(u) for u in urls))
    assert results.count("welcome") == 3 and results.count(429) == 7, results
    for ws in opened:
        await ws.close()
    await wait_until(lambda: dict(node.gw.hub.by_ip), until=lambda by_ip: not by_ip, what="the gateway to free every per-IP slot")
    assert await one(urls[0]) == "welcome"  # a freed slot can be used again
    for ws in opened:
        await ws.close()


async def test_connections_per_user_are_limited_even_when_they_race(gateway_factory, token) -> None:
    node = await gateway_factory(max_conns_per_user=2)
    url = f"{node.ws}?room=usr&format=json&token={token('same')}"
    opened: list[Any] = []

    async def one() -> int | str:
        ws = await websockets.connect(url)
        opened.append(ws)
        try:
            async with asyncio.timeout(5):
                return json.loads(await ws.recv())["t"]  # type: ignore[no-any-return]
        except websockets.ConnectionClosed:
            return ws.close_code or 0

    results = await asyncio.gather(*(one() for _ in range(8)))
    assert results.count("welcome") == 2 and results.count(4429) == 6, results
    other = await websockets.connect(f"{node.ws}?room=usr&format=json&token={token('someone-else')}")
    assert json.loads(await other.recv())["t"] == "welcome"
    for ws in [*opened, other]:
        await ws.close()


async def test_origin_is_checked_when_an_allow_list_is_set(gateway_factory, token) -> None:
    node = await gateway_factory(allowed_origins="https://shop.example, https://m.shop.example")
    url = f"{node.ws}?room=orig&format=json&token={token('o')}"
    for origin, want in [("https://shop.example", "welcome"), ("https://m.shop.example", "welcome"),
                         ("https://evil.example", 403), ("null", 403), (None, 403)]:
        kw = {"origin": origin} if origin else {}
        try:
            ws = await websockets.connect(url, **kw)
        except websockets.InvalidStatus as exc:
            got: int | str = exc.response.status_code
        else:
            got = json.loads(await ws.recv())["t"]
            await ws.close()
        assert got == want, (origin, got)
    open_node = await gateway_factory()  # no allow-list: any origin (native apps send none)
    ws = await websockets.connect(f"{open_node.ws}?room=orig&format=json&token={token('o')}", origin="https://anything.example")
    assert json.loads(await ws.recv())["t"] == "welcome"
    await ws.close()


# ============================================================================ data, logs
async def test_comment_text_is_broadcast_as_data_unchanged(world: World) -> None:
    room = f"x{uuid.uuid4().hex[:8]}"
    text = '<script>alert("x")</script><img src=x onerror=alert(1)> &amp; \u202e {{7*7}} ${7*7}'
    reader = await Client.connect(world.ws, room, world.token("reader"), fmt="json")
    writer = await Client.connect(world.ws, room, world.token("writer"))
    ack = await writer.request("comment", text=text)
    assert ack["t"] == "ack", ack
    e = await reader.next_event(5)
    while e["t"] != "comment":
        e = await reader.next_event(5)
    assert e["d"]["text"] == text  # a JSON string: the page must render it as text, never as HTML
    await reader.close()
    await writer.close()


async def test_no_secret_or_token_reaches_the_logs(world: World) -> None:
    # exercise the paths that see tokens: good and bad ones, WS and HTTP, errors
    good = world.token("logged-user")
    c = await Client.connect(world.ws, "logs", good, fmt="json")
    await c.request("comment", text="hello")
    await c.close()
    for case, tok in bad_tokens(world).items():
        if tok is not None:
            world.tokens.append(tok)
            with contextlib.suppress(Exception):
                await ws_refused_with_4401(world, tok)
            await call(world, "GET", f"/api/v1/orders?token={tok}", None)
            await call(world, "GET", "/api/v1/orders", tok)
        assert case
    await call(world, "POST", "/api/v1/campaigns", good, {"bad": True})

    def closed_logged() -> tuple[list[int], set[int]]:  # the last line this test makes the process write
        events = []
        for line in world.proc.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        events = [e for e in events if isinstance(e, dict)]
        opened = [e["conn"] for e in events if e.get("event") == "conn.open" and e.get("user") == "logged-user"]
        return opened, {e["conn"] for e in events if e.get("event") == "conn.close"}

    await wait_until(closed_logged, until=lambda got: got[0] and set(got[0]) <= got[1], what="conn.close of logged-user's connection in the log")
    text = world.proc.log_path.read_text(errors="replace")
    assert '"level": "debug"' in text or '"level": "info"' in text, "the gateway logged nothing: the check would be void"
    assert world.secret not in text
    leaked = [t for t in set(world.tokens) if t in text or (t.split(".")[-1] in text and len(t.split(".")[-1]) > 16)]
    assert not leaked, f"{len(leaked)} tokens in the logs, e.g. {leaked[0][:40]}..."
    errors = [line for line in text.splitlines() if '"level": "error"' in line or line.startswith("Traceback")]
    assert not errors, errors[:3]


def test_matrix_size() -> None:
    n = len(cells())
    assert n >= 150, n  # roles x actions: keep the table growing with the API
