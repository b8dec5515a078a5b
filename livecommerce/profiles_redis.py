"""Redis side of a viewer's data erasure (``DELETE /api/v1/me/data``).

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
from .log import decode_event
from .redis_conn import guarded
from .wallet import shard_of

WALLET = (files("livecommerce") / "erasure_wallet.lua").read_text()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


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
        for part in ("points", "coupons", f"cmt:{day}", f"cmt:{day - 1}"):
            pipe.delete(self.keys.user(user, part))
        async with guarded():
            await pipe.execute()
