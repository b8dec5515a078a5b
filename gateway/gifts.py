"""``gift {gift_id, count, combo_id?, request_id?}``: wallet debit, combo broadcast, leaderboards.

A gift is a wallet debit (never below zero, error ``insufficient_funds``; the combo grows in
the same step; the ``gift.sent`` event goes to the wallet outbox), then the log append
(topic ``gifts``). The reply is ``ack`` with ``d: {balance, combo_id, total, value}``, sent
once the debit is decided (its event is then in the outbox; the append follows beside the
next batch, or the wallet worker's sweeper appends it if this node dies first).

Group commit (the gift storm): the gifts that arrive within one turn of the event loop, or
while the previous batch is out (:class:`GiftBatcher`), go to Redis together
(:meth:`RedisWallet.send_gifts`: on Redis Cluster one script call per wallet shard,
concurrently; on one Redis the batch's shards in one call), and their events to the log in
one ``append_many``; each gift is still decided in arrival order exactly as alone
(:func:`livecommerce.wallet.decide_gift_batch`). ``gift`` is a pipelined command
(``protocol.commands.PIPELINED``): a connection's next frames are read while its gifts are
out, and the answers still leave in frame order. With a
``request_id`` a gift is debited at most once: a retry (after a lost reply, a dead gateway,
an ``unavailable``) answers the first outcome's ``ack`` and debits nothing, and the same id
for another gift is ``idempotency_conflict``. Without one, a retry is a new gift.

Broadcast: sends are summed per ``(room, user, gift, combo)`` on this node and published
once per tick as one ``gift`` event ``{user, name, gift_id, gift_name, tier, price,
combo_id, count, total, value}`` (``count``/``value``: this tick's delta, ``total``: the
combo's running units). Leaderboard increments are summed the same way and added to Redis
before the tick's gift events go out. Once a second each node pushes ``leaderboard {top}``
(the room's top gifters) to its viewers of rooms whose board may have moved, only when the
top changed; ``welcome`` carries ``leaderboard`` too.

HTTP (public): ``GET /api/v1/gifts`` (the catalogue), ``GET
/api/v1/rooms/{room}/leaderboard?n=``, ``GET /api/v1/hosts/{host}/leaderboard?n=`` (a
host's top fans), ``GET /api/v1/leaderboards/hosts?n=`` (hosts by gifts received).

Hooks called: the gift hooks (``gw.hooks.gift``: ``async (room, user, value)``, e.g. gift
lotteries) after each successful gift. The room's host comes from the room's meta, read
once per room by the room gate (:meth:`~gateway.rooms.RoomGate.host`, also what comments'
fan badges use; :meth:`Gifts.host_of` is the refunds' lookup too); rooms without one credit
``room:<id>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from livecommerce.auth import Identity
from livecommerce.errors import IdempotencyConflict, Unavailable
from livecommerce.gifts import GiftSpec, GiftTally, catalogue_payload, load_catalogue
from livecommerce.leaderboard import BoardGate, BoardTally, clamp_top, ranked
from livecommerce.leaderboard_redis import RedisLeaderboards
from livecommerce.protocol.commands import Gift
from livecommerce.protocol.events import envelope, reply
from livecommerce.wallet import InsufficientFunds, shard_of
from livecommerce.wallet_redis import (
    GiftOrder,
    GiftRefused,
    GiftReplayed,
    GiftResult,
    RedisWallet,
    SentGift,
)

from .conn import Conn
from .core import Gateway
from .hooks import GiftHook
from .rooms import RoomGate
from .wallet import Outbox

log = logging.getLogger("livecommerce.gateway.gifts")

LEADERBOARD_TOP = 10
MAX_BATCH = 512  # gifts per group commit
MAX_IN_FLIGHT = 1  # group commits out at once: one, so batches reach Redis in the order gifts were submitted


class GiftBatcher:
    """Group commit of gift debits: gifts submitted within one loop turn (and those that
    arrive while the previous batch is out) become one :meth:`RedisWallet.send_gifts`
    call. Each gift's future is resolved as soon as the batch is decided: a debited gift's
    event is then in the wallet outbox (same atomic step), and the outbox's appending task
    puts the batch's events on the log beside the next batch (:meth:`Outbox.emit_soon`;
    if the gateway dies first, the sweeper appends them).

    Gifts are decided in the order they were submitted: :meth:`submit` never awaits, and
    one batch is out at a time (two batches out at once may reach Redis in either order, and
    a connection's pipelined gifts would no longer be decided in frame order). The rooms'
    hosts (``host_of``, held by the room gate) are filled in by the batch, once per room."""

    def __init__(self, wallet: RedisWallet, outbox: Outbox, now_ms: Callable[[], int],
                 host_of: Callable[[str], Awaitable[str]], *, max_batch: int = MAX_BATCH,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self.wallet = wallet
        self.outbox = outbox
        self.now_ms = now_ms
        self.host_of = host_of
        self.max_batch = max_batch
        self.max_in_flight = MAX_IN_FLIGHT
        self.on_batch = on_batch  # (gifts, wallet shards) per batch, for metrics
        self._pending: list[tuple[GiftOrder, asyncio.Future[GiftResult]]] = []
        self._scheduled = False
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, order: GiftOrder) -> asyncio.Future[GiftResult]:
        """Queue ``order`` for the next batch (its ``host`` is filled in there when empty);
        the future gets its result or the batch's error (``Unavailable``)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[GiftResult] = loop.create_future()
        self._pending.append((order, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._kick)
        return fut

    def _kick(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._pending and self._in_flight < self.max_in_flight:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            self._in_flight += 1
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[GiftOrder, asyncio.Future[GiftResult]]]) -> None:
        try:
            batch = await self._fill_hosts(batch)
            results = await self.wallet.send_gifts([o for o, _ in batch], now_ms=self.now_ms())
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(Unavailable(exc.message) if isinstance(exc, Unavailable) else exc)
        else:
            for (_, fut), r in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(r)
            sent = [r.event for r in results if isinstance(r, SentGift)]
            if sent:
                self.outbox.emit_soon(sent)
            if self.on_batch is not None:
                self.on_batch(len(batch), len({shard_of(o.user) for o, _ in batch}))
        finally:
            self._in_flight -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._kick)

    async def _fill_hosts(self, batch: list[tuple[GiftOrder, asyncio.Future[GiftResult]]]
                          ) -> list[tuple[GiftOrder, asyncio.Future[GiftResult]]]:
        """Each order's room host; the gifts of a room whose host cannot be read now fail
        with ``Unavailable`` (nothing debited), the others go on."""
        hosts: dict[str, str | Unavailable] = {}
        for o, _ in batch:
            if not o.host and o.room not in hosts:
                try:
                    hosts[o.room] = await self.host_of(o.room)
                except Unavailable as exc:
                    hosts[o.room] = exc
        if not hosts:
            return batch
        kept = []
        for o, fut in batch:
            if not o.host:
                h = hosts[o.room]
                if isinstance(h, Unavailable):
                    if not fut.done():
                        fut.set_exception(Unavailable(h.message))
                    continue
                o.host = h
            kept.append((o, fut))
        return kept

    async def stop(self) -> None:
        """Shutdown: let the batches out finish (and the queued ones run)."""
        while self._tasks or self._pending:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                self._kick()
                await asyncio.sleep(0)


