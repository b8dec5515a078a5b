"""The ``Log`` port: the durable plane (at-least-once), and its in-memory twin.

Contract (both backends, checked by ``tests/test_log_contract.py``):

* ``append(topic, key, type, data)`` stores an event durably before returning its event id.
  Events with the same ``key`` keep their order (one partition per key).
* A consumer group sees every event at least once. An event handed to a consumer stays
  pending until ``ack``; if that consumer dies, the event is redelivered to another
  consumer of the group (Redis: XAUTOCLAIM after ``claim_idle_ms``; Kafka: rebalance and
  the last committed offset).
* Effects must be idempotent on ``LogEvent.id``: that is how at-least-once delivery becomes
  exactly-once effects (see ``livecommerce.store``: ``applied_events``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

TOPICS = ("orders", "gifts", "points", "lottery", "activity")


@dataclass(frozen=True, slots=True)
class LogEvent:
    id: str  # globally unique event id: the idempotency key of every effect
    topic: str
    key: str  # partition key: order id, user id, room id
    type: str  # e.g. order.reserved, order.paid, gift.sent
    data: dict[str, Any]
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class Delivery:
    event: LogEvent
    token: Any  # backend handle used by ack (stream id / partition+offset)


class Consumer(Protocol):
    async def fetch(self, *, max_events: int = 100, timeout_ms: int = 1000) -> list[Delivery]: ...

    async def ack(self, deliveries: list[Delivery]) -> None: ...

    async def close(self) -> None: ...


class Log(Protocol):
    async def append(
        self, topic: str, key: str, type: str, data: dict[str, Any], *, event_id: str | None = None, ts: int | None = None
    ) -> str: ...

    async def consumer(self, topic: str, group: str, name: str) -> Consumer: ...

    async def close(self) -> None: ...
