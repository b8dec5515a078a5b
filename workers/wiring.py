"""What a worker process is built from, in one place: the Redis client, the durable log, the
SQL store, the room broker and the private-message notifier.

Every worker's ``run(settings, stop)`` opens one :class:`Engines` and asks it for what it
needs; each engine is made from the :class:`~livecommerce.config.Settings` the first time it
is asked for, in dependency order (the log and the broker use the Redis client, the notifier
the broker), and :meth:`Engines.close` closes what it made, in the reverse order. An engine
given to the constructor (tests hand in their Redis client, a memory log, their store) is
used as it is and left open: its owner closes it.

Nothing here speaks to Redis or SQL itself: the library's adapters do
(:func:`livecommerce.redis_conn.connect`, :func:`livecommerce.log_open.open_log`,
:class:`livecommerce.store_sql.SqlStore`, :class:`livecommerce.broker_redis.RedisBroker`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from livecommerce.broker_redis import RedisBroker
from livecommerce.config import Settings
from livecommerce.keys import Keys
from livecommerce.log import Log
from livecommerce.log_open import open_log
from livecommerce.notify import Notifier
from livecommerce.redis_conn import connect
from livecommerce.store_sql import SqlStore


class Engines:
    """A worker's engines, each made on first use (see the module docstring)."""

    def __init__(self, settings: Settings, *, redis: Any = None, durable: Log | None = None,
                 store: SqlStore | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._redis = redis
        self._log = durable
        self._store = store
        self._broker: RedisBroker | None = None
        self._notifier: Notifier | None = None
        self._made: list[str] = []  # what close() closes, in the order it was made

    @property
    def redis(self) -> Any:
        """The Redis client (``redis.asyncio.Redis`` or ``RedisCluster``) for ``LC_REDIS_URL``."""
        if self._redis is None:
            self._redis = connect(self.settings.redis_url)
            self._made.append("redis")
        return self._redis

    @property
    def log(self) -> Log:
        """The durable log the settings name (Kafka or Redis Streams on :attr:`redis`).

        Raises:
            ConfigError: neither Kafka nor Redis is configured.
        """
        if self._log is None:
            self._log = open_log(self.settings, None if self.settings.kafka_bootstrap else self.redis)
            self._made.append("log")
        return self._log

    @property
    def store(self) -> SqlStore:
        """The SQL store at ``LC_DATABASE_URL``.

        Raises:
            ConfigError: bad database URL.
        """
        if self._store is None:
            self._store = SqlStore(self.settings.database_url)
            self._made.append("store")
        return self._store

    @property
    def broker(self) -> RedisBroker:
        """The room broker on :attr:`redis` (sharded pub/sub on a cluster): publish only."""
        if self._broker is None:
            self._broker = RedisBroker(self.redis, self.keys)
            self._made.append("broker")
        return self._broker

    @property
    def notifier(self) -> Notifier:
        """Private events to a user's connections, through :attr:`broker`."""
        if self._notifier is None:
            self._notifier = Notifier(self.redis, self.broker, self.keys)
        return self._notifier

    async def close(self) -> None:
        """Close what this object made (never what it was given), newest first."""
        made, self._made = self._made, []
        for what in reversed(made):
            if what == "log" and self._log is not None:
                await self._log.close()
            elif what == "store" and self._store is not None:
                await self._store.close()
            elif what == "broker" and self._broker is not None:
                await self._broker.close()
            elif what == "redis" and self._redis is not None:
                await self._redis.aclose()

    async def __aenter__(self) -> Engines:
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
