"""SQL side of room moderation: the audit log (``moderation_actions``) and viewers' reports
(``moderation_reports``). Rules: :mod:`livecommerce.moderation`.

* :func:`record` writes one audit entry; :func:`audit` pages through them, newest first,
  filtered by room, actor, target or action.
* :func:`open_report` files a report once per (room, reporter, target, comment): the same
  report again answers the first one. :func:`reports` is a room's queue (open ones oldest
  first, closed ones newest first); :func:`resolve` closes a report and, with it, the other
  open reports of the same comment (or of the same user, for a report of a user), in one
  transaction, and says which it closed.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import Conflict, NotFound
from .moderation import AuditEntry, Report, Role
from .schema import moderation_actions, moderation_reports
from .store_sql import SqlStore


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _entry(r: Any) -> AuditEntry:
    return AuditEntry(
        id=r.id, ts_ms=int(r.ts_ms), room=r.room_id, actor=r.actor_id, actor_role=cast(Role, r.actor_role), action=r.action,
        target=r.target_id, seq=None if r.comment_seq is None else int(r.comment_seq),
        until_ms=None if r.until_ms is None else int(r.until_ms), reason=r.reason, report_id=r.report_id,
        details=dict(r.details or {}),
    )


async def record(store: SqlStore, e: AuditEntry) -> None:
    """Write one audit entry (its id is unique: a repeat of the same id changes nothing).

    Raises:
        Unavailable: SQL unreachable.
    """
    async with store.write() as tx:
        await tx.conn.execute(_insert(tx.conn, moderation_actions).values(
            id=e.id, ts_ms=e.ts_ms, room_id=e.room, actor_id=e.actor, actor_role=e.actor_role, action=e.action,
            target_id=e.target, comment_seq=e.seq, until_ms=e.until_ms, reason=e.reason, report_id=e.report_id,
            details=e.details or None,
        ).on_conflict_do_nothing(index_elements=["id"]))


async def audit(store: SqlStore, *, room: str | None = None, actor: str | None = None, target: str | None = None,
                action: str | None = None, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
    """Audit entries matching the filters, newest first."""
    t = moderation_actions.c
    q = select(moderation_actions)
    for col, v in ((t.room_id, room), (t.actor_id, actor), (t.target_id, target), (t.action, action)):
        if v is not None:
            q = q.where(col == v)
    q = q.order_by(t.ts_ms.desc(), t.id.desc()).limit(limit).offset(offset)
    async with store.read() as tx:
        return [_entry(r) for r in await tx.conn.execute(q)]


def _report(r: Any) -> Report:
    return Report(
        id=r.id, room=r.room_id, reporter=r.reporter_id, target=r.target_id, seq=int(r.comment_seq), reason=r.reason,
        note=r.note, context=list(r.context or []), status=r.status, created_ms=int(r.created_ms),
        resolved_ms=None if r.resolved_ms is None else int(r.resolved_ms), resolved_by=r.resolved_by,
        resolution=None if r.resolution is None else dict(r.resolution),
    )


async def open_report(store: SqlStore, rep: Report) -> tuple[Report, bool]:
    """File ``rep`` (status ``open``) unless its reporter already reported the same comment
    (or user) in the room; return the report on file and whether it is new.

    Raises:
        Unavailable: SQL unreachable.
    """
    c = moderation_reports.c
    async with store.write() as tx:
        done = await tx.conn.execute(_insert(tx.conn, moderation_reports).values(
            id=rep.id, room_id=rep.room, reporter_id=rep.reporter, target_id=rep.target, comment_seq=rep.seq,
            reason=rep.reason, note=rep.note, context=rep.context, status="open", created_ms=rep.created_ms,
        ).on_conflict_do_nothing(index_elements=["room_id", "reporter_id", "target_id", "comment_seq"]))
        new = bool(done.rowcount)
        row = (await tx.conn.execute(select(moderation_reports).where(and_(
            c.room_id == rep.room, c.reporter_id == rep.reporter, c.target_id == rep.target, c.comment_seq == rep.seq,
        )))).first()
    return _report(row), new


async def get_report(store: SqlStore, report_id: str) -> Report | None:
    async with store.read() as tx:
        row = (await tx.conn.execute(select(moderation_reports).where(moderation_reports.c.id == report_id))).first()
    return None if row is None else _report(row)


async def reports(store: SqlStore, room: str, *, status: str | None = "open", limit: int = 100, offset: int = 0) -> list[Report]:
    """A room's reports with ``status`` (None: all): open ones oldest first (the queue),
    the others newest first."""
    c = moderation_reports.c
    q = select(moderation_reports).where(c.room_id == room)
    if status is not None:
        q = q.where(c.status == status)
    order = (c.created_ms, c.id) if status == "open" else (c.created_ms.desc(), c.id.desc())
    q = q.order_by(*order).limit(limit).offset(offset)
    async with store.read() as tx:
        return [_report(r) for r in await tx.conn.execute(q)]


async def resolve(store: SqlStore, report_id: str, *, status: str, by: str, now_ms: int,
                  resolution: dict[str, Any]) -> tuple[Report, list[str]]:
    """Close an open report as ``status`` (``resolved`` or ``dismissed``) with its
    ``resolution``, and the other open reports of the same comment (a report of a user:
    the other open reports of that user) in the room; return the report and the ids closed.

    Raises:
        NotFound: no such report. Conflict: (``report_closed``) it is closed already.
        Unavailable: SQL unreachable.
    """
    c = moderation_reports.c
    async with store.write() as tx:
        q = select(moderation_reports).where(c.id == report_id)
        if tx.conn.dialect.name == "postgresql":
            q = q.with_for_update()
        row = (await tx.conn.execute(q)).first()
        if row is None:
            raise NotFound(f"no report {report_id}")
        if row.status != "open":
            raise Conflict(f"report {report_id} is {row.status} already", code="report_closed")
        same = and_(c.room_id == row.room_id, c.target_id == row.target_id, c.comment_seq == row.comment_seq, c.status == "open")
        ids = [r.id for r in await tx.conn.execute(select(c.id).where(same))]
        await tx.conn.execute(update(moderation_reports).where(same).values(
            status=status, resolved_ms=now_ms, resolved_by=by, resolution=resolution))
        row = (await tx.conn.execute(select(moderation_reports).where(c.id == report_id))).first()
    return _report(row), sorted(ids)
