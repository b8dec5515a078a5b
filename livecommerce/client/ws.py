"""The asyncio WebSocket client of the wire contract (README.md, "Wire contract"), over the
``websockets`` package.

:meth:`LiveSocket.connect` returns once ``welcome`` came, or raises
:class:`~livecommerce.client.errors.ConnectRefused` at once with what refused it: the
handshake's status and error body (400, 403, 429, 503), or the close code and reason and
the error frame before it (4401 ``unauthorized``, 4403 ``banned``, 4429). A reader task
then sorts every frame, JSON or msgpack, ``batch`` items one by one: a reply (it carries a
command's ``id``) resolves that command, anything else is a room event or a private push,
counted by ``seq`` (:class:`~livecommerce.client.wire.SeqTracker`), given to the handlers
of its type and queued for :meth:`LiveSocket.events`. Commands answer their reply, or raise
:class:`~livecommerce.client.errors.CommandError` with the ``error`` reply's code
(``sold_out``, ``rate_limited`` ...). :meth:`LiveSocket.reconnect` resumes a closed socket
with ``since=`` on docs/deploy.md's back-off (a draining gateway's 1012, a drop).

::

    async with await LiveSocket.connect("http://127.0.0.1:8080", "demo", token, fmt="json") as live:
        order = await live.buy("tea-rush", request_id="r-1")       # order.reserved's d
        async for event in live.events():                          # until the socket closes
            print(event["t"], event.get("seq"))
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from .errors import Closed, CommandError, ConnectRefused, error_body
from .retry import CONTRACT, RetryPolicy
from .wire import (
    RESEED_JUMP,
    CommandIds,
    Format,
    SeqTracker,
    command_frame,
    decode,
    encode,
    event_items,
    is_reply,
    reply_error,
    ws_url,
)

log = logging.getLogger("livecommerce.client")

Handler = Callable[[dict[str, Any]], None]


class LiveSocket:
    """One connection to one room. Build it with :meth:`connect`."""

    def __init__(self, conn: ClientConnection, room: str, fmt: Format, *, max_events: int, reply_timeout_s: float,
                 handlers: dict[str, list[Handler]] | None = None) -> None:
        self.room = room
        self.fmt = fmt
        self.reply_timeout_s = reply_timeout_s
        self.base_url = ""
        self.token = ""
        self._options: dict[str, Any] = {}
        #: the ``welcome`` frame's ``d`` (node, seq, recovered, user, role, the room's state)
        self.welcome: dict[str, Any] = {}
        self.seq = SeqTracker()
        self.close_code: int | None = None
        self.close_reason = ""
        #: events not kept because nobody read them (:meth:`events` keeps ``max_events``)
        self.events_dropped = 0
        self.bad_frames = 0
        self._conn = conn
        self._ids = CommandIds()
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, list[Handler]] = handlers if handlers is not None else {}
        self._keep = max_events > 0
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=max(1, max_events))
        self._welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = asyncio.Event()
        self._closing = False
        self._last_error: dict[str, Any] | None = None  # an error frame without id (before a close)
        self._reader = asyncio.create_task(self._read(), name=f"livesocket-{room}")

    @classmethod
    async def connect(cls, base_url: str, room: str, token: str, *, fmt: Format = "msgpack", since: int | None = None,
                      timeout_s: float = 10.0, reply_timeout_s: float = 10.0, max_events: int = 10_000,
                      origin: str | None = None, handlers: dict[str, list[Handler]] | None = None) -> LiveSocket:
        """Open ``/ws`` on ``base_url`` (``http(s)://`` or ``ws(s)://``) and wait for ``welcome``.

        ``max_events``: room events kept for :meth:`events` until read (the oldest go first;
        0 keeps none: handlers and replies only).

        Raises:
            ConnectRefused: the handshake was answered with an error status, the server
                closed the socket before ``welcome``, nothing answered, or no ``welcome``
                came within ``timeout_s``.
        """
        url = ws_url(base_url, room, token, fmt, since=since)
        try:
            conn = await ws_connect(url, max_size=None, compression=None, ping_interval=None, open_timeout=timeout_s,
                                    proxy=None, origin=origin)  # type: ignore[arg-type]
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            parsed = error_body(bytes(exc.response.body or b""))
            code, message, _ = parsed or ("unavailable" if status == 503 else "refused", f"handshake answered {status}", {})
            raise ConnectRefused(0, code=code, status=status, message=f"HTTP {status} {code}: {message}") from None
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            raise ConnectRefused(0, code="transport", message=f"no connection to {base_url}: {exc.__class__.__name__}: {exc}") from None
        live = cls(conn, room, fmt, max_events=max_events, reply_timeout_s=reply_timeout_s, handlers=handlers)
        live.base_url, live.token = base_url, token
        live._options = {"fmt": fmt, "timeout_s": timeout_s, "reply_timeout_s": reply_timeout_s, "max_events": max_events,
                         "origin": origin}
        closed: asyncio.Future[Any] = asyncio.ensure_future(live._closed.wait())
        waits: list[asyncio.Future[Any]] = [live._welcomed, closed]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while waiting: leave nothing open
            await live.close()
            raise
        finally:
            closed.cancel()
        if live._welcomed.done():
            return live
        if live._closed.is_set():
            err = live._last_error or {}
            d = err.get("d") if isinstance(err.get("d"), dict) else {}
            assert isinstance(d, dict)
            code = str(d.get("code") or live.close_reason or "closed")
            text = f"closed {live.close_code} {live.close_reason}".rstrip() + " before welcome" + (f": {code}: {d['message']}" if d.get("message") else "")
            refused = ConnectRefused(live.close_code or 1006, live.close_reason, code=code, message=text)
            refused.details = {k: v for k, v in d.items() if k not in ("code", "message")}
            raise refused
        await live.close()
        raise ConnectRefused(0, code="timeout", message=f"no welcome within {timeout_s:g} s")

    # ------------------------------------------------------------------ life cycle
    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def dropped(self) -> bool:
        """The server (or the network) closed it, not this side."""
        return self._closed.is_set() and not self._closing

    async def wait_closed(self) -> Closed:
        """Wait until the socket is closed; what closed it."""
        await self._closed.wait()
        return Closed(self.close_code or 1006, self.close_reason)

    async def close(self) -> None:
        self._closing = True
        await self._conn.close()
        await self._reader

    async def __aenter__(self) -> LiveSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def reconnect(self, *, base_url: str | None = None, token: str | None = None, retry: RetryPolicy = CONTRACT,
                        rng: random.Random | None = None) -> LiveSocket:
        """A new connection to this room (at ``base_url``, default the same) that resumes
        after the last event seen here (``since=``), as docs/deploy.md's contract says: a
        refusal worth retrying (1006, 1012, 1013, a 503, no answer) is retried with its
        back-off. The handlers carry over; ``seq.gaps`` too, plus the events the gateway
        could not replay (``recovered: false``).

        Raises:
            ConnectRefused: a final refusal (4401, 4403 ...) or the budget spent.
        """
        if not self.closed:
            await self.close()
        since = self.seq.last
        rng = rng or random.Random()
        start, attempt = time.monotonic(), 0
        while True:
            try:
                new = await LiveSocket.connect(base_url or self.base_url, self.room, token or self.token, since=since,
                                               handlers=self._handlers, **self._options)
                break
            except ConnectRefused as exc:
                delay = retry.delay(attempt, rng)
                if not (exc.retryable and retry.allows(time.monotonic() - start, delay)):
                    raise
                attempt += 1
                await asyncio.sleep(delay)
        new.seq.gaps += self.seq.gaps
        top = new.welcome.get("seq")
        if since is not None and new.welcome.get("recovered") is False and isinstance(top, int) and top - since <= RESEED_JUMP:
            new.seq.gaps += max(0, top - since)
        return new

    # ------------------------------------------------------------------ commands
    async def send(self, t: str, d: dict[str, Any] | None = None) -> int:
        """Send one command without waiting for its reply; its id."""
        if self._closed.is_set():
            raise Closed(self.close_code or 1006, self.close_reason)
        cid = self._ids()
        try:
            await self._conn.send(encode(command_frame(t, cid, d), self.fmt))
        except websockets.ConnectionClosed:
            await self._closed.wait()
            raise Closed(self.close_code or 1006, self.close_reason) from None
        return cid

    async def command(self, t: str, d: dict[str, Any] | None = None, *, timeout_s: float | None = None) -> dict[str, Any]:
        """Send one command and return its reply frame (``ack``, ``order.reserved`` ...).

        Raises:
            CommandError: the reply is an ``error`` (its code, message and details).
            Closed: the socket closed before the reply.
            TimeoutError: no reply within ``timeout_s`` (default ``reply_timeout_s``).
        """
        if self._closed.is_set():
            raise Closed(self.close_code or 1006, self.close_reason)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        cid = self._ids()
        self._pending[cid] = fut
        try:
            await self._conn.send(encode(command_frame(t, cid, d), self.fmt))
            reply = await asyncio.wait_for(fut, timeout_s if timeout_s is not None else self.reply_timeout_s)
        except websockets.ConnectionClosed:
            await self._closed.wait()
            raise Closed(self.close_code or 1006, self.close_reason) from None
        finally:
            self._pending.pop(cid, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved on every path (the reader may have failed it after a failed send)
        err = reply_error(reply)
        if err is not None:
            raise CommandError(*err, reply=reply)
        return reply

    async def _d(self, t: str, d: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.command(t, d)
        out = reply.get("d")
        return out if isinstance(out, dict) else {}

    async def ping(self) -> dict[str, Any]:
        return await self._d("ping")

    async def comment(self, text: str) -> dict[str, Any]:
        return await self._d("comment", {"text": text})

    async def like(self, count: int = 1) -> dict[str, Any]:
        return await self._d("like", {"count": count})

    async def gift(self, gift_id: str, count: int = 1, *, combo_id: str | None = None,
                   request_id: str | None = None) -> dict[str, Any]:
        """``{balance, combo_id, total}``; ``insufficient_funds`` raises."""
        d: dict[str, Any] = {"gift_id": gift_id, "count": count}
        if combo_id:
            d["combo_id"] = combo_id
        if request_id:
            d["request_id"] = request_id
        return await self._d("gift", d)

    async def buy(self, sale_id: str, request_id: str, qty: int = 1) -> dict[str, Any]:
        """``order.reserved``'s ``{order_id, amount, pay_by_ms ...}``; the same
        ``request_id`` again answers the same order. ``sold_out``, ``limit_reached``,
        ``not_started``, ``ended``, ``room_ended`` raise CommandError."""
        return await self._d("buy", {"sale_id": sale_id, "qty": qty, "request_id": request_id})

    async def coupon_claim(self, drop_id: str) -> dict[str, Any]:
        return await self._d("coupon.claim", {"drop_id": drop_id})

    async def lottery_enter(self, lottery_id: str) -> dict[str, Any]:
        return await self._d("lottery.enter", {"lottery_id": lottery_id})

    async def redpacket_grab(self, packet_id: str, password: str | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"packet_id": packet_id}
        if password:
            d["password"] = password
        return await self._d("redpacket.grab", d)

    async def cart_get(self) -> dict[str, Any]:
        """The cart in this room (the ``Cart`` of ``GET /api/v1/rooms/{room}/cart``)."""
        return await self._d("cart.get")

    async def cart_add(self, product_id: str, sku: str | None = None, qty: int = 1) -> dict[str, Any]:
        """Add units of a SKU (``sku`` None: the product's only one); the cart.
        ``cart_full``, ``qty_too_large``, ``not_found``, ``archived``, ``sku_archived`` raise."""
        d: dict[str, Any] = {"product_id": product_id, "qty": qty}
        if sku is not None:
            d["sku"] = sku
        return await self._d("cart.add", d)

    async def cart_set(self, product_id: str, sku: str, qty: int) -> dict[str, Any]:
        """Set a line's quantity (0 removes it); the cart."""
        return await self._d("cart.set", {"product_id": product_id, "sku": sku, "qty": qty})

    async def cart_remove(self, product_id: str, sku: str) -> dict[str, Any]:
        return await self._d("cart.remove", {"product_id": product_id, "sku": sku})

    async def cart_clear(self) -> dict[str, Any]:
        return await self._d("cart.clear")

    async def cart_checkout(self, request_id: str, *, lines: list[dict[str, Any]] | None = None,
                            coupon_ids: list[str] | None = None) -> dict[str, Any]:
        """One order of the cart's lines (or ``lines``), reserved; the same ``request_id``
        again answers the same order (``duplicate: true``). A refusal raises CommandError
        with the code and, for a line, ``details`` ``product_id``/``sku``."""
        d: dict[str, Any] = {"request_id": request_id}
        if lines is not None:
            d["lines"] = lines
        if coupon_ids is not None:
            d["coupon_ids"] = coupon_ids
        return await self._d("cart.checkout", d)

    async def pin(self, product_id: str) -> dict[str, Any]:
        return await self._d("pin", {"product_id": product_id})

    async def sale_start(self, sale_id: str) -> dict[str, Any]:
        return await self._d("sale.start", {"sale_id": sale_id})

    async def lottery_start(self, lottery: dict[str, Any]) -> dict[str, Any]:
        return await self._d("lottery.start", lottery)

    # ------------------------------------------------------------------ events
    def on(self, t: str, fn: Handler) -> None:
        """Call ``fn(event)`` for each event of type ``t`` (in the reader: keep it short)."""
        self._handlers.setdefault(t, []).append(fn)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Room events and private pushes as they come (``batch`` items one by one), until
        the socket closes."""
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # for the next reader too
                return
            yield item

    async def next_event(self, t: str | None = None, *, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next event (of type ``t``); the others before it are consumed.

        Raises:
            TimeoutError: none within ``timeout_s``. Closed: the socket closed first.
        """
        async with asyncio.timeout(timeout_s):
            while True:
                item = await self._queue.get()
                if item is None:
                    self._queue.put_nowait(None)
                    raise Closed(self.close_code or 1006, self.close_reason)
                if t is None or item.get("t") == t:
                    return item

    # ------------------------------------------------------------------ the reader
    async def _read(self) -> None:
        try:
            async for data in self._conn:
                try:
                    frame = decode(data)
                except ValueError:
                    self.bad_frames += 1
                    continue
                self._on_frame(frame)
        except websockets.ConnectionClosed:
            pass
        except Exception:  # the reader must end in a state the callers can read
            log.exception("livesocket.reader_failed", extra={"room": self.room})
        finally:
            self.close_code = self._conn.close_code if self._conn.close_code is not None else 1006
            self.close_reason = self._conn.close_reason or ""
            self._closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(Closed(self.close_code, self.close_reason))
            self._put(None)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("t") == "welcome":
            d = frame.get("d")
            self.welcome = d if isinstance(d, dict) else {}
            self.seq.welcome(self.welcome.get("seq"))
            if not self._welcomed.done():
                self._welcomed.set_result(None)
            return
        for item in event_items(frame):
            if is_reply(item):
                fut = self._pending.get(item["id"])
                if fut is not None and not fut.done():
                    fut.set_result(item)
                continue
            if item.get("t") == "error":
                self._last_error = item
            self.seq.see(item.get("seq"))
            for fn in self._handlers.get(str(item.get("t")), ()):
                try:
                    fn(item)
                except Exception:  # a handler's bug must not stop the reader
                    log.exception("livesocket.handler_failed", extra={"t": item.get("t")})
            if self._keep:
                self._put(item)

    def _put(self, item: dict[str, Any] | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.events_dropped += 1
        self._queue.put_nowait(item)


async def connect(base_url: str, room: str, token: str, **kw: Any) -> LiveSocket:
    """:meth:`LiveSocket.connect`."""
    return await LiveSocket.connect(base_url, room, token, **kw)
