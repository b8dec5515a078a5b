"""Redis side of invites and acquisitions: who owns a code, each user's code, and the
first acquisition of each user.

Keys:

* ``{invite:CODE}:owner``  the user who owns the code (SET NX: codes are never reused)
* ``{user:ID}:invite``     the user's code (SET NX: one code per user, the first wins)
* ``{user:ID}:acq``        JSON of the user's first acquisition (SET NX: later reports
  answer the first one and append nothing)

These are the source of truth for codes (like rooms' meta hashes); SQL keeps the
acquisitions the growth worker applied. Driver errors become
:class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .keys import Keys
from .redis_conn import guarded
from .referrals import new_code


def _s(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


class ReferralsRedis:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys

    def _owner_key(self, code: str) -> str:
        return self.keys.entity("invite", code, "owner")

    async def code_of(self, user: str) -> str | None:
        async with guarded():
            return _s(await self._r.get(self.keys.user(user, "invite")))

    async def ensure_code(self, user: str, random_bytes: Callable[[int], bytes]) -> str:
        """The user's invite code, created on first use (``random_bytes(n)`` is the
        randomness; a collision with another user's code draws again).

        Raises:
            Unavailable: Redis unreachable.
        """
        have = await self.code_of(user)
        if have is not None:
            return have
        for _ in range(8):
            code = new_code(random_bytes(8))
            async with guarded():
                if not await self._r.set(self._owner_key(code), user, nx=True):
                    continue  # somebody else's code
                if await self._r.set(self.keys.user(user, "invite"), code, nx=True):
                    return code
                await self._r.delete(self._owner_key(code))  # a concurrent request won
                winner = _s(await self._r.get(self.keys.user(user, "invite")))
            if winner is not None:
                return winner
        raise RuntimeError("could not draw a free invite code")  # 8 collisions in 2^40: broken randomness

    async def owner(self, code: str) -> str | None:
        async with guarded():
            return _s(await self._r.get(self._owner_key(code)))

    async def acquire(self, user: str, record: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Remember ``record`` as the user's acquisition unless one exists: ``(first,
        the acquisition that holds)``."""
        key = self.keys.user(user, "acq")
        async with guarded():
            if await self._r.set(key, json.dumps(record), nx=True):
                return True, record
            raw = await self._r.get(key)
        return False, json.loads(raw) if raw else record
