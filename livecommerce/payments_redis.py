"""What the gateway remembers of payments, in Redis: each order's intent, the provider refunds
it asked for, the callback events seen, and the callbacks' log for ops.

| key | type | holds |
| --- | --- | --- |
| ``lc:{payorder:ORDER}:intent`` | string | the :class:`~livecommerce.payments.IntentRecord` (JSON), set once (``SET NX``) |
| ``lc:{payorder:ORDER}:refunds`` | hash | provider refund id -> ``{id, intent_id, amount, reason, ts}`` |
| ``lc:{payevt:EVENT}:seen`` | string | a callback event id met before (ops' ``duplicate`` flag; effects are idempotent anyway) |
| ``lc:payments:callbacks`` | stream | every callback with its verification result (capped) |
| ``lc:payments:refunds`` | stream | every provider refund the gateway asked for (capped) |

Intents, refunds and seen ids live :data:`RECORD_TTL_S` (the refund window and more).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from .keys import Keys
from .payments import IntentRecord
from .redis_conn import guarded

RECORD_TTL_S = 30 * 86400
CALLBACKS_KEPT = 10_000


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class PaymentsRedis:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.r = redis
        self.keys = keys

    def _intent_key(self, order_id: str) -> str:
        return self.keys.entity("payorder", order_id, "intent")

    async def put_intent(self, rec: IntentRecord) -> IntentRecord:
        """Record ``rec`` unless the order has an intent already; the order's intent."""
        async with guarded():
            if await self.r.set(self._intent_key(rec.order_id), json.dumps(asdict(rec)), nx=True, ex=RECORD_TTL_S):
                return rec
        got = await self.intent(rec.order_id)
        assert got is not None
        return got

    async def intent(self, order_id: str) -> IntentRecord | None:
        async with guarded():
            raw = await self.r.get(self._intent_key(order_id))
        return None if raw is None else IntentRecord(**json.loads(raw))

    async def first_seen(self, event_id: str) -> bool:
        """True the first time a callback event id is met."""
        async with guarded():
            return bool(await self.r.set(self.keys.entity("payevt", event_id, "seen"), "1", nx=True, ex=RECORD_TTL_S))

    async def record_refund(self, order_id: str, refund: dict[str, Any]) -> None:
        key = self.keys.entity("payorder", order_id, "refunds")
        async with guarded():
            pipe = self.r.pipeline(transaction=False)
            pipe.hset(key, str(refund["id"]), json.dumps(refund))
            pipe.expire(key, RECORD_TTL_S)
            pipe.xadd(self.keys.global_key("payments:refunds"), {"j": json.dumps({"order_id": order_id, **refund})},
                      maxlen=CALLBACKS_KEPT, approximate=True)
            await pipe.execute()

    async def refunds(self, order_id: str) -> list[dict[str, Any]]:
        async with guarded():
            raw = await self.r.hvals(self.keys.entity("payorder", order_id, "refunds"))
        return sorted((json.loads(x) for x in raw), key=lambda d: (d.get("ts", 0), d["id"]))

    async def log_callback(self, entry: dict[str, Any]) -> None:
        async with guarded():
            await self.r.xadd(self.keys.global_key("payments:callbacks"), {"j": json.dumps(entry)},
                              maxlen=CALLBACKS_KEPT, approximate=True)

    async def _page(self, name: str, limit: int, offset: int) -> list[dict[str, Any]]:
        async with guarded():
            rows = await self.r.xrevrange(self.keys.global_key(name), count=offset + limit)
        return [{"id": _s(i), **json.loads(f[b"j"] if b"j" in f else f["j"])} for i, f in rows[offset:offset + limit]]

    async def callbacks(self, *, limit: int, offset: int) -> list[dict[str, Any]]:
        """The callbacks, newest first."""
        return await self._page("payments:callbacks", limit, offset)

    async def all_refunds(self, *, limit: int, offset: int) -> list[dict[str, Any]]:
        """The provider refunds the gateway asked for, newest first."""
        return await self._page("payments:refunds", limit, offset)
