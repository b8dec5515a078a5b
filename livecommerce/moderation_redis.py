"""Redis side of room moderation (rules: :mod:`livecommerce.moderation`).

Keys:

* ``{room:ID}:mod``: a room's moderation hash: ``m:<user>`` (moderators), ``mute:<user>``,
  ``kick:<user>``, ``ban:<user>`` (each an ``until_ms``, ``0`` for good), ``slow`` (slow mode
  seconds) and ``chat`` (the chat mode). In the room's slot, beside the room's history and
  channel.
* ``mod:platform``: the platform's bans, ``ban:<user>`` -> ``until_ms``.

Every change is one script call (``moderation_apply.lua``) that sets and deletes its fields,
gives the change a version (field ``v``: above the last, seeded from the server clock in
microseconds), prunes the mutes, kicks and bans that ended and sets the hash's lifetime (for
good while it holds a moderator, a setting or a for-good ban; else until its last timed
entry ends). The change is then announced with its version by the caller (the room's ``moderation`` event, or the platform
inbox every gateway node reads: :data:`PLATFORM_INBOX`). Driver errors become
:class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from .errors import Conflict
from .keys import Keys
from .moderation import MAX_MODERATORS, Change
from .redis_conn import guarded

APPLY = (files("livecommerce") / "moderation_apply.lua").read_text()

#: the inbox every gateway node subscribes to (``Keys.node_inbox`` of this name): platform
#: bans and unbans reach every node at once
PLATFORM_INBOX = "*moderation"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisModeration:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys
        self._apply = redis.register_script(APPLY)

    def room_key(self, room: str) -> str:
        return self.keys.room(room, "mod")

    @property
    def platform_key(self) -> str:
        return self.keys.global_key("mod:platform")

    async def load(self, room: str) -> dict[str, str]:
        """The room's moderation hash (one read).

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            raw = await self._r.hgetall(self.room_key(room))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def apply(self, room: str, change: Change, *, now_ms: int) -> int:
        """Write one change of the room's moderation; return its version.

        Raises:
            Conflict: (``too_many_moderators``) the room has :data:`MAX_MODERATORS` already.
            Unavailable: Redis unreachable.
        """
        sets, dels = change.fields()
        return await self._run(self.room_key(room), sets, dels, now_ms=now_ms, cap=MAX_MODERATORS)

    async def _run(self, key: str, sets: Mapping[str, str], dels: list[str], *, now_ms: int, cap: int) -> int:
        args: list[Any] = [now_ms, cap, len(sets)]
        for f, v in sets.items():
            args += [f, v]
        args += dels
        async with guarded():
            status, version = await self._apply(keys=[key], args=args)
        if _s(status) != "ok":
            raise Conflict(f"a room has at most {cap} moderators: remove one first", code=_s(status))
        return int(_s(version))

    async def platform(self) -> tuple[dict[str, int], int]:
        """Every platform ban (user -> until_ms, 0: for good; ended ones included, the
        caller's rule drops them) and the version of the read.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            raw = await self._r.hgetall(self.platform_key)
        out: dict[str, int] = {}
        version = 0
        for k, v in raw.items():
            kind, _, user = _s(k).partition(":")
            try:
                if kind == "ban" and user:
                    out[user] = int(v)
                elif _s(k) == "v":
                    version = int(v)
            except ValueError:
                continue
        return out, version

    async def platform_ban(self, user: str, until: int | None, *, now_ms: int) -> int:
        """Ban ``user`` from the platform until ``until`` (:data:`FOREVER`: for good), or
        lift the ban (``until`` None); return the change's version.

        Raises:
            Unavailable: Redis unreachable.
        """
        f = f"ban:{user}"
        if until is None:
            return await self._run(self.platform_key, {}, [f], now_ms=now_ms, cap=0)
        return await self._run(self.platform_key, {f: str(until)}, [], now_ms=now_ms, cap=0)
