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

Services provided: ``gw.services["wallet"]`` (:class:`~livecommerce.wallet_redis.RedisWallet`)
and ``gw.services["wallet_outbox"]`` (:class:`Outbox`). Shared helpers for the other
capabilities of this issue: :func:`durable_log` and :func:`sql_store` reuse
``gw.services["log"]`` / ``gw.services["store"]`` or open them once.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, Forbidden, Unavailable
from livecommerce.log import Log, LogEvent, open_log
from livecommerce.store_sql import SqlStore
from livecommerce.wallet import parse_topup
from livecommerce.wallet_redis import RedisWallet

from .core import Gateway
from .idempotency import idempotent
from .validation import read_object

log = logging.getLogger("livecommerce.gateway.wallet")


def durable_log(gw: Gateway) -> Log:
    """The node's durable log (``gw.services["log"]``), opened on first use."""
    lg: Log | None = gw.services.get("log")
    if lg is None:
        lg = gw.services["log"] = open_log(gw.s, gw.redis)
        gw.services.setdefault("shutdown", []).append(lg.close)
    return lg


def sql_store(gw: Gateway) -> SqlStore:
    """The node's SQL store (``gw.services["store"]``), opened on first use."""
    st: SqlStore | None = gw.services.get("store")
    if st is None:
        st = gw.services["store"] = SqlStore(gw.s.database_url)
        gw.services.setdefault("shutdown", []).append(st.close)
    return st


def require_self_or_ops(ident: Identity, user: str) -> None:
    """Raises:
    Forbidden: ``ident`` is neither ``user`` nor ops.
    """
    if ident.user != user and ident.role != "ops":
        raise Forbidden("only the user themself or ops may do this")


def page(request: web.Request) -> tuple[int, int]:
    """``?limit=`` (1..500, default 100) and ``?offset=`` (>= 0).

    Raises:
        BadFrame: not integers.
    """
    try:
        limit = max(1, min(500, int(request.query.get("limit", "100"))))
        offset = max(0, int(request.query.get("offset", "0")))
    except ValueError:
        raise BadFrame("limit and offset must be integers", code="invalid") from None
    return limit, offset


class Outbox:
    """Appends wallet events to the log right after their Redis step, and clears the
    outbox entries in one pipeline per tick. An event whose append fails stays in the
    outbox; the wallet worker's sweeper appends it later."""

    def __init__(self, gw: Gateway, wallet: RedisWallet) -> None:
        self.gw = gw
        self.wallet = wallet
        self._done: list[LogEvent] = []
        self._clearing: asyncio.Task[None] | None = None

    async def emit(self, event: LogEvent) -> bool:
        """Append ``event``; True when stored in the log (False: left to the sweeper)."""
        try:
            await durable_log(self.gw).append(event.topic, event.key, event.type, event.data, event_id=event.id, ts=event.ts)
        except Unavailable as exc:
            log.warning("wallet.append_deferred", extra={"event": event.id, "err": exc.message})
            return False
        self._done.append(event)
        return True

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
        """Clear what is pending now (shutdown)."""
        if self._clearing is not None:
            await asyncio.gather(self._clearing, return_exceptions=True)
        batch, self._done = self._done, []
        if batch:
            await self.wallet.clear(batch)


def setup(gw: Gateway, app: web.Application) -> None:
    wallet = RedisWallet(gw.redis, gw.keys)
    outbox = Outbox(gw, wallet)
    gw.services["wallet"] = wallet
    gw.services["wallet_outbox"] = outbox
    gw.hub.on_tick.append(outbox.on_tick)
    gw.services.setdefault("shutdown", []).insert(0, outbox.flush)

    async def topup(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        user = request.match_info["user"]
        require_self_or_ops(ident, user)
        if ident.role != "ops" and not gw.s.test_coins:
            raise Forbidden("only ops top up wallets here: a viewer's own top-up is test coins, off unless LC_TEST_COINS=1 "
                            "(on in `livecommerce dev`)", code="test_coins_disabled")
        t = parse_topup(await read_object(request), request.headers.get("Idempotency-Key"))

        async def run() -> web.Response:
            r = await wallet.topup(user=user, amount=t.amount, idempotency_key=t.idempotency_key, by=ident.user, now_ms=gw.now_ms())
            if not r.duplicate:
                await outbox.emit(r.event)
                log.info("wallet.topup", extra={"user": user, "amount": t.amount, "by": ident.user})
            return web.json_response(
                {"user": user, "balance": r.balance, "event_id": r.event.id, "duplicate": r.duplicate},
                status=200 if r.duplicate else 201,
            )

        # the key binds (caller, this wallet, amount); the wallet's own record binds (user, amount)
        return await idempotent(gw, request, ident, key=t.idempotency_key, target=user, body={"amount": t.amount}, run=run,
                                namespace="topup", rerun=True)

    async def balance(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        user = request.match_info["user"]
        require_self_or_ops(ident, user)
        return web.json_response({"user": user, "balance": await wallet.balance(user)})

    async def ledger(request: web.Request) -> web.Response:
        ident = gw.identify_request(request)
        user = request.match_info["user"]
        require_self_or_ops(ident, user)
        limit, offset = page(request)
        store = sql_store(gw)
        entries = await store.wallet_ledger(user, limit=limit, offset=offset)
        return web.json_response(
            {
                "user": user,
                "balance": await wallet.balance(user),
                "ledger_balance": await store.wallet_balance(user),
                "entries": [
                    {"id": e.id, "delta": e.delta, "reason": e.reason, "ref_event_id": e.ref_event_id, "ts": e.ts_ms}
                    for e in entries
                ],
            }
        )

    app.router.add_post("/api/v1/wallets/{user}/topup", topup)
    app.router.add_get("/api/v1/wallets/{user}", balance)
    app.router.add_get("/api/v1/wallets/{user}/ledger", ledger)