class Gifts:
    def __init__(self, gw: Gateway, wallet: RedisWallet, outbox: Outbox, boards: RedisLeaderboards, room_gate: RoomGate,
                 hooks: list[GiftHook]) -> None:
        self.gw = gw
        self.wallet = wallet
        self.outbox = outbox
        self.boards = boards
        self.room_gate = room_gate  # the room's host
        self.hooks = hooks  # after each gift (gift lotteries, ops counters)
        self.catalogue = load_catalogue(gw.s.gift_catalogue)
        self.tally = GiftTally()
        self.board_tally = BoardTally()
        self.gate = BoardGate()
        self.dirty: set[str] = set()  # rooms whose board may have moved since the last push
        self._flushing: asyncio.Task[None] | None = None
        r = gw.metrics.registry
        self.m_batches = Counter("lc_gift_batches", "Gift group commits (one wallet pipeline + one log append each)", registry=r)
        self.m_batch_gifts = Counter("lc_gift_batch_gifts", "Gifts decided in group commits", registry=r)
        self.m_batch_shards = Counter("lc_gift_batch_shards", "Wallet shards touched by group commits", registry=r)
        self.batcher = GiftBatcher(wallet, outbox, gw.now_ms, room_gate.host, on_batch=self._count_batch)

    def _count_batch(self, gifts: int, shards: int) -> None:
        self.m_batches.inc()
        self.m_batch_gifts.inc(gifts)
        self.m_batch_shards.inc(shards)

    async def host_of(self, room: str) -> str:
        """The room's host (held by the room gate once read), ``room:<id>`` when unknown.

        Raises:
            Unavailable: Redis unreachable (and the host not yet known).
        """
        return await self.room_gate.host(room)

    async def send(self, conn: Conn, cmd: Gift) -> dict[str, Any]:
        """Debit, log, count for the broadcast and the boards; the reply's ``d``.

        Raises:
            NotFound: (``unknown_gift``). InsufficientFunds. IdempotencyConflict. Unavailable.
        """
        spec, order, fut = self._submit(conn, cmd)
        return await self._settle(conn, cmd, spec, order, fut)

    def _submit(self, conn: Conn, cmd: Gift) -> tuple[GiftSpec, GiftOrder, asyncio.Future[GiftResult]]:
        spec = self.catalogue.get(cmd.gift_id)
        order = GiftOrder(conn.ident.user, conn.room, "", spec, cmd.count, cmd.combo_id, cmd.request_id)  # host: by the batch
        return spec, order, self.batcher.submit(order)

    async def _settle(self, conn: Conn, cmd: Gift, spec: GiftSpec, order: GiftOrder,
                      fut: asyncio.Future[GiftResult]) -> dict[str, Any]:
        r = await fut
        value = spec.price * cmd.count
        if isinstance(r, GiftRefused):
            if r.code == "idempotency_conflict":
                raise IdempotencyConflict(f"request_id {cmd.request_id!r} was used for another gift: use a new id")
            raise InsufficientFunds(f"this gift costs {value} coins; the wallet holds {r.balance}")
        if isinstance(r, GiftReplayed):  # counted, broadcast and ranked by its first send
            return {"balance": r.balance, "combo_id": r.combo.id, "total": r.combo.total, "value": value}
        room, user = order.room, order.user
        self.tally.add(room, user, conn.ident.name, spec.id, r.combo, cmd.count)
        self.board_tally.add_gift(room=room, host=order.host, user=user, value=value)
        for hook in self.hooks:
            await hook(room, user, value)
        return {"balance": r.balance, "combo_id": r.combo.id, "total": r.combo.total, "value": value}

    # ---- per tick: boards, then one gift event per combo that moved
    def on_tick(self, now: float) -> None:
        if (self.tally or self.board_tally) and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        incs = self.board_tally.take()
        try:
            await self.boards.add(incs)
        except Unavailable as exc:
            self.board_tally.restore(incs)
            log.warning("gifts.boards_deferred", extra={"err": exc.message})
        for room, d in self.tally.take(self.catalogue):
            try:
                await self.gw.publish(room, "gift", d)
            except Unavailable as exc:  # a lossy broadcast: the ledger has the gift
                log.warning("gifts.publish_failed", extra={"room": room, "err": exc.message})

    async def stop(self) -> None:
        """Shutdown: finish the gift batches out, wait for the tick's flush, then flush what is left."""
        await self.batcher.stop()
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self.flush()

    def observe(self, env: dict[str, Any]) -> None:
        if env.get("t") == "gift":
            self.dirty.add(env.get("room") or "")

    async def on_second(self) -> None:
        local = self.gw.hub.rooms
        rooms = [r for r in self.dirty if r in local]
        self.dirty.clear()
        if rooms:
            tops = await self.boards.tops(rooms, LEADERBOARD_TOP)
            now = self.gw.now_ms()
            for room, pairs in tops.items():
                top = ranked(pairs)
                if self.gate.changed(room, top):
                    self.gw.hub.send_local(room, envelope("leaderboard", room, {"top": top}, ts=now))
        self.gate.keep_only(local.keys())

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        return {"leaderboard": ranked(await self.boards.top("room", room, LEADERBOARD_TOP))}

    # ---- handlers (gateway.routes)
    def gift(self, conn: Conn, cmd: Gift) -> Awaitable[dict[str, Any]]:
        """A pipelined command (``protocol.commands.PIPELINED``): the gift is submitted to
        the group commit when this is called, in frame order; the returned awaitable is the
        ``ack``.

        Raises:
            NotFound: (``unknown_gift``), at once; the awaitable raises InsufficientFunds,
                IdempotencyConflict or Unavailable.
        """
        spec, order, fut = self._submit(conn, cmd)
        return self._ack(conn, cmd, spec, order, fut)

    async def _ack(self, conn: Conn, cmd: Gift, spec: GiftSpec, order: GiftOrder,
                   fut: asyncio.Future[GiftResult]) -> dict[str, Any]:
        return reply("ack", cmd.id, await self._settle(conn, cmd, spec, order, fut), ts=self.gw.now_ms())

    async def get_catalogue(self, request: web.Request) -> web.Response:
        return web.json_response({"gifts": catalogue_payload(self.catalogue)})

    async def room_board(self, request: web.Request) -> web.Response:
        room, n = request.match_info["room"], clamp_top(request.query.get("n"))
        return web.json_response({"room": room, "top": ranked(await self.boards.top("room", room, n))})

    async def host_board(self, request: web.Request) -> web.Response:
        host, n = request.match_info["host"], clamp_top(request.query.get("n"))
        return web.json_response({"host": host, "top": ranked(await self.boards.top("host", host, n))})

    async def hosts_board(self, request: web.Request) -> web.Response:
        n = clamp_top(request.query.get("n"))
        return web.json_response({"top": ranked(await self.boards.top("hosts", "", n))})
