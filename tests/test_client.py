"""``livecommerce.client`` against real gateways.

* its operation table is the OpenAPI document the gateway serves, and every typed method is
  named after one of its operations;
* error answers become the class of their status with the wire's code and message (400,
  401, 403, 404, 409, 422), and a balancer's page without the JSON body still maps;
* a money call whose answer was lost on the way back (a real TCP proxy cutting the first
  connection after the gateway answered) is retried with the same key and gets the first
  answer, paying once; a 4xx and a call that is not safe to repeat are not retried;
* ``/ws`` in JSON and msgpack: ``welcome``, replies to commands matched by id (``ack``,
  ``order.reserved``, ``error`` frames as CommandError), events from ``batch`` frames; the
  cart's commands (a refusal's line in CommandError's details);
  a refused token, a refused handshake and a flooding client's close are reported with
  their close code or status at once;
* ``seq`` gaps, counted without I/O.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.openapi import document
from livecommerce import errors as server
from livecommerce.client import (
    NO_RETRY,
    BadRequest,
    Client,
    Closed,
    CommandError,
    Conflict,
    ConnectRefused,
    Forbidden,
    IdempotencyConflict,
    LiveSocket,
    NotFound,
    RetryPolicy,
    TransportError,
    Unauthorized,
    Unavailable,
    call,
)
from livecommerce.client.errors import error_from
from livecommerce.client.operations import OPERATIONS
from livecommerce.client.wire import RESEED_JUMP, SeqTracker, event_items, ws_url
from tests.fixtures_gateway import GatewayFactory, Node
from tests.waiting import wait_until

FAST = RetryPolicy(first_min_s=0.01, first_max_s=0.02, max_delay_s=0.05, budget_s=5.0)


@pytest.fixture
async def node(gateway_factory: GatewayFactory) -> Node:
    return await gateway_factory()


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


# ---------------------------------------------------------------------------- the table
async def test_the_operation_table_is_the_document_the_gateway_serves(node: Node) -> None:
    from gateway.openapi import IDEMPOTENT_BY_BODY, IDEMPOTENT_BY_HEADER

    async with Client(node.url) as api:
        served = await api.invoke("openapiOpenapiJson")
    want = {}
    for path, methods in served["paths"].items():
        for method, spec in methods.items():
            key = "header" if (method, path) in IDEMPOTENT_BY_HEADER else "body" if (method, path) in IDEMPOTENT_BY_BODY else None
            want[spec["operationId"]] = (method.upper(), path, key)
    have = {oid: (op.method, op.path, op.key) for oid, op in OPERATIONS.items()}
    table = "\n".join(f'    "{oid}": Op("{m}", "{p}"' + (f', key="{k}"' if k else "") + "),"
                      for oid, (m, p, k) in sorted(want.items()))
    assert have == want, f"livecommerce/client/operations.py is stale; its OPERATIONS are now:\n{table}"
    assert served["paths"] == document()["paths"]  # the served document is the one gateway/openapi.py builds


def test_every_typed_method_is_named_after_an_operation() -> None:
    plumbing = {"send", "invoke", "close", "as_user"}
    named = [n for n, f in inspect.getmembers(Client, inspect.iscoroutinefunction) if not n.startswith("_") and n not in plumbing]
    assert len(named) > 30
    assert [n for n in named if _camel(n) not in OPERATIONS] == []


def test_a_call_fills_its_path_and_refuses_what_the_operation_does_not_take() -> None:
    c = call("ordersPayOrder", order="s1.o/2", body={}, idempotency_key="k1")
    assert (c.method, c.path, c.name, c.headers) == ("POST", "/api/v1/orders/s1.o%2F2/pay", "/api/v1/orders/{order}/pay",
                                                     {"Idempotency-Key": "k1"})
    assert c.safe_to_retry and call("salesBuy", sale="s", body={}).safe_to_retry and call("roomsGet", room="r").safe_to_retry
    assert not call("commentsAnnounce", room="r", body={}).safe_to_retry
    assert not call("ordersPayOrder", order="o", body={}).safe_to_retry  # no key: a retry could pay twice
    with pytest.raises(ValueError, match="request_id"):
        call("salesBuy", sale="s", idempotency_key="k")
    with pytest.raises(ValueError, match="path parameters"):
        call("roomsGet")
    with pytest.raises(ValueError, match="no operation"):
        call("roomsExplode", room="r")


# ---------------------------------------------------------------------------- errors
async def _sale(node: Node, token: Callable[..., str], *, stock: int = 5) -> tuple[str, str]:
    room, sale = f"r{uuid.uuid4().hex[:6]}", f"s{uuid.uuid4().hex[:6]}"
    async with Client(node.url, token("host1", "host", rooms=(room,))) as host:
        await host.rooms_create({"id": room, "title": "client test"})
        await host.rooms_live(room)
        now = int(time.time() * 1000)
        created = await host.sales_create_campaigns({"id": sale, "room": room, "product_id": "p1", "price": 1999, "stock": stock,
                                                     "per_user_limit": 1, "starts_ms": now - 1000, "duration_s": 600})
        assert created[0]["sale_id"] == sale
    return room, sale


async def test_error_answers_carry_their_status_code_and_message(node: Node, token: Callable[..., str]) -> None:
    room, sale = await _sale(node, token)
    async with Client(node.url, token("v1"), retry=NO_RETRY) as viewer:
        with pytest.raises(NotFound) as nf:
            await viewer.rooms_get("no-such-room")
        assert (nf.value.status, nf.value.code) == (404, "not_found") and nf.value.message
        assert isinstance(nf.value, server.NotFound)  # the server's tree catches it too

        with pytest.raises(BadRequest) as bad:
            await viewer.sales_buy(sale, request_id="r1", qty=0)
        assert (bad.value.status, bad.value.code) == (400, "invalid") and "qty" in bad.value.message

        with pytest.raises(Forbidden) as fb:
            await viewer.rooms_live(room)
        assert (fb.value.status, fb.value.code) == (403, "forbidden")

        with pytest.raises(Unauthorized) as ua:
            await viewer.as_user("not-a-token").orders_list_orders()
        assert (ua.value.status, ua.value.code) == (401, "unauthorized")

        first = await viewer.sales_buy(sale, request_id="r1")
        again = await viewer.sales_buy(sale, request_id="r1")
        assert again["order_id"] == first["order_id"] and again["duplicate"] is True
        with pytest.raises(IdempotencyConflict) as ic:
            await viewer.sales_buy(sale, request_id="r1", qty=2)
        assert (ic.value.status, ic.value.code) == (422, "idempotency_conflict") and not ic.value.retryable
        with pytest.raises(Conflict) as lim:
            await viewer.sales_buy(sale, request_id="r2")
        assert (lim.value.status, lim.value.code) == (409, "limit_reached")

        answer = await viewer.send(call("roomsGet", room="no-such-room"), check=False)
        assert answer.status == 404 and answer.body["error"]["code"] == "not_found"


def test_an_answer_without_the_json_error_body_still_maps() -> None:
    page = "<html><body><h1>503 Service Unavailable</h1>No server is available.</body></html>"
    exc = error_from(503, page)
    assert isinstance(exc, Unavailable) and exc.code == "unavailable" and exc.retryable and "No server" in exc.message
    other = error_from(502, b"")
    assert (other.status, other.code, other.retryable) == (502, "internal", False)
    limited = error_from(429, '{"error": {"code": "slow_mode", "message": "wait", "retry_after_s": 6.2}}')
    assert (limited.code, dict(limited.details)) == ("slow_mode", {"retry_after_s": 6.2})
    in_flight = error_from(409, '{"error": {"code": "idempotency_in_flight", "message": "retry in a moment"}}')
    assert in_flight.retryable and not error_from(409, '{"error": {"code": "sold_out", "message": ""}}').retryable


# ---------------------------------------------------------------------------- retries
class CuttingProxy:
    """A TCP proxy in front of a gateway that, for its first ``cut`` connections, passes the
    request on, waits for the gateway's answer and closes the client's side without it: the
    request ran, its answer was lost."""

    def __init__(self, upstream_port: int, cut: int) -> None:
        self.upstream_port, self.cut = upstream_port, cut
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        cutting = self.connections <= self.cut
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter | None) -> None:
            while data := await src.read(65536):
                if dst is None:
                    return  # the answer came: drop it
                dst.write(data)
                await dst.drain()

        to_up = asyncio.create_task(pipe(reader, up_w))
        try:
            await pipe(up_r, None if cutting else writer)
        finally:
            to_up.cancel()
            for w in (writer, up_w):
                w.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxy_for(node: Node) -> AsyncIterator[Callable[[int], Any]]:
    made: list[CuttingProxy] = []

    async def make(cut: int) -> tuple[CuttingProxy, aiohttp.ClientSession]:
        p = CuttingProxy(int(node.url.rsplit(":", 1)[1]), cut)
        made.append(p)
        return p, aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))  # a connection per request

    yield make
    for p in made:
        await p.stop()


async def test_a_payment_whose_answer_was_lost_is_retried_with_its_key_and_pays_once(
        node: Node, token: Callable[..., str], proxy_for: Callable[[int], Any]) -> None:
    _, sale = await _sale(node, token)
    tok = token("payer")
    async with Client(node.url, tok) as direct:
        order = (await direct.sales_buy(sale, request_id="b1"))["order_id"]
    proxy, session = await proxy_for(1)
    base = await proxy.start()
    async with session:
        api = Client(base, tok, session=session, retry=FAST)
        answer = await api.send(call("ordersPayOrder", order=order, body={}, idempotency_key="pay-1"))
        assert answer.attempts == 2 and proxy.connections == 2
        assert answer.status == 200 and answer.body["outcome"] == "paid" and answer.replayed  # the first attempt's answer
        async with Client(node.url, tok) as direct:
            got = await direct.orders_get_order(order)
            assert got["hold"]["state"] == "paid"
            ledger = await direct.orders_pay_order(order, "pay-1")  # the key keeps answering the first payment
            assert ledger["outcome"] == "paid"

        # not safe to repeat (no key): one attempt, the lost answer is the caller's to handle
        proxy.cut, proxy.connections = 1, 0
        with pytest.raises(TransportError) as lost:
            await api.comments_announce("any", "hello")
        assert proxy.connections == 1 and lost.value.retryable

        # a 4xx is final
        proxy.cut, proxy.connections = 0, 0
        with pytest.raises(NotFound):
            await api.orders_pay_order("no-such-order", "pay-2")
        assert proxy.connections == 1


async def test_a_gateway_that_never_answers_exhausts_the_budget_with_a_transport_error() -> None:
    server_ = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)  # accepts, then hangs up
    port = server_.sockets[0].getsockname()[1]
    try:
        async with Client(f"http://127.0.0.1:{port}", retry=RetryPolicy(0.001, 0.002, 0.004, budget_s=0.05)) as api:
            with pytest.raises(TransportError):
                await api.health_healthz()
    finally:
        server_.close()
        await server_.wait_closed()


# ---------------------------------------------------------------------------- /ws
async def test_the_socket_reaches_the_cart(node: Node, token: Callable[..., str]) -> None:
    room = f"r{uuid.uuid4().hex[:6]}"
    async with Client(node.url, token("host1", "host", rooms=(room,))) as host:
        await host.catalog_create({"id": "cup", "name": "Cup", "skus": [
            {"id": "s", "attrs": {"size": "s"}, "price": 300, "stock": 2},
            {"id": "l", "attrs": {"size": "l"}, "price": 400, "stock": 2}]})
    live = await LiveSocket.connect(node.url, room, token("vc"), fmt="msgpack")
    try:
        assert (await live.cart_get())["lines"] == []
        cart = await live.cart_add("cup", "s", qty=2)
        assert [(ln["sku"], ln["qty"]) for ln in cart["lines"]] == [("s", 2)]
        await live.cart_add("cup", "l")
        assert [ln["qty"] for ln in (await live.cart_set("cup", "s", 1))["lines"]] == [1, 1]
        assert [ln["sku"] for ln in (await live.cart_remove("cup", "l"))["lines"]] == ["s"]
        order = await live.cart_checkout("c-1")
        assert (order["amount"], order["duplicate"]) == (300, False)
        assert (await live.cart_checkout("c-1"))["order_id"] == order["order_id"]
        with pytest.raises(CommandError) as refused:
            await live.cart_checkout("c-2", lines=[{"product_id": "cup", "sku": "l", "qty": 3}])
        assert refused.value.code == "sold_out" and refused.value.details == {"product_id": "cup", "sku": "l"}
        await live.cart_add("cup", "l")
        assert (await live.cart_clear())["lines"] == []
    finally:
        await live.close()


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_a_socket_gets_welcome_replies_by_id_and_events_from_batches(
        node: Node, token: Callable[..., str], fmt: Any) -> None:
    room, sale = await _sale(node, token, stock=1)
    a = await LiveSocket.connect(node.url, room, token("va"), fmt=fmt)
    b = await LiveSocket.connect(node.ws, room, token("vb"), fmt=fmt)  # a ws:// URL works too
    try:
        assert a.welcome["user"] == "va" and a.welcome["role"] == "viewer"
        ack = await a.command("comment", {"text": "hello"})
        assert ack["t"] == "ack"
        seen = await b.next_event("comment")
        assert seen["d"]["text"] == "hello" and seen["room"] == room and isinstance(seen["seq"], int)

        reserved = await a.buy(sale, request_id="w1")
        assert reserved["order_id"] and (await a.buy(sale, request_id="w1"))["order_id"] == reserved["order_id"]
        with pytest.raises(CommandError) as sold:
            await b.buy(sale, request_id="w2")
        assert sold.value.code == "sold_out" and sold.value.reply["t"] == "error"
        with pytest.raises(CommandError) as unknown:
            await a.command("explode")
        assert unknown.value.code == "unknown_type"
        with pytest.raises(CommandError) as invalid:
            await a.comment("")
        assert invalid.value.code == "invalid"
        assert (await a.ping()) is not None

        await wait_until(lambda: b.seq.last is not None and b.seq.last >= seen["seq"], what="b's seq")
        assert b.seq.gaps == 0 and a.seq.gaps == 0
    finally:
        await a.close()
        await b.close()
    assert a.closed and not a.dropped and a.close_code == 1000


async def test_a_refused_token_is_reported_with_its_close_code_at_once(node: Node, token: Callable[..., str]) -> None:
    with pytest.raises(ConnectRefused) as bad:
        await LiveSocket.connect(node.url, "demo", token("v1", secret="another-secret-of-at-least-32-bytes!!"),
                                 fmt="json", timeout_s=60)
    assert (bad.value.close_code, bad.value.code) == (4401, "unauthorized"), str(bad.value)
    assert "4401" in str(bad.value) and not bad.value.retryable


async def test_a_refused_handshake_is_reported_with_its_status_and_code(node: Node, token: Callable[..., str]) -> None:
    with pytest.raises(ConnectRefused) as bad:
        await LiveSocket.connect(node.url, "no room!", token("v1"))
    assert (bad.value.status, bad.value.close_code) == (400, 0) and bad.value.code in ("invalid", "bad_request"), str(bad.value)
    with pytest.raises(ConnectRefused) as nobody:
        await LiveSocket.connect("http://127.0.0.1:9", "demo", token("v1"))  # nothing listens on port 9
    assert nobody.value.code == "transport" and nobody.value.retryable


async def test_a_flooding_socket_is_closed_and_its_waiting_commands_fail_with_the_close(
        gateway_factory: GatewayFactory, token: Callable[..., str]) -> None:
    node = await gateway_factory(comment_rate=0.001, comment_burst=1, flood_strikes=3)
    live = await LiveSocket.connect(node.url, "flood", token("f1"), fmt="json")
    codes = []
    with pytest.raises(Closed) as closed:
        for i in range(50):
            try:
                await live.comment(f"c{i}")
                codes.append("ack")
            except CommandError as exc:
                codes.append(exc.code)
    assert "rate_limited" in codes
    assert closed.value.close_code == 4429 and live.dropped and live.close_code == 4429
    with pytest.raises(Closed):
        await live.ping()
    async for _ in live.events():  # what came before the close, then the iterator ends
        pass


async def test_a_socket_closed_by_a_draining_gateway_resumes_on_another_without_missing_an_event(
        gateway_factory: GatewayFactory, token: Callable[..., str]) -> None:
    from gateway.app import close_clients

    a, b = await gateway_factory(), await gateway_factory()
    room = f"dr{uuid.uuid4().hex[:6]}"
    seen: list[str] = []
    live = await LiveSocket.connect(a.url, room, token("v1"), fmt="msgpack")
    live.on("notice", lambda e: seen.append(e["d"]["text"]))
    async with Client(b.url, token("h1", "host", rooms=(room,))) as host:
        await host.rooms_create({"id": room})
        await host.comments_announce(room, "before")
        await wait_until(lambda: seen == ["before"], what="the first notice")
        assert await close_clients(a.gw) == 1  # SIGTERM's drain: every viewer closed with 1012
        closed = await live.wait_closed()
        assert (closed.close_code, closed.retryable, live.dropped) == (1012, True, True)
        await host.comments_announce(room, "while away")  # published while the viewer is on no node
        moved = await live.reconnect(base_url=b.url, retry=FAST)
        try:
            assert moved.welcome["recovered"] is True and moved.welcome["node"] == b.settings.node_id
            await host.comments_announce(room, "after")
            await wait_until(lambda: seen == ["before", "while away", "after"], what="every notice, once")
            assert moved.seq.gaps == 0
            with pytest.raises(ConnectRefused) as final:  # a refusal the contract does not retry
                await moved.reconnect(token=token("v1", secret="another-secret-of-at-least-32-bytes!!"), retry=FAST)
            assert final.value.close_code == 4401
        finally:
            await moved.close()


# ---------------------------------------------------------------------------- no I/O
def test_seq_gaps_count_missed_events_but_not_a_reseeded_sequence_or_a_replay() -> None:
    s = SeqTracker()
    s.welcome(100)
    assert [s.see(n) for n in (101, 102, 105, 104, 106)] == [0, 0, 2, 0, 0]
    assert s.gaps == 2 and s.last == 106
    assert s.see(106 + RESEED_JUMP + 5) == 0 and s.gaps == 2  # seeded again after lost history
    fresh = SeqTracker()
    fresh.welcome(0)  # a room without history: the first event sets the base
    assert fresh.see(7_000_001) == 0 and fresh.see(7_000_003) == 1


def test_batch_items_and_urls() -> None:
    batch = {"t": "batch", "room": "r", "items": [{"t": "comment", "seq": 1}, {"t": "ack", "id": 3}, "junk"]}
    assert event_items(batch) == [{"t": "comment", "seq": 1}, {"t": "ack", "id": 3}]
    assert event_items({"t": "notice"}) == [{"t": "notice"}]
    assert ws_url("https://h:1/", "r 1", "t", "json", since=5) == "wss://h:1/ws?room=r+1&token=t&format=json&since=5"
    assert ws_url("ws://h/ws", "r", "t") == "ws://h/ws?room=r&token=t&format=msgpack"


# ---------------------------------------------------------------------------- the CLI on the client
async def test_lottery_verify_names_the_gateways_error_by_code(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    from livecommerce import cli

    assert await asyncio.to_thread(cli.main, ["lottery", "verify", f"{node.url}/api/v1/lotteries/no-such-lottery"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 404 not_found" in err, err


def _readme_example() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## The Python client (`livecommerce.client`)", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readme_example_runs(node: Node, token: Callable[..., str], capsys: pytest.CaptureFixture[str]) -> None:
    code = _readme_example()
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    room = f"readme{uuid.uuid4().hex[:6]}"
    await scope["show"](node.url, token("host1", "host", rooms=(room,)), token("reader"), room)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("welcome reader seq ") and out[1:] == ["second buy: limit_reached", "paid 1499"], out
