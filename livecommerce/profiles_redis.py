"""Redis side of profiles: what the fold reads (:class:`Resolver`) and a viewer's data
erasure (``DELETE /api/v1/me/data``, :class:`ErasureRedis`).

* :class:`Resolver`: a room's host (``{room:ID}:meta`` ``host``) and a sale's product
  category (``{sale:ID}:meta`` ``product_id`` -> ``{product:ID}:meta`` ``category``), which
  :func:`livecommerce.profiles.contributions` asks through its ``Context``; read in two
  pipelined round trips per batch and cached in the process (hosts and categories do not
  change under a sale).

* The wallet balance moves to the pseudonym (``erasure_wallet.lua``: out of the user's
  shard once, into the pseudonym's shard once per erasure token), so the Redis balance of
  each key still equals the sum of its SQL ledger rows once the ledger rows are re-keyed.
  A crash between the two calls is finished by the next attempt: the ``out`` record
  (``{wallet:N}:erasing``) keeps the amount until the ``in`` call has credited it.
* The user's own keys (points cache, coupon list, fan version counter, today's comment
  counter) are deleted, and the user leaves the fan badges and boards.

:func:`wallet_quiet` is the precondition: no wallet event of the user still on its way to
the ledger (nothing in the outbox, and the ledger sum equals the Redis balance).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from .fanclub_redis import FanclubRedis
from .keys import Keys
from .log import LogEvent, decode_event
from .redis_conn import guarded
from .wallet import shard_of

WALLET = (files("livecommerce") / "erasure_wallet.lua").read_text()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Resolver:
    """Rooms' hosts and sales' product categories from Redis, cached in the process."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.hosts: dict[str, str | None] = {}
        self.categories: dict[str, str | None] = {}

    async def prepare(self, events: Iterable[LogEvent]) -> None:
        """Look up what the events need and the cache does not hold yet.

        Raises:
            Unavailable: Redis unreachable.
        """
        rooms: set[str] = set()
        sales: set[str] = set()
        for e in events:
            room = e.data.get("room") or e.data.get("room_id")
            if room and str(room) not in self.hosts:
                rooms.add(str(room))
            sale = e.data.get("sale_id")
            if e.type in ("order.paid", "order.refunded") and sale and str(sale) not in self.categories:
                sales.add(str(sale))
        if not rooms and not sales:
            return
        rl, sl = sorted(rooms), sorted(sales)
        pipe = self.redis.pipeline(transaction=False)
        for room in rl:
            pipe.hget(self.keys.room_meta(room), "host")
        for sale in sl:
            pipe.hget(self.keys.sale(sale, "meta"), "product_id")
        async with guarded():
            got = await pipe.execute()
        for room, v in zip(rl, got[: len(rl)], strict=True):
            self.hosts[room] = _s(v) if v else None
        products = {sale: _s(v) for sale, v in zip(sl, got[len(rl) :], strict=True) if v}
        if products:
            pipe = self.redis.pipeline(transaction=False)
            for pid in products.values():
                pipe.hget(self.keys.entity("product", pid, "meta"), "category")
            async with guarded():
                cats = await pipe.execute()
            by_product = {pid: (_s(c) if c else None) for pid, c in zip(products.values(), cats, strict=True)}
            for sale in sl:
                self.categories[sale] = by_product.get(products[sale]) if sale in products else None
        for sale in sl:
            self.categories.setdefault(sale, None)

    def host_of(self, room: str) -> str | None:
        return self.hosts.get(room)

    def category_of(self, sale: str) -> str | None:
        return self.categories.get(sale)


class ErasureRedis:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys
        self._wallet = redis.register_script(WALLET)

    def _w(self, user: str, part: str) -> str:
        return self.keys.entity("wallet", str(shard_of(user)), part)

    async def balance(self, user: str) -> int:
        async with guarded():
            return int(await self._r.hget(self._w(user, "bal"), user) or 0)

    async def outbox_pending(self, user: str) -> int:
        """The user's wallet events not yet appended to the log."""
        n = 0
        async with guarded():
            async for _eid, raw in self._r.hscan_iter(self._w(user, "out"), count=500):
                try:
                    if decode_event(raw).key == user:
                        n += 1
                except ValueError:
                    continue
        return n

    async def move_wallet(self, user: str, alias: str, *, now_ms: int) -> int:
        """Move the user's balance to ``alias``; return the amount moved."""
        async with guarded():
            rec = _s(await self._wallet(keys=[self._w(user, "bal"), self._w(user, "erasing")], args=["out", user, now_ms]))
            amount, _, ts = rec.partition("|")
            await self._wallet(keys=[self._w(alias, "bal"), self._w(alias, "erased")], args=["in", alias, f"{alias}:{ts}", int(amount)])
            await self._wallet(keys=[self._w(user, "erasing")], args=["done", user])
        return int(amount)

    async def forget(self, user: str, hosts: Iterable[str], *, day: int) -> None:
        await FanclubRedis(self._r, self.keys).forget(user, hosts)
        pipe = self._r.pipeline(transaction=False)
        for part in ("points", "coupons", "unread", f"cmt:{day}", f"cmt:{day - 1}"):
            pipe.delete(self.keys.user(user, part))
        async with guarded():
            await pipe.execute()
