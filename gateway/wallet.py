"""Wallets over HTTP, and the wallet outbox publisher the gift path uses.

HTTP (JSON; the wallet's user or ops):

* ``POST /api/v1/wallets/{user}/topup {amount, idempotency_key}`` (or an
  ``Idempotency-Key`` header): credit coins (ops), or, with test coins on
  (``LC_TEST_COINS=1``, as in ``livecommerce dev``), the user's own simulated payment;
  without them a viewer's own top-up is 403 ``test_coins_disabled``. A repeated key
  credits nothing and answers the same balance with ``duplicate: true``; the same key
  with another amount is 409 ``idempotency_conflict``.
* ``GET /api/v1/wallets/{user}``: ``{user, balance}`` (the hot Redis balance).
* ``GET /api/v1/wallets/{user}/ledger?limit=&offset=``: the SQL ledger, newest first, with
  ``ledger_balance`` (the sum of every entry; equals ``balance`` once the wallet worker
  has caught up).

Built by ``gateway.wiring``: :class:`Outbox` (the gift path's too) and :class:`Wallets`
(the routes), given the Redis wallet, the durable log and the SQL store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.errors import Forbidden, Unavailable
from livecommerce.log import Log, LogEvent
from livecommerce.store_sql import SqlStore
from livecommerce.wallet import parse_topup
from livecommerce.wallet_redis import RedisWallet

from .core import Gateway
from .idempotency import idempotent
from .validation import page, read_object

log = logging.getLogger("livecommerce.gateway.wallet")


class Outbox:
    """Appends wallet events to the log right after their Redis step, and clears the
    outbox entries in one call per tick. An event whose append fails stays in the outbox;
    the wallet worker's sweeper appends it later.

    :meth:`emit` appends before it returns (top-ups answer after it); :meth:`emit_soon`
    (gift batches) queues the events and one task appends whatever is queued, so the gifts
    are acked once debited (their events are in the outbox, written by the same atomic
    step) while the append runs beside the next batch."""

    def __init__(self, log: Log, wallet: RedisWallet) -> None:
        self.log = log
        self.wallet = wallet
        self._done: list[LogEvent] = []
        self._clearing: asyncio.Task[None] | None = None
        self._queued: list[LogEvent] = []
        self._appending: asyncio.Task[None] | None = None

    async def emit(self, event: LogEvent) -> bool:
        """Append ``event``; True when stored in the log (False: left to the sweeper)."""
        try:
            await self.log.append(event.topic, event.key, event.type, event.data, event_id=event.id, ts=event.ts)
        except Unavailable as exc:
            log.warning("wallet.append_deferred", extra={"event": event.id, "err": exc.message})
            return False
        self._done.append(event)
        return True

    async def emit_many(self, events: Sequence[LogEvent]) -> bool:
        """Append ``events`` in one log call (a gift batch); True when stored (False: left
        to the sweeper)."""
        try:
            await self.log.append_many(events)
        except Unavailable as exc:
            log.warning("wallet.append_deferred", extra={"events": len(events), "err": exc.message})
            return False
        self._done.extend(events)
        return True

    def emit_soon(self, events: Sequence[LogEvent]) -> None:
        """Queue ``events`` for the appending task (started if idle); :meth:`flush` waits
        for it."""
        self._queued.extend(events)
        if self._appending is None or self._appending.done():
            self._appending = asyncio.get_running_loop().create_task(self._append_queued())

    async def _append_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self.emit_many(batch)
            except Exception:  # never lost: the events stay in the outbox for the sweeper
                log.exception("wallet.append_failed", extra={"events": len(batch)})

    def on_tick(self, now: float) -> None:
        if self._done and (self._clearing is None or self._clearing.done()):
            batch, self._done = self._done, []
            self._clearing = asyncio.get_running_loop().create_task(self._clear(batch))

    async def _clear(self, batch: list[LogEvent]) -> None:
        try:
            await self.wallet.clear(batch)
        except Unavailable:
            self._done.extend(batch)  # next tick; the sweeper would only re-append them

    async def flush(self) -> None:
        """Append what is queued, then clear what is pending now (shutdown)."""
        while self._appending is not None and not self._appending.done():
            await asyncio.gather(self._appending, return_exceptions=True)
        if self._clearing is not None:
            await asyncio.gather(self._clearing, return_exceptions=True)
        batch, self._done = self._done, []
        if batch:
            await self.wallet.clear(batch)


class Wallets:
    """The wallet routes: top-up, balance, ledger."""

    def __init__(self, gw: Gateway, wallet: RedisWallet, outbox: Outbox, store: SqlStore) -> None:
        self.gw = gw
        self.wallet = wallet
        self.outbox = outbox
        self.store = store

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        """Welcome hook: ``test_coins: true`` when a viewer may top up its own wallet (the
        viewer page shows its test top-up button only then)."""
        return {"test_coins": True} if self.gw.s.test_coins else {}

    async def topup(self, request: web.Request) -> web.Response:
        gw = self.gw
        ident = gw.identify_request(request)
        user = request.match_info["user"]
        ident.require_self_or_ops(user)
        if not ident.is_ops and not gw.s.test_coins:
            raise Forbidden("only ops top up wallets here: a viewer's own top-up is test coins, off unless LC_TEST_COINS=1 "
                            "(on in `livecommerce dev`)", code="test_coins_disabled")
        t = parse_topup(await read_object(request), request.headers.get("Idempotency-Key"))

        async def run() -> web.Response:
            r = await self.wallet.topup(user=user, amount=t.amount, idempotency_key=t.idempotency_key, by=ident.user,
                                        now_ms=gw.now_ms())
            if not r.duplicate:
                await self.outbox.emit(r.event)
                log.info("wallet.topup", extra={"user": user, "amount": t.amount, "by": ident.user})
            return web.json_response(
                {"user": user, "balance": r.balance, "event_id": r.event.id, "duplicate": r.duplicate},
                status=200 if r.duplicate else 201,
            )

        # the key binds (caller, this wallet, amount); the wallet's own record binds (user, amount)
        return await idempotent(gw, request, ident, key=t.idempotency_key, target=user, body={"amount": t.amount}, run=run,
                                namespace="topup", rerun=True)

    async def balance(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        user = request.match_info["user"]
        ident.require_self_or_ops(user)
        return web.json_response({"user": user, "balance": await self.wallet.balance(user)})

    async def ledger(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        user = request.match_info["user"]
        ident.require_self_or_ops(user)
        limit, offset = page(request)
        entries = await self.store.wallet_ledger(user, limit=limit, offset=offset)
        return web.json_response(
            {
                "user": user,
                "balance": await self.wallet.balance(user),
                "ledger_balance": await self.store.wallet_balance(user),
                "entries": [
                    {"id": e.id, "delta": e.delta, "reason": e.reason, "ref_event_id": e.ref_event_id, "ts": e.ts_ms}
                    for e in entries
                ],
            }
        )
