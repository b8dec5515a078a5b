"""SQL side of host earnings: the ``host_earnings`` ledger (migration 9).

Rules: :mod:`livecommerce.earnings`. One row per log event (``event_id`` unique) and at most
one accrual and one reversal per gift (``uq_host_earnings_once``). :func:`add_rows` writes
inside the worker's batch transaction (``store.apply_batch("earnings", ids)``), so the
rows commit with the claims of their event ids; ``ON CONFLICT DO NOTHING`` on top makes a
row that somehow exists (an event re-appended under another consumer's claim) a no-op
rather than a failed batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .earnings import MAX_ROWS, EarningsRow, Period, RowKind, Statement, statement
from .schema import host_earnings
from .store_sql import SqlStore

E = host_earnings.c


def _row(r: Any) -> EarningsRow:
    return EarningsRow(str(r.event_id), str(r.gift_event_id), cast(RowKind, r.kind), str(r.host_id), str(r.room_id),
                       str(r.sender_id), str(r.gift_id), int(r.value), int(r.share_bp), int(r.amount), int(r.ts_ms))


async def add_rows(conn: AsyncConnection, rows: Sequence[EarningsRow]) -> int:
    """Insert ``rows`` (skipping any that exist); return how many were written."""
    if not rows:
        return 0
    values = [{"event_id": r.event_id, "gift_event_id": r.gift_event_id, "kind": r.kind, "host_id": r.host, "room_id": r.room,
               "sender_id": r.sender, "gift_id": r.gift_id, "value": r.value, "share_bp": r.share_bp, "amount": r.amount,
               "ts_ms": r.ts_ms} for r in rows]
    if conn.dialect.name == "postgresql":  # one statement over one array per column (not a statement per row)
        cols = list(values[0])
        unnest = select(*[func.unnest(bindparam(f"u_{c}", type_=postgresql.ARRAY(host_earnings.c[c].type))).label(c) for c in cols])
        stmt = postgresql.insert(host_earnings).from_select(cols, unnest).on_conflict_do_nothing().returning(E.id)
        res = await conn.execute(stmt, {f"u_{c}": [v[c] for v in values] for c in cols})
    else:
        res = await conn.execute(sqlite.insert(host_earnings).on_conflict_do_nothing().returning(E.id), values)
    return len(list(res))


async def gift_rows(store: SqlStore, gift_event_id: str) -> dict[RowKind, EarningsRow]:
    """A gift's accrual and reversal rows, those that exist."""
    async with store.read() as tx:
        res = await tx.conn.execute(select(host_earnings).where(E.gift_event_id == gift_event_id))
        return {cast(RowKind, r.kind): _row(r) for r in res}


async def host_statement(store: SqlStore, host: str, period: Period, *, limit: int = MAX_ROWS) -> Statement:
    """The host's statement for ``period`` (one read transaction: the opening, the totals and
    the rows agree)."""
    async with store.read() as tx:
        c = tx.conn
        opening = (await c.execute(select(func.coalesce(func.sum(E.amount), 0)).where(
            and_(E.host_id == host, E.ts_ms < period.from_ms)))).scalar_one()
        within = and_(E.host_id == host, E.ts_ms >= period.from_ms, E.ts_ms < period.to_ms)
        totals: dict[RowKind, tuple[int, int]] = {}
        for kind, total, n in await c.execute(select(E.kind, func.sum(E.amount), func.count()).where(within).group_by(E.kind)):
            totals[cast(RowKind, kind)] = (int(total or 0), int(n))
        res = await c.execute(select(host_earnings).where(within).order_by(E.ts_ms, E.id).limit(limit + 1))
        rows = [_row(r) for r in res]
    return statement(host, period, opening=int(opening), totals=totals, rows=rows, limit=limit)


async def room_gifts(store: SqlStore, room: str, from_ms: int, to_ms: int, *, top: int = 5) -> tuple[int, int, int, list[tuple[str, int]]]:
    """The gifts of a room within ``[from_ms, to_ms]`` as the ledger has them: ``(gift coins,
    gifts, coins reversed since, top gifters [(sender, coins)])``. Read from the accruals, so
    every node answers the same once the earnings worker has applied the show's gifts."""
    async with store.read() as tx:
        c = tx.conn
        win = and_(E.room_id == room, E.kind == "accrual", E.ts_ms >= from_ms, E.ts_ms <= to_ms)
        value, n = (await c.execute(select(func.coalesce(func.sum(E.value), 0), func.count()).where(win))).one()
        acc = select(E.gift_event_id).where(win).scalar_subquery()
        reversed_ = (await c.execute(select(func.coalesce(func.sum(E.value), 0)).where(
            and_(E.kind == "reversal", E.gift_event_id.in_(acc))))).scalar_one()
        tops = [(str(s), int(v)) for s, v in await c.execute(
            select(E.sender_id, func.sum(E.value).label("v")).where(win).group_by(E.sender_id)
            .order_by(func.sum(E.value).desc(), E.sender_id).limit(top))]
    return int(value), int(n), int(reversed_), tops
