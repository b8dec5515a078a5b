"""Redis side of experiments: the definitions every gateway and worker reads.

Keys (one slot, ``{exp}``):

* ``lc:{exp}:defs``  hash experiment id -> JSON definition (:meth:`Experiment.to_dict`)
* ``lc:{exp}:v``     version counter, bumped by every change

Changes are compare-and-set on the version (:data:`CAS`, one script): the caller reads
the definitions at version ``v``, validates the change against them (one running owner
per flag, :func:`livecommerce.experiments.check_flag_owners`) and writes only if the
version is still ``v``, retrying otherwise. So two ops creating experiments on the same
flag at the same moment cannot both succeed.

:class:`ExperimentCache` keeps a :class:`~livecommerce.experiments.Book` per process and
reloads it when the version moved, at most every ``refresh_s`` seconds (2 by default): a
new or stopped experiment reaches every node within seconds, and a flag read costs no
Redis call. Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .errors import Conflict, NotFound
from .experiments import Book, Experiment, check_flag_owners
from .keys import Keys
from .redis_conn import guarded

CAS = """
-- KEYS[1] defs hash, KEYS[2] version; ARGV[1] expected version, ARGV[2] id, ARGV[3] json,
-- ARGV[4] '1' when the id must be new. Returns the new version, -1 stale, -2 id taken.
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) then return -1 end
if ARGV[4] == '1' and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return -2 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return redis.call('INCR', KEYS[2])
"""
RETRIES = 8


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class ExperimentsRedis:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self._defs = keys.global_key("{exp}:defs")
        self._ver = keys.global_key("{exp}:v")
        self._cas = redis.register_script(CAS)

    async def version(self) -> int:
        async with guarded():
            return int(await self._r.get(self._ver) or 0)

    async def load(self) -> tuple[int, dict[str, Experiment]]:
        """``(version, definitions)`` read together (one transaction)."""
        async with guarded():
            pipe = self._r.pipeline(transaction=True)
            pipe.get(self._ver)
            pipe.hgetall(self._defs)
            v, raw = await pipe.execute()
        exps = {_s(k): Experiment.from_dict(json.loads(val)) for k, val in raw.items()}
        return int(v or 0), exps

    async def get(self, exp_id: str) -> Experiment:
        """Raises: NotFound."""
        async with guarded():
            raw = await self._r.hget(self._defs, exp_id)
        if raw is None:
            raise NotFound(f"no experiment {exp_id!r}")
        return Experiment.from_dict(json.loads(raw))

    async def create(self, exp: Experiment) -> Experiment:
        """Store a new experiment.

        Raises:
            Conflict: the id exists, or a running experiment controls one of its flags.
        """

        def change(_old: Experiment | None, others: dict[str, Experiment]) -> Experiment:
            check_flag_owners(exp, others.values())
            return exp

        return await self._change(exp.id, change, new=True)

    async def update(self, exp_id: str, fn: Callable[[Experiment], Experiment]) -> Experiment:
        """Apply ``fn`` to the stored experiment (e.g. a life-cycle step) and store it.

        Raises:
            NotFound. Conflict: from ``fn`` or the flag rule.
        """

        def change(old: Experiment | None, others: dict[str, Experiment]) -> Experiment:
            if old is None:
                raise NotFound(f"no experiment {exp_id!r}")
            new = fn(old)
            check_flag_owners(new, others.values())
            return new

        return await self._change(exp_id, change, new=False)

    async def _change(self, exp_id: str, fn: Callable[[Experiment | None, dict[str, Experiment]], Experiment], *, new: bool) -> Experiment:
        for _ in range(RETRIES):
            v, exps = await self.load()
            if new and exp_id in exps:
                raise Conflict(f"experiment {exp_id!r} exists", code="conflict")
            result = fn(exps.get(exp_id), exps)
            async with guarded():
                got = int(await self._cas(keys=[self._defs, self._ver], args=[v, exp_id, json.dumps(result.to_dict()), "1" if new else "0"]))
            if got == -2:
                raise Conflict(f"experiment {exp_id!r} exists", code="conflict")
            if got > 0:
                return result
        raise Conflict("experiments are changing; try again", code="conflict")


class ExperimentCache:
    """A per-process :class:`Book`, reloaded when the stored version moves (checked at
    most every ``refresh_s`` seconds on ``clock``)."""

    def __init__(self, store: ExperimentsRedis, *, refresh_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._clock = clock
        self.book = Book()
        self.version = -1
        self._next = 0.0

    async def refresh(self, *, force: bool = False) -> Book:
        """The current book (Redis read only when due or forced).

        Raises:
            Unavailable: Redis unreachable (the previous book stays in use).
        """
        now = self._clock()
        if not force and now < self._next:
            return self.book
        self._next = now + self.refresh_s
        if not force and await self.store.version() == self.version:
            return self.book
        v, exps = await self.store.load()
        self.book, self.version = Book(exps.values()), v
        return self.book
