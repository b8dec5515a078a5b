"""Redis implementation of the :class:`~livecommerce.presence.Presence` port.

* ``lc:{room:ID}:online``: hash node -> ``"<count>:<reported ms>"``, in the room's slot;
  it expires ``room_ttl_s`` after the last report of any node. Stale fields are deleted by
  the next report that sees them (``ops`` and the feed read the same hash).
* ``lc:{user:U}:nodes``: hash node -> open connections of the user, expiring a day after
  the last change (a node that died with connections open leaves a count behind that long;
  its inbox then has no reader).

A report of many rooms is one pipelined round trip (a cluster client splits it by slot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

from .keys import Keys
from .presence import tally
from .redis_conn import guarded, is_cluster_client

_USER_NODES = (files(__package__) / "presence_user_nodes.lua").read_text()
_USERS_CONNECTED = (files(__package__) / "presence_users.lua").read_text()
_SCRIPT_FROM = 8  # users from which user_nodes asks one script instead of a pipeline


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _reports(fields: Mapping[Any, Any]) -> dict[str, tuple[int, int]]:
    """Parse an online hash; a field that does not parse counts as a stale report."""
    out: dict[str, tuple[int, int]] = {}
    for node, value in fields.items():
        cnt, _, ts = _text(value).partition(":")
        try:
            out[_text(node)] = (int(cnt), int(ts))
        except ValueError:
            out[_text(node)] = (0, 0)
    return out


class RedisPresence:
    def __init__(self, redis: Any, keys: Keys, *, room_ttl_s: int = 60, user_ttl_s: int = 24 * 3600) -> None:
        self._nodes_many: Any = None  # the script of user_nodes, registered on first use
        self._users_many: Any = None  # the script of users_connected, likewise
        self._r = redis
        self._keys = keys
        self._room_ttl_s = room_ttl_s
        self._user_ttl_s = user_ttl_s

    async def report(self, node: str, counts: Mapping[str, int], *, now_ms: int) -> dict[str, int]:
        if not counts:
            return {}
        rooms = list(counts)
        out: dict[str, int] = {}
        async with guarded():
            pipe = self._r.pipeline(transaction=False)
            for room in rooms:
                key = self._keys.room_online(room)
                pipe.hset(key, node, f"{counts[room]}:{now_ms}")
                pipe.expire(key, self._room_ttl_s)
                pipe.hgetall(key)
            res = await pipe.execute()
            for i, room in enumerate(rooms):
                total, stale = tally(_reports(res[i * 3 + 2]), now_ms)
                if stale:
                    await self._r.hdel(self._keys.room_online(room), *stale)
                out[room] = total
        return out

    async def forget(self, node: str, room: str) -> None:
        async with guarded():
            await self._r.hdel(self._keys.room_online(room), node)

    async def online(self, rooms: Sequence[str], *, now_ms: int) -> dict[str, int]:
        if not rooms:
            return {}
        async with guarded():
            if len(rooms) == 1:  # the common case (one room's page): no pipeline object
                got = [await self._r.hgetall(self._keys.room_online(rooms[0]))]
            else:
                pipe = self._r.pipeline(transaction=False)
                for room in rooms:
                    pipe.hgetall(self._keys.room_online(room))
                got = await pipe.execute()
        return {room: tally(_reports(fields), now_ms)[0] for room, fields in zip(rooms, got, strict=True)}

    async def user_connected(self, user: str, node: str, delta: int) -> None:
        key = self._keys.user_nodes(user)
        async with guarded():
            # one round trip on the connect path (a rush connects thousands at once)
            pipe = self._r.pipeline(transaction=False)
            pipe.hincrby(key, node, delta)
            pipe.expire(key, self._user_ttl_s)
            n, _ = await pipe.execute()
            if n <= 0:
                await self._r.hdel(key, node)

    async def users_connected(self, node: str, deltas: Mapping[str, int]) -> None:
        """One script call on a single Redis (``presence_users.lua``: a join storm's batch
        costs the gateway a fraction of a pipeline's per-command work), one pipeline of
        HINCRBY and EXPIRE per user on a cluster (each user's key is in its own slot)."""
        users = [u for u, d in deltas.items() if d]
        if not users:
            return
        async with guarded():
            if not is_cluster_client(self._r):
                if self._users_many is None:
                    self._users_many = self._r.register_script(_USERS_CONNECTED)
                await self._users_many(keys=[self._keys.user_nodes(u) for u in users],
                                       args=[node, self._user_ttl_s, *(deltas[u] for u in users)])
                return
            pipe = self._r.pipeline(transaction=False)
            for user in users:
                key = self._keys.user_nodes(user)
                pipe.hincrby(key, node, deltas[user])
                pipe.expire(key, self._user_ttl_s)
            res = await pipe.execute()
            gone = [u for i, u in enumerate(users) if int(res[2 * i]) <= 0]
            if gone:  # rare (a close whose open was lost): a second round trip
                pipe = self._r.pipeline(transaction=False)
                for user in gone:
                    pipe.hdel(self._keys.user_nodes(user), node)
                await pipe.execute()

    async def user_nodes(self, users: Sequence[str]) -> dict[str, list[str]]:
        """One HGETALL, one script call for many users on a single Redis (a worker's batch of
        pushes: the replies are parsed in C, about seven times cheaper than a pipeline), or
        one pipeline of HGETALL on a cluster (the users' keys are in their own slots)."""
        if not users:
            return {}
        async with guarded():
            if len(users) == 1:
                got: list[Any] = [await self._r.hgetall(self._keys.user_nodes(users[0]))]
            elif len(users) >= _SCRIPT_FROM and not is_cluster_client(self._r):
                if self._nodes_many is None:
                    self._nodes_many = self._r.register_script(_USER_NODES)
                flat = await self._nodes_many(keys=[self._keys.user_nodes(u) for u in users])
                got = [dict(zip(f[::2], f[1::2], strict=True)) for f in flat]
            else:
                pipe = self._r.pipeline(transaction=False)
                for u in users:
                    pipe.hgetall(self._keys.user_nodes(u))
                got = await pipe.execute()
        return {u: [_text(n) for n, c in (fields or {}).items() if int(c) > 0] for u, fields in zip(users, got, strict=True)}
