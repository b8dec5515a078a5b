"""Redis side of refunds: each order's refund record, the atomic gate of every step.

Key ``{order:ID}:refunds`` (hash ``n`` -> JSON ``{n, u, room, q, a, s, d, ts, by, dts,
data}``: user, room, units, cents, state, done flag, request time, decider, decision time,
and the refund's event data without the viewer's note), one slot,
one script (``refunds_record.lua``) per step:

* ``request``: accepted only when every earlier refund of the order is done and nothing
  changed since the caller read the record (a compare-and-set on the next number and the
  units already refunded), so two requests at once make one refund and the other hears
  ``refund_pending``;
* ``decide``: ``requested -> approved | rejected`` once; a concurrent approve and reject
  cannot both win;
* ``settle``: the refunds worker applied the refund's last step in SQL (``done``), which
  opens the order to its next request.

Lifetime: an order with an open refund keeps its record; once every refund of the order is
done the record expires after :data:`RECORD_RETENTION_S` (or the caller's lifetime), past
the refund window, so no request can need it any more (docs/retention.md).

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any, cast

from .errors import Conflict, NotFound
from .fulfilment import decide_after_sale, progress_of
from .keys import Keys
from .redis_conn import guarded
from .refunds import PriorRefund, Refund, RefundState, order_of

RECORD = (files("livecommerce") / "refunds_record.lua").read_text()
RECORD_RETENTION_S = 30 * 86400  # after the order's last refund is done; the window is 15 days


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RefundsRedis:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys
        self._record = redis.register_script(RECORD)

    def _key(self, order_id: str) -> str:
        return self.keys.entity("order", order_id, "refunds")

    async def records(self, order_id: str) -> dict[int, dict[str, Any]]:
        """The order's refund records by number."""
        async with guarded():
            raw = await self._r.hgetall(self._key(order_id))
        return {int(_s(k)): json.loads(v) for k, v in raw.items()}

    async def prior(self, order_id: str) -> list[PriorRefund]:
        return [
            PriorRefund(n, int(r["q"]), int(r["a"]), cast(RefundState, r["s"]), int(r.get("d", 0)) == 1)
            for n, r in sorted((await self.records(order_id)).items())
        ]

    async def record(self, rid: str) -> dict[str, Any] | None:
        """One refund's record (None if unknown).

        Raises:
            BadFrame: not a refund id.
        """
        oid, n = order_of(rid)
        async with guarded():
            raw = await self._r.hget(self._key(oid), str(n))
        return None if raw is None else dict(json.loads(raw))

    async def request(self, r: Refund) -> None:
        """Record refund ``r`` as requested (see the module docstring).

        The order's fulfilment record (``{order:ID}:ship``, same slot) is judged in the same
        step: a refund only before anything shipped, a return only once delivered and before
        receipt is confirmed (:func:`livecommerce.fulfilment.decide_after_sale`).

        Raises:
            Conflict: ``refund_pending`` (an earlier refund is open) or ``refund_changed``
                (another request won the race: read again); ``already_shipped``,
                ``not_delivered``, ``receipt_confirmed`` (the order's progress refuses ``r.kind``).
            Unavailable: Redis unreachable.
        """
        rec = {"n": r.n, "u": r.user_id, "room": r.room_id, "q": r.qty, "a": r.amount, "s": "requested", "d": 0,
               "ts": r.requested_ms, "k": r.kind, "data": r.event_data(with_note=False)}
        async with guarded():
            res = await self._record(keys=[self._key(r.order_id), self.keys.entity("order", r.order_id, "ship")],
                                     args=["request", r.n, json.dumps(rec), r.qty_before, r.kind])
        code = _s(res[0])
        if code == "gate":
            decide_after_sale("return" if r.kind == "return" else "refund", progress_of(_s(res[1])))
            raise Conflict("the order's progress refuses this request", code="not_allowed")  # not reached: the rule raises
        if code == "pending":
            raise Conflict(f"refund {r.order_id}.r{_s(res[1])} of this order is still being handled", code="refund_pending")
        if code == "changed":
            raise Conflict("the order's refunds changed meanwhile: try again", code="refund_changed")

    async def decide(self, rid: str, state: str, *, by: str, now_ms: int) -> bool:
        """``requested -> state`` (approved or rejected); False when it was so already.

        Raises:
            NotFound: no such refund. Conflict: (``illegal_transition``) decided otherwise.
            Unavailable: Redis unreachable.
        """
        oid, n = order_of(rid)
        async with guarded():
            res = await self._record(keys=[self._key(oid)], args=["decide", n, state, by, now_ms])
        code = _s(res[0])
        if code == "unknown":
            raise NotFound(f"no refund {rid}")
        if code == "illegal":
            raise Conflict(f"refund {rid} is {_s(res[1])} already", code="illegal_transition")
        return code == "ok"

    async def settle(self, rid: str, *, retention_s: int = RECORD_RETENTION_S) -> None:
        """Mark the refund done (the worker applied its last step). Idempotent. When no
        refund of the order is open any more, the record expires after ``retention_s``."""
        oid, n = order_of(rid)
        async with guarded():
            await self._record(keys=[self._key(oid)], args=["settle", n, int(retention_s) * 1000])
