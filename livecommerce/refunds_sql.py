"""SQL side of refunds: the ``refunds`` table as the refunds worker keeps it, and its reads.

The table was created in schema version 1 with the request's core columns; version 2
(:mod:`livecommerce.migrations`) added ``note``, ``room_id``, ``sale_id``, ``decision_note``,
``settled_ms``, ``restocked`` and ``credited``. :data:`livecommerce.schema.refunds` is the
full shape, for queries (step 1 keeps its frozen version-1 copy in ``migrations``).

Every write is idempotent and order-tolerant, because the worker may see a refund's steps
out of order (several consumers, redelivery): :func:`ensure` inserts the row from whatever
event comes first (every refund event carries the whole refund), :func:`decide` moves it
only out of ``requested``, :func:`settle` only out of ``approved``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Table,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .refunds import Refund
from .schema import refunds as refunds
from .store_sql import SqlStore


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


async def ensure(conn: AsyncConnection, r: Refund) -> None:
    """Insert the refund as ``requested`` unless it is there; fill a missing note."""
    stmt = _insert(conn, refunds).values(
        id=r.id,
        order_id=r.order_id,
        user_id=r.user_id,
        qty=r.qty,
        amount=r.amount,
        reason=r.reason,
        state="requested",
        requested_ms=r.requested_ms,
        note=r.note or None,
        room_id=r.room_id,
        sale_id=r.sale_id,
    )
    await conn.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
    if r.note:
        await conn.execute(update(refunds).where(refunds.c.id == r.id, refunds.c.note.is_(None)).values(note=r.note))


async def decide(conn: AsyncConnection, rid: str, state: str, *, by: str, ts_ms: int, note: str | None) -> bool:
    """``requested -> approved|rejected``; False when it had left ``requested`` already."""
    res = await conn.execute(
        update(refunds)
        .where(refunds.c.id == rid, refunds.c.state == "requested")
        .values(state=state, decided_by=by, decided_ms=ts_ms, decision_note=note)
    )
    return bool(res.rowcount)


async def settle(conn: AsyncConnection, rid: str, *, ts_ms: int, restocked: bool, credited: int) -> bool:
    """``approved -> refunded`` (settled); False when it was settled already."""
    res = await conn.execute(
        update(refunds)
        .where(refunds.c.id == rid, refunds.c.state == "approved")
        .values(state="refunded", settled_ms=ts_ms, restocked=restocked, credited=credited)
    )
    return bool(res.rowcount)


def row_json(r: Any) -> dict[str, Any]:
    return {
        "refund_id": r.id,
        "order_id": r.order_id,
        "user_id": r.user_id,
        "room_id": r.room_id,
        "sale_id": r.sale_id,
        "qty": r.qty,
        "amount": r.amount,
        "reason": r.reason,
        "note": r.note,
        "state": r.state,
        "requested_ms": r.requested_ms,
        "decided_by": r.decided_by,
        "decided_ms": r.decided_ms,
        "decision_note": r.decision_note,
        "settled_ms": r.settled_ms,
        "restocked": r.restocked,
        "credited": r.credited,
    }


async def get(store: SqlStore, rid: str) -> dict[str, Any] | None:
    async with store.read() as tx:
        row = (await tx.conn.execute(select(refunds).where(refunds.c.id == rid))).first()
    return None if row is None else row_json(row)


async def list_refunds(
    store: SqlStore,
    *,
    order_ids: Sequence[str] | None = None,
    user_id: str | None = None,
    room_id: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Refunds matching every given filter, newest request first."""
    q = select(refunds)
    if order_ids is not None:
        q = q.where(refunds.c.order_id.in_(list(order_ids)))
    for col, val in ((refunds.c.user_id, user_id), (refunds.c.room_id, room_id), (refunds.c.state, state)):
        if val is not None:
            q = q.where(col == val)
    q = q.order_by(refunds.c.requested_ms.desc(), refunds.c.id.desc()).limit(limit).offset(offset)
    async with store.read() as tx:
        return [row_json(r) for r in await tx.conn.execute(q)]
