"""SQL side of complaint tickets: ``tickets`` and their step history ``ticket_events``.

Each step is one write transaction that reads the ticket with a row lock (PostgreSQL
``FOR UPDATE``; SQLite's single writer), checks the move with
:func:`livecommerce.tickets.check_move` and writes the row and one history row together,
so two ops cannot make conflicting steps.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    func,
    select,
    update,
)

from .errors import NotFound
from .schema import ticket_events, tickets
from .store_sql import SqlStore
from .tickets import Priority, Ticket, TicketStatus, check_move, may_move, stamps_after


def _ticket(r: Any) -> Ticket:
    return Ticket(
        id=r.id,
        user_id=r.user_id,
        kind=r.kind,
        priority=cast(Priority, r.priority),
        subject=r.subject,
        text=r.text,
        status=cast(TicketStatus, r.status),
        created_ms=r.created_ms,
        updated_ms=r.updated_ms,
        order_id=r.order_id,
        room_id=r.room_id,
        assignee=r.assignee,
        first_response_ms=r.first_response_ms,
        resolved_ms=r.resolved_ms,
    )


async def open_ticket(store: SqlStore, t: Ticket) -> None:
    """Insert a new ticket (status ``open``) and its first history row."""
    async with store.write() as tx:
        await tx.conn.execute(
            tickets.insert().values(
                id=t.id, user_id=t.user_id, kind=t.kind, priority=t.priority, subject=t.subject, text=t.text,
                status="open", order_id=t.order_id, room_id=t.room_id, created_ms=t.created_ms, updated_ms=t.created_ms,
            )
        )
        await tx.conn.execute(
            ticket_events.insert().values(ticket_id=t.id, seq=1, from_status=None, to_status="open", by_user=t.user_id, ts_ms=t.created_ms)
        )


async def move(
    store: SqlStore,
    ticket_id: str,
    to: TicketStatus,
    *,
    by: str,
    role: str,
    note: str | None,
    now_ms: int,
    assignee: str | None = None,
) -> tuple[Ticket, bool]:
    """Move a ticket (or only add a note / an assignee when ``to`` is its status); return
    it after the step and whether anything changed.

    Raises:
        NotFound: no such ticket. Forbidden / Conflict / BadFrame: see
            :func:`livecommerce.tickets.may_move` and :func:`~livecommerce.tickets.check_move`.
    """
    async with store.write() as tx:
        q = select(tickets).where(tickets.c.id == ticket_id)
        if tx.conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = (await tx.conn.execute(q)).first()
        if row is None:
            raise NotFound(f"no ticket {ticket_id}")
        t = _ticket(row)
        changed = check_move(t.status, to)
        if changed:
            may_move(role=role, is_owner=t.user_id == by, current=t.status, to=to)
        elif role != "ops" and t.user_id != by:
            raise NotFound(f"no ticket {ticket_id}")
        if not changed and not note and assignee is None:
            return t, False
        stamps = stamps_after(t, to, by_ops=role == "ops", now_ms=now_ms)
        if not changed and role == "ops" and note and t.first_response_ms is None:
            stamps["first_response_ms"] = now_ms  # an ops note answers the viewer
        values: dict[str, Any] = {"status": to, "updated_ms": now_ms, **stamps}
        if assignee is not None:
            values["assignee"] = assignee
        await tx.conn.execute(update(tickets).where(tickets.c.id == ticket_id).values(**values))
        seq = (await tx.conn.execute(select(func.count()).where(ticket_events.c.ticket_id == ticket_id))).scalar_one()
        await tx.conn.execute(
            ticket_events.insert().values(
                ticket_id=ticket_id, seq=int(seq) + 1, from_status=t.status, to_status=to, by_user=by, note=note, ts_ms=now_ms
            )
        )
        row = (await tx.conn.execute(select(tickets).where(tickets.c.id == ticket_id))).first()
        return _ticket(row), True


async def get(store: SqlStore, ticket_id: str) -> tuple[Ticket, list[dict[str, Any]]] | None:
    async with store.read() as tx:
        row = (await tx.conn.execute(select(tickets).where(tickets.c.id == ticket_id))).first()
        if row is None:
            return None
        evs = await tx.conn.execute(select(ticket_events).where(ticket_events.c.ticket_id == ticket_id).order_by(ticket_events.c.seq))
        history = [
            {"seq": e.seq, "from": e.from_status, "to": e.to_status, "by": e.by_user, "note": e.note, "ts": e.ts_ms}
            for e in evs
        ]
    return _ticket(row), history


async def list_tickets(
    store: SqlStore, *, user_id: str | None = None, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[Ticket]:
    """Tickets matching the filters, oldest first (the SLA queue order)."""
    q = select(tickets)
    if user_id is not None:
        q = q.where(tickets.c.user_id == user_id)
    if status is not None:
        q = q.where(tickets.c.status == status)
    q = q.order_by(tickets.c.created_ms, tickets.c.id).limit(limit).offset(offset)
    async with store.read() as tx:
        return [_ticket(r) for r in await tx.conn.execute(q)]
