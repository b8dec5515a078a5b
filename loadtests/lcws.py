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
* ``EVENT <type>``: event-delivery latency, from the server's ``ts`` (ms, when the event
  was published) to its arrival here, for a sample (``LC_EVENT_SAMPLE``, default 1.0) of
  the room events received (items of ``batch`` frames count one by one).

Configuration (environment): ``LC_SECRET`` (or the ``dev.env`` of the ``livecommerce dev``
running in this directory), ``LC_ROOM`` (default ``demo``), ``LC_FORMAT`` (``msgpack`` or
``json``, default msgpack), ``LC_EVENT_SAMPLE``, ``LC_REPLY_TIMEOUT_S`` (default 10).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
import msgpack
import websocket  # websocket-client
from gevent.event import AsyncResult, Event

from livecommerce.auth import issue_token

ROOM = os.environ.get("LC_ROOM", "demo")
FORMAT = os.environ.get("LC_FORMAT", "msgpack")
EVENT_SAMPLE = float(os.environ.get("LC_EVENT_SAMPLE", "1.0"))
REPLY_TIMEOUT_S = float(os.environ.get("LC_REPLY_TIMEOUT_S", "10"))
# business answers, not faults: reported as successes named "<command> -> <code>"
EXPECTED_REJECTIONS = frozenset(
    {"sold_out", "limit_reached", "not_started", "ended", "already_entered", "closed", "insufficient_funds"}
)

_ids = itertools.count(1)


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


def ws_url(host: str, room: str, token: str, fmt: str = FORMAT) -> str:
    base = host.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return f"{base}/ws?room={room}&token={token}&format={fmt}"


def encode(obj: dict[str, Any], fmt: str = FORMAT) -> tuple[bytes | str, int]:
    if fmt == "json":
        return json.dumps(obj, separators=(",", ":")), websocket.ABNF.OPCODE_TEXT
    return msgpack.packb(obj, use_bin_type=True), websocket.ABNF.OPCODE_BINARY


def decode(data: bytes | str) -> Any:
    if isinstance(data, str):
        return json.loads(data)
    return msgpack.unpackb(data, raw=False)


class LiveSocket:
    """One viewer/host connection: commands with replies, events to handlers, stats."""

    def __init__(self, environment: Any, host: str, token: str, *, room: str = ROOM, fmt: str = FORMAT) -> None:
        self.env = environment
        self.url = ws_url(host, room, token, fmt)
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
        start = time.perf_counter()
        try:
            self.ws = websocket.create_connection(self.url, timeout=REPLY_TIMEOUT_S, enable_multithread=False)
        except Exception as exc:
            self._fire("WS", "connect", start, exc=exc)
            self.closed.set()
            return False
        self._fire("WS", "connect", start)
        self.ws.settimeout(None)
        self.reader = gevent.spawn(self._read_loop, start)
        if not self.welcomed.wait(REPLY_TIMEOUT_S):
            self._fire("WS", "first-event", start, exc=TimeoutError(f"no welcome within {REPLY_TIMEOUT_S:g}s: {self.close_reason}"))
            self.close()
            return False
        return True

    def close(self) -> None:
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
        cid = next(_ids)
        res: AsyncResult = AsyncResult()
        start = time.perf_counter()
        self.pending[cid] = (res, name, start)
        payload, opcode = encode({"t": t, "id": cid, "d": d or {}}, self.fmt)
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
        if reply.get("t") == "error":
            d_ = reply.get("d") or {}
            code = str(d_.get("code"))
            if code in EXPECTED_REJECTIONS:
                self._fire("WS", f"{name} -> {code}", start, ms=ms)
            else:
                self._fire("WS", name, start, ms=ms, exc=CommandError(f"{code}: {d_.get('message', '')}"[:200]))
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
                    self.close_reason = f"closed by server: {code} {data[2:].decode(errors='replace')}"
                    break
                if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    continue
                if isinstance(data, bytes) and opcode == websocket.ABNF.OPCODE_TEXT:
                    data = data.decode()
                self._on_frame(decode(data), len(data), start)
        except Exception as exc:
            if not self.closed.is_set():
                self.close_reason = self.close_reason or f"{exc.__class__.__name__}: {exc}"
        finally:
            self.closed.set()
            for res, _, _ in list(self.pending.values()):
                if not res.ready():
                    res.set_exception(ConnectionError(self.close_reason or "connection closed"))

    def _on_frame(self, obj: dict[str, Any], length: int, start: float) -> None:
        cid = obj.get("id")
        if cid is not None and cid in self.pending:
            res, _, _ = self.pending.pop(cid)
            res.set(obj)
            return
        t = obj.get("t")
        if t == "welcome":
            self.welcome = obj
            self._fire("WS", "first-event", start, length=length)
            self.welcomed.set()
            return
        items = obj.get("items", ()) if t == "batch" else (obj,)
        now_ms = time.time() * 1000
        for e in items:
            et = e.get("t", "?")
            ts = e.get("ts")
            if isinstance(ts, (int, float)) and (EVENT_SAMPLE >= 1.0 or random.random() < EVENT_SAMPLE):
                self._fire("EVENT", et, 0, ms=max(0.0, now_ms - ts), length=length // max(1, len(items)))
            for fn in self.handlers.get(et, ()):
                try:
                    fn(e)
                except Exception:  # a handler must never kill the reader
                    pass


def http_post(environment: Any, host: str, path: str, body: dict[str, Any], token: str, *, name: str | None = None,
              ok: tuple[int, ...] = ()) -> Any:
    """One JSON POST with a bearer token, reported like locust's own HTTP requests."""
    import requests

    start = time.perf_counter()
    exc: Exception | None = None
    resp = None
    try:
        resp = requests.post(host.rstrip("/") + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=REPLY_TIMEOUT_S)
        if resp.status_code >= 300 and resp.status_code not in ok:
            exc = CommandError(f"HTTP {resp.status_code}: {resp.text[:200]}")
    except Exception as e:
        exc = e
    environment.events.request.fire(
        request_type="POST", name=name or path, response_time=(time.perf_counter() - start) * 1000,
        response_length=len(resp.content) if resp is not None else 0, exception=exc, context={},
    )
    return resp


class CommandError(Exception):
    """An ``error`` reply to a command."""
