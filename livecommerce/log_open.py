"""Opening the durable log the settings name: Kafka when ``LC_KAFKA_BOOTSTRAP`` is set, else
Redis Streams.

It lives apart from :mod:`livecommerce.log` (the port, its memory twin and the event codec)
because it knows the backends: ``log_redis`` and ``log_kafka`` import the port, and this
module imports them, so nothing imports in a circle.
"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .errors import ConfigError
from .keys import Keys
from .log import Log
from .log_redis import RedisLog
from .redis_conn import connect


def open_log(
    settings: Settings,
    redis: Any = None,
    *,
    partitions: int | None = None,
    claim_idle_ms: int | None = None,
    **kafka_options: Any,
) -> Log:
    """The configured log: Kafka when ``settings.kafka_bootstrap`` is set, else Redis Streams.

    Redis uses ``redis`` (a ``redis.asyncio.Redis`` or ``RedisCluster``, left open on close)
    or else a client of its own for ``settings.redis_url`` (closed on close), with
    ``partitions`` streams per topic (default 1) and ``claim_idle_ms``. Kafka uses
    ``settings.kafka_partitions`` (or ``partitions``), ``settings.kafka_idempotent`` and
    ``kafka_options`` (see :class:`~livecommerce.log_kafka.KafkaLog`).

    Raises:
        ConfigError: neither Kafka nor Redis is configured, or a partition count below 1.
    """
    if claim_idle_ms is None:
        claim_idle_ms = settings.log_claim_idle_ms
    if settings.kafka_bootstrap:
        from .log_kafka import KafkaLog

        kafka_options.setdefault("session_timeout_ms", settings.kafka_session_timeout_ms)
        if settings.log_max_age_s > 0:  # the broker's retention is the log's hard cap
            kafka_options.setdefault("retention_ms", settings.log_max_age_s * 1000)
        kafka_options.setdefault("heartbeat_interval_ms", max(100, settings.kafka_session_timeout_ms // 5))
        return KafkaLog(
            settings.kafka_bootstrap,
            prefix=settings.key_prefix,
            partitions=partitions or settings.kafka_partitions,
            idempotent=settings.kafka_idempotent,
            client_id=settings.node_id or "livecommerce",
            **kafka_options,
        )
    owned = redis is None
    if owned:
        if not settings.redis_url:
            raise ConfigError("the durable log needs LC_REDIS_URL or LC_KAFKA_BOOTSTRAP")
        redis = connect(settings.redis_url)
    return RedisLog(
        redis, Keys(settings.key_prefix), partitions=partitions or settings.log_partitions, claim_idle_ms=claim_idle_ms, owns_client=owned
    )
