"""SQL side of segments: their definitions (``segments``) and what targeted them
(``segment_targets``: a coupon drop only members can claim, or a push to online members)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    select,
    update,
)

from .errors import Conflict
from .orders import SOLD_STATES
from .schema import orders, segment_targets, segments
from .segments import SegmentDef
from .store_sql import SqlStore


def _seg(r: Any) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "rule": r.rule, "created_by": r.created_by, "created_ms": r.created_ms, "updated_ms": r.updated_ms}


async def put_segment(store: SqlStore, s: SegmentDef, *, by: str, now_ms: int, replace: bool) -> dict[str, Any]:
    """Create a segment, or (``replace``) change its name and rule.

    Raises:
        Conflict: (``segment_exists``) the id is taken and ``replace`` is False.
    """
    async with store.write() as tx:
        row = (await tx.conn.execute(select(segments).where(segments.c.id == s.id))).first()
        if row is not None and not replace:
            raise Conflict(f"segment {s.id!r} exists (PUT /api/v1/segments/{s.id} changes it)", code="segment_exists")
        if row is None:
            await tx.conn.execute(segments.insert().values(id=s.id, name=s.name, rule=s.rule, created_by=by, created_ms=now_ms, updated_ms=now_ms))
        else:
            await tx.conn.execute(update(segments).where(segments.c.id == s.id).values(name=s.name, rule=s.rule, updated_ms=now_ms))
        row = (await tx.conn.execute(select(segments).where(segments.c.id == s.id))).first()
    return _seg(row)


async def get_segment(store: SqlStore, sid: str) -> dict[str, Any] | None:
    async with store.read() as tx:
        row = (await tx.conn.execute(select(segments).where(segments.c.id == sid))).first()
    return None if row is None else _seg(row)


async def list_segments(store: SqlStore, *, limit: int = 100) -> list[dict[str, Any]]:
    async with store.read() as tx:
        return [_seg(r) for r in await tx.conn.execute(select(segments).order_by(segments.c.created_ms.desc()).limit(limit))]


async def add_target(store: SqlStore, **values: Any) -> None:
    async with store.write() as tx:
        await tx.conn.execute(segment_targets.insert().values(**values))


async def targets(store: SqlStore, segment_id: str) -> list[dict[str, Any]]:
    q = select(segment_targets).where(segment_targets.c.segment_id == segment_id).order_by(segment_targets.c.created_ms.desc())
    async with store.read() as tx:
        return [dict(r._mapping) for r in await tx.conn.execute(q)]


async def get_target(store: SqlStore, target_id: str) -> dict[str, Any] | None:
    async with store.read() as tx:
        r = (await tx.conn.execute(select(segment_targets).where(segment_targets.c.id == target_id))).first()
    return None if r is None else dict(r._mapping)


async def payers(store: SqlStore, sale_id: str) -> set[str]:
    """Users with an order of ``sale_id`` that was paid (refunded or not): what a push
    with that ``sale_id`` counts as redeemed."""
    q = select(orders.c.user_id).distinct().where(orders.c.sale_id == sale_id, orders.c.state.in_(SOLD_STATES))
    async with store.read() as tx:
        return {r[0] for r in await tx.conn.execute(q)}
