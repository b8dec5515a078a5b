"""WebSocket helpers for the locust users: the livecommerce wire contract over websocket-client.

Locust monkey-patches the standard library with gevent, so websocket-client's blocking
socket calls become cooperative: every user gets one socket and one reader greenlet.

What is reported to locust (request events):

* ``WS connect``  ``/ws``: the TCP + HTTP upgrade handshake;
* ``WS first-event`` ``welcome``: from the start of the connect to the ``welcome`` frame;
* ``WS <command>``: one per command sent, from send to its reply (``ack``, ``pong``,
  ``order.reserved`` ...). An ``error`` reply is a failure named by its code (so
  ``unknown_type`` for commands this gateway does not serve yet, ``rate_limited``, ...),
  except the business outcomes listed in ``EXPECTED_REJECTIONS`` (``sold_out`` ...), which
  are successes under the name ``<command> -> <code>`` so that the split is visible;
* ``WS disconnect``: a failure for every socket the server dropped (close code and reason),
  not counting the ones this side closed.

What is kept apart (:data:`LEDGER`, printed at the end, written as ``<csv>_events.csv`` and
``<csv>_ledger.json`` with ``--csv``, served at ``/livecommerce`` beside the web UI, merged
from every worker in a distributed run):

* event-delivery latency per event type, from the server's ``ts`` (ms, when the event was
  published) to its arrival here, for a sample (``LC_EVENT_SAMPLE``, default 1.0) of the room
  events received (items of ``batch`` frames count one by one): its own statistics, so the
  Aggregated row of locust's table counts requests only;
* sockets open now, opened, dropped by the server; ``seq`` gaps (room events a client did not
  receive: shed by a hot room's budget, or lost; a client recovers them with ``since=``);
* the business invariants, checked as the run goes: no sale reserves more than its stock, a
  ``buy`` retried with the same ``request_id`` answers the same order, no user holds two
  orders of one sale. A violation is logged at once and makes locust exit with code 1.

Configuration (environment): ``LC_SECRET`` (or the ``dev.env`` of the ``livecommerce dev``
running in this directory), ``LC_ROOM`` (default ``demo``), ``LC_FORMAT`` (``msgpack`` or
``json``, default msgpack), ``LC_EVENT_SAMPLE``, ``LC_REPLY_TIMEOUT_S`` (default 10).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
import websocket  # websocket-client
from gevent.event import AsyncResult, Event
from locust.stats import RequestStats, StatsEntry

from livecommerce.auth import issue_token
from livecommerce.client import wire
from livecommerce.client.errors import error_body
from livecommerce.client.operations import call

ROOM = os.environ.get("LC_ROOM", "demo")
FORMAT = os.environ.get("LC_FORMAT", "msgpack")
EVENT_SAMPLE = float(os.environ.get("LC_EVENT_SAMPLE", "1.0"))
REPLY_TIMEOUT_S = float(os.environ.get("LC_REPLY_TIMEOUT_S", "10"))
# business answers, not faults: reported as successes named "<command> -> <code>"
EXPECTED_REJECTIONS = frozenset(
    {"sold_out", "limit_reached", "not_started", "ended", "already_entered", "closed", "insufficient_funds"}
)



class Ledger:
    """What one locust process saw beyond request timings (see the module docstring)."""

    def __init__(self) -> None:
        self.events = RequestStats(use_response_times_cache=False)
        self.open = 0  # sockets open now in this process
        self.opened = 0
        self.dropped = 0
        self.seq_gaps = 0
        self.stock: dict[str, int] = {}  # sale -> stock, from the host that created it
        self.orders: dict[str, dict[str, str]] = {}  # sale -> order id -> user
        self.violations: list[str] = []
        self.open_by_worker: dict[str, int] = {}  # master: the last gauge each worker reported
        self._unsent_orders: list[tuple[str, str, str]] = []
        self._unsent_stock: dict[str, int] = {}
        self._unsent = {"opened": 0, "dropped": 0, "seq_gaps": 0}

    # ---- recording (the users)
    def count(self, what: str, n: int = 1) -> None:
        setattr(self, what, getattr(self, what) + n)
        self._unsent[what] += n

    def sale(self, sale_id: str, stock: int) -> None:
        self.stock[sale_id] = stock
        self._unsent_stock[sale_id] = stock
        self._check(sale_id)

    def reserved(self, sale_id: str, order_id: str, user: str) -> None:
        self._add_order(sale_id, order_id, user)
        self._unsent_orders.append((sale_id, order_id, user))

    def violation(self, what: str) -> None:
        import logging

        self.violations.append(what)
        logging.getLogger("lcws").error("invariant violated: %s", what)

    def _add_order(self, sale_id: str, order_id: str, user: str) -> None:
        orders = self.orders.setdefault(sale_id, {})
        if order_id in orders:
            return
        if user in orders.values():
            self.violation(f"sale {sale_id}: user {user} holds two orders ({order_id} and another)")
        orders[order_id] = user
        self._check(sale_id)

    def _check(self, sale_id: str) -> None:
        stock = self.stock.get(sale_id)
        n = len(self.orders.get(sale_id, ()))
        if stock is not None and n > stock:
            self.violation(f"sale {sale_id}: {n} orders reserved on {stock} units")

    # ---- distributed runs: workers send what is new, the master merges
    def report(self, client_id: str, data: dict[str, Any]) -> None:
        data["lc_events"] = self.events.serialize_stats()
        data["lc_counts"] = dict(self._unsent, open=self.open)
        data["lc_orders"], self._unsent_orders = self._unsent_orders, []
        data["lc_stock"], self._unsent_stock = self._unsent_stock, {}
        data["lc_violations"] = list(self.violations)
        self._unsent = {k: 0 for k in self._unsent}

    def merge(self, client_id: str, data: dict[str, Any]) -> None:
        for raw in data.get("lc_events", ()):
            entry = StatsEntry.unserialize(raw, self.events)
            key = (entry.name, entry.method)
            if key not in self.events.entries:
                self.events.entries[key] = StatsEntry(self.events, entry.name, entry.method)
            self.events.entries[key].extend(entry)
            self.events.total.extend(entry)
        counts = data.get("lc_counts") or {}
        for k in ("opened", "dropped", "seq_gaps"):
            setattr(self, k, getattr(self, k) + int(counts.get(k, 0)))
        if "open" in counts:
            self.open_by_worker[client_id] = int(counts["open"])
            self.open = sum(self.open_by_worker.values())
        for sale_id, stock in (data.get("lc_stock") or {}).items():
            self.stock[sale_id] = int(stock)
            self._check(sale_id)
        for sale_id, order_id, user in data.get("lc_orders", ()):
            self._add_order(sale_id, order_id, user)
        for v in data.get("lc_violations", ()):
            if v not in self.violations:
                self.violation(v)

    # ---- output
    def summary(self) -> dict[str, Any]:
        return {
            "sockets_open": self.open, "sockets_opened": self.opened, "sockets_dropped": self.dropped,
            "seq_gaps": self.seq_gaps, "events_received": self.events.total.num_requests,
            "sales": {sid: {"stock": self.stock.get(sid), "orders": len(o)} for sid, o in self.orders.items()},
            "violations": self.violations,
        }


LEDGER = Ledger()


def secret() -> str:
    """``LC_SECRET``, or the secret of the ``livecommerce dev`` running in this directory
    (its ``dev.env``). There is no built-in secret: without either this says what to do."""
    from livecommerce.config import Settings, secret_source

    source, dev = secret_source()
    if source:
        return Settings.from_env().secret
    hint = f" ({dev.path} is stale: its dev is gone)" if dev is not None else ""
    raise SystemExit("lcws: no secret to sign tokens with: set LC_SECRET to the gateway's, "
                     f"or run this where `livecommerce dev` runs{hint}")


def mint(user: str, role: str = "viewer", rooms: tuple[str, ...] = (), ttl_s: int = 3600) -> str:
    return issue_token(secret(), user=user, role=role, rooms=rooms, name=user, now_s=int(time.time()), ttl_s=ttl_s)


def encode(obj: dict[str, Any], fmt: str = FORMAT) -> tuple[bytes | str, int]:
    """A frame for websocket-client: the payload (livecommerce.client.wire) and its opcode."""
    payload = wire.encode(obj, "json" if fmt == "json" else "msgpack")
    return payload, websocket.ABNF.OPCODE_TEXT if isinstance(payload, str) else websocket.ABNF.OPCODE_BINARY


class LiveSocket:
    """One viewer/host connection: commands with replies, events to handlers, stats."""

    def __init__(self, environment: Any, host: str, token: str, *, room: str = ROOM, fmt: str = FORMAT) -> None:
        self.env = environment
        self.url = wire.ws_url(host, room, token, "json" if fmt == "json" else "msgpack")
        self.room = room
        self.fmt = fmt
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.pending: dict[Any, tuple[AsyncResult, str, float]] = {}
        self.handlers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self.welcome: dict[str, Any] | None = None
        self.welcomed = Event()
        self.closed = Event()
        self.close_reason = ""
        self.closing = False  # this side closed it (not a drop)
        self._counted = False  # counted in LEDGER.open
        self.seq = wire.SeqTracker()
        self._ids = wire.CommandIds()
        self.last_error = ""  # an error frame without id (the reason before a close: unauthorized, banned)

    # ---- stats
    def _fire(self, request_type: str, name: str, start: float, *, length: int = 0, exc: Exception | None = None,
              ms: float | None = None) -> None:
        self.env.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=ms if ms is not None else (time.perf_counter() - start) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    # ---- life cycle
    def connect(self) -> bool:
        """Open the socket and wait for ``welcome``, or for the server to close it (a refused
        token, a full node, a banned user: reported at once with the close code, as a
        ``connect`` failure), or for ``LC_REPLY_TIMEOUT_S``."""
        start = time.perf_counter()
        try:
            self.ws = websocket.create_connection(self.url, timeout=REPLY_TIMEOUT_S, enable_multithread=False)
        except Exception as exc:
            self._fire("WS", "connect", start, exc=exc)
            self.closed.set()
            return False
        handshake_ms = (time.perf_counter() - start) * 1000
        self.ws.settimeout(None)
        self.reader = gevent.spawn(self._read_loop, start)
        gevent.wait([self.welcomed, self.closed], timeout=REPLY_TIMEOUT_S, count=1)
        if self.welcomed.is_set():
            self._fire("WS", "connect", start, ms=handshake_ms)
            LEDGER.count("opened")
            LEDGER.open += 1
            self._counted = True
            return True
        if self.closed.is_set():
            self._fire("WS", "connect", start, ms=handshake_ms,
                       exc=ConnectionError(f"refused before welcome: {self.close_reason or 'closed'}"))
        else:
            self._fire("WS", "connect", start, ms=handshake_ms, exc=TimeoutError(f"no welcome within {REPLY_TIMEOUT_S:g}s"))
        self.close()
        return False

    def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            try:
                self.ws.close(timeout=1)
            except Exception:
                pass
        if self.reader is not None and not self.reader.dead and gevent.getcurrent() is not self.reader:
            self.reader.kill(block=False)
        self.closed.set()
        for res, _, _ in list(self.pending.values()):
            if not res.ready():
                res.set_exception(ConnectionError("connection closed"))
        self.pending.clear()

    def on(self, t: str, fn: Callable[[dict[str, Any]], None]) -> None:
        self.handlers.setdefault(t, []).append(fn)

    # ---- commands
    def send(self, t: str, d: dict[str, Any] | None = None, *, name: str | None = None,
             timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any] | None:
        """Send one command and wait for its reply; reports it. Returns the reply or None."""
        name = name or t
        if self.ws is None or self.closed.is_set():
            self._fire("WS", name, time.perf_counter(), exc=ConnectionError("not connected"), ms=0)
            return None
        cid = self._ids()
        res: AsyncResult = AsyncResult()
        start = time.perf_counter()
        self.pending[cid] = (res, name, start)
        payload, opcode = encode(wire.command_frame(t, cid, d), self.fmt)
        try:
            self.ws.send(payload, opcode)
            reply = res.get(timeout=timeout)
        except gevent.Timeout:
            self.pending.pop(cid, None)
            self._fire("WS", name, start, exc=TimeoutError(f"no reply within {timeout:g}s"))
            return None
        except Exception as exc:
            self.pending.pop(cid, None)
            self._fire("WS", name, start, exc=exc)
            return None
        ms = (time.perf_counter() - start) * 1000
        err = wire.reply_error(reply)
        if err is not None:
            code, message, _ = err
            if code in EXPECTED_REJECTIONS:
                self._fire("WS", f"{name} -> {code}", start, ms=ms)
            else:
                self._fire("WS", name, start, ms=ms, exc=CommandError(f"{code}: {message}"[:200]))
        else:
            self._fire("WS", name, start, ms=ms)
        return reply

    # ---- receiving
    def _read_loop(self, start: float) -> None:
        ws = self.ws
        assert ws is not None
        try:
            while True:
                opcode, data = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
                    self.close_reason = (f"closed by server: {code} {data[2:].decode(errors='replace')}"
                                         + (f" ({self.last_error})" if self.last_error else ""))
                    break
                if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    continue
                if isinstance(data, bytes) and opcode == websocket.ABNF.OPCODE_TEXT:
                    data = data.decode()
                try:
                    frame = wire.decode(data)
                except ValueError:
                    continue
                self._on_frame(frame, len(data), start)
        except Exception as exc:
            if not self.closed.is_set():
                self.close_reason = self.close_reason or f"{exc.__class__.__name__}: {exc}"
        finally:
            if self._counted:
                self._counted = False
                LEDGER.open -= 1
                if not self.closing:  # the server (or the network) dropped an admitted socket
                    LEDGER.count("dropped")
                    self._fire("WS", "disconnect", start, ms=0, exc=ConnectionError(self.close_reason or "dropped"))
            self.closed.set()
            for res, _, _ in list(self.pending.values()):
                if not res.ready():
                    res.set_exception(ConnectionError(self.close_reason or "connection closed"))

    def _on_frame(self, obj: dict[str, Any], length: int, start: float) -> None:
        t = obj.get("t")
        if t == "welcome":
            self.welcome = obj
            self.seq.welcome((obj.get("d") or {}).get("seq"))  # 0: a room without history yet
            self._fire("WS", "first-event", start, length=length)
            self.welcomed.set()
            return
        items = wire.event_items(obj)
        now_ms = time.time() * 1000
        for e in items:
            if wire.is_reply(e):  # a command's reply (alone, or inside a batch)
                pending = self.pending.pop(e["id"], None)
                if pending is not None:
                    pending[0].set(e)
                continue
            et = e.get("t", "?")
            if et == "error":
                err = wire.reply_error(e)
                self.last_error = f"{err[0]}: {err[1]}" if err else ""
            missed = self.seq.see(e.get("seq"))
            if missed:
                LEDGER.count("seq_gaps", missed)
            ts = e.get("ts")
            if isinstance(ts, (int, float)) and (EVENT_SAMPLE >= 1.0 or random.random() < EVENT_SAMPLE):
                LEDGER.events.log_request("EVENT", et, max(0.0, now_ms - ts), length // max(1, len(items)))
            for fn in self.handlers.get(et, ()):
                try:
                    fn(e)
                except Exception:  # a handler must never kill the reader
                    pass


def http_post(environment: Any, host: str, operation_id: str, body: dict[str, Any], token: str, *,
              ok: tuple[int, ...] = (), idempotency_key: str | None = None, **params: str) -> Any:
    """One operation of the API (``livecommerce.client.operations``: its path, its documented
    name as the row, its ``Idempotency-Key``) over requests, reported like locust's own HTTP
    requests: an error answer, or no answer at all, is a failure with the wire's code."""
    import requests

    c = call(operation_id, body=body, idempotency_key=idempotency_key, **params)
    start = time.perf_counter()
    exc: Exception | None = None
    resp = None
    try:
        resp = requests.request(c.method, host.rstrip("/") + c.path, json=c.body, params=dict(c.query),
                                headers={"Authorization": f"Bearer {token}", **c.headers}, timeout=REPLY_TIMEOUT_S)
        if resp.status_code >= 300 and resp.status_code not in ok:
            exc = CommandError(failure(resp.status_code, resp.text))
    except Exception as e:
        exc = e
    environment.events.request.fire(
        request_type=c.method, name=c.name, response_time=(time.perf_counter() - start) * 1000,
        response_length=len(resp.content) if resp is not None else 0, exception=exc, context={},
    )
    return resp


def failure(status: int, text: str) -> str:
    """How an HTTP error answer reads in locust's failure table: status, wire code, message."""
    parsed = error_body(text)
    return f"HTTP {status} {parsed[0]}: {parsed[1]}"[:200] if parsed else f"HTTP {status}: {' '.join(text.split())[:200]}"


class CommandError(Exception):
    """An ``error`` reply to a command."""
