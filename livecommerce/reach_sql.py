"""SQL side of follower reach: the inbox, schedules, subscriptions and fan-out cursors.

Rules: :mod:`livecommerce.reach`. Tables (migration 10, :mod:`livecommerce.schema`):

* ``notifications(user_id, id, ...)``: the inbox, one row per user and fan-out event (the
  primary key is what makes a redelivered page write nothing twice).
* ``reach_fanouts(event_id, after_user, written, done_ms)``: each fan-out's cursor.
  :func:`fan_page` reads one page of the audience after the cursor, inserts its rows and
  moves the cursor in one transaction, so a killed worker resumes after the last page it
  committed, and a finished fan-out is a no-op when its event comes again.
* ``schedules`` and ``schedule_subs``: hosts' schedules (预告) and viewers' subscriptions (预约).

The audience is read from ``fan_members`` (``following``), the profiles worker's projection
of the follow registers, in ``user_id`` order (its primary key is ``(host_id, user_id)``),
and from ``schedule_subs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import BigInteger, String, Table, and_, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import NotFound
from .reach import PAGE, Fanout, Schedule, ScheduleState, ScheduleStep, schedule_step
from .schema import fan_members, notifications, reach_fanouts, schedule_subs, schedules
from .store_sql import SqlStore


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _schedule(r: Any, subscribers: int = 0) -> Schedule:
    return Schedule(id=r.id, host=r.host_id, title=r.title, start_ms=int(r.start_ms), products=tuple(r.products or ()),
                    room=r.room_id, state=cast(ScheduleState, r.state), created_ms=int(r.created_ms),
                    subscribers=int(subscribers))


# ---------------------------------------------------------------- fan-out

async def fan_page(store: SqlStore, f: Fanout, *, now_ms: int, page: int = PAGE) -> tuple[list[str], bool]:
    """Write the next page of ``f``'s inbox rows; return ``(users whose row is new, done)``.

    One transaction: the fan-out's cursor row (created at the first page; locked on
    PostgreSQL, so two workers given the same event take turns), up to ``page`` users of the
    audience after it, their rows (``ON CONFLICT DO NOTHING``: a row already there is not
    returned, so its user is not notified again), and the cursor moved to the page's last
    user (``done_ms`` set once a page comes back short).

    Raises:
        Unavailable: SQL unreachable (nothing of the page was committed).
    """
    fo = reach_fanouts.c
    async with store.write() as tx:
        conn = tx.conn
        await conn.execute(_insert(conn, reach_fanouts).values(
            event_id=f.event_id, after_user="", written=0, done_ms=None, updated_ms=now_ms,
        ).on_conflict_do_nothing(index_elements=["event_id"]))
        cur = (await conn.execute(
            select(fo.after_user, fo.written, fo.done_ms).where(fo.event_id == f.event_id).with_for_update())).one()
        if cur.done_ms is not None:
            return [], True
        after = str(cur.after_user)
        if f.audience == "followers":
            m = fan_members.c
            col, cond = m.user_id, and_(m.host_id == f.of, m.following.is_(True))
        else:
            s = schedule_subs.c
            col, cond = s.user_id, s.schedule_id == f.of
        users = [str(u) for (u,) in await conn.execute(
            select(col).where(and_(cond, col > after)).order_by(col).limit(page))]
        new: list[str] = []
        if users:
            # the page's rows in one INSERT ... SELECT over the same range (compiled once and
            # cached: a VALUES list of a thousand rows was compiled anew for every page)
            n = f.notice
            src = select(col, literal(f.event_id), literal(str(n["kind"])), literal(str(n["host"])),
                         literal(n.get("room"), String), literal(n.get("schedule"), String), literal(str(n.get("title") or "")),
                         literal(n.get("start_ms"), BigInteger), literal(now_ms, BigInteger)).where(
                and_(cond, col > after, col <= users[-1]))
            ins = _insert(conn, notifications).from_select(
                ["user_id", "id", "kind", "host_id", "room_id", "schedule_id", "title", "start_ms", "created_ms"], src)
            ins = ins.on_conflict_do_nothing(index_elements=["user_id", "id"]).returning(notifications.c.user_id)
            new = [str(u) for (u,) in await conn.execute(ins)]
        done = len(users) < page
        await conn.execute(update(reach_fanouts).where(fo.event_id == f.event_id).values(
            after_user=users[-1] if users else after, written=fo.written + len(new),
            done_ms=now_ms if done else None, updated_ms=now_ms))
    return new, done


async def prune(store: SqlStore, before_ms: int, *, limit: int = 20_000) -> int:
    """Delete the oldest inbox rows created before ``before_ms``, about ``limit`` of them (up
    to the creation time of the ``limit``-th; a page's rows share theirs), and the fan-out
    cursors finished before it; return the inbox rows deleted. An event redelivered after its
    cursor is gone would fan out again, so ``before_ms`` must be older than anything the log
    can still hand out (30 days: the log keeps far less).

    Raises:
        Unavailable: SQL unreachable.
    """
    n, fo = notifications.c, reach_fanouts.c
    async with store.write() as tx:
        cut = (await tx.conn.execute(select(n.created_ms).where(n.created_ms < before_ms).order_by(n.created_ms)
                                     .offset(limit - 1).limit(1))).scalar()
        upto = before_ms if cut is None else int(cut) + 1
        res = await tx.conn.execute(notifications.delete().where(n.created_ms < upto))
        await tx.conn.execute(reach_fanouts.delete().where(and_(fo.done_ms.is_not(None), fo.done_ms < before_ms)))
    return int(res.rowcount or 0)


async def fanout_state(store: SqlStore, event_id: str) -> dict[str, Any] | None:
    """``{after_user, written, done_ms}`` of a fan-out (None: not started)."""
    fo = reach_fanouts.c
    async with store.read() as tx:
        r = (await tx.conn.execute(select(fo.after_user, fo.written, fo.done_ms).where(fo.event_id == event_id))).first()
    return None if r is None else {"after_user": r.after_user, "written": int(r.written), "done_ms": r.done_ms}


# ---------------------------------------------------------------- the inbox

def _notice(r: Any) -> dict[str, Any]:
    return {"id": r.id, "kind": r.kind, "host": r.host_id, "room": r.room_id, "schedule": r.schedule_id,
            "title": r.title, "start_ms": None if r.start_ms is None else int(r.start_ms),
            "created_ms": int(r.created_ms), "read": r.read_ms is not None,
            "read_ms": None if r.read_ms is None else int(r.read_ms)}


async def inbox(store: SqlStore, user: str, *, unread_only: bool = False, limit: int = 20,
                before_ms: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """The user's notifications, newest first (``before_ms``: older than that), and their
    unread count.

    Raises:
        Unavailable: SQL unreachable.
    """
    n = notifications.c
    q = select(notifications).where(n.user_id == user)
    if unread_only:
        q = q.where(n.read_ms.is_(None))
    if before_ms is not None:
        q = q.where(n.created_ms < before_ms)
    q = q.order_by(n.created_ms.desc(), n.id.desc()).limit(limit)
    async with store.read() as tx:
        rows = [_notice(r) for r in await tx.conn.execute(q)]
        unread = int((await tx.conn.execute(
            select(func.count()).select_from(notifications).where(and_(n.user_id == user, n.read_ms.is_(None))))).scalar() or 0)
    return rows, unread


async def mark_read(store: SqlStore, user: str, ids: Sequence[str] | None, *, now_ms: int) -> tuple[int, int]:
    """Mark the user's unread rows ``ids`` (None: all) read; return ``(marked, unread left)``.
    Ids that are not the user's, or already read, are left as they are.

    Raises:
        Unavailable: SQL unreachable.
    """
    n = notifications.c
    cond = and_(n.user_id == user, n.read_ms.is_(None))
    if ids is not None:
        cond = and_(cond, n.id.in_(list(ids)))
    async with store.write() as tx:
        res = await tx.conn.execute(update(notifications).where(cond).values(read_ms=now_ms))
        left = int((await tx.conn.execute(
            select(func.count()).select_from(notifications).where(and_(n.user_id == user, n.read_ms.is_(None))))).scalar() or 0)
    return int(res.rowcount or 0), left


async def count_rows(store: SqlStore, event_id: str) -> tuple[int, int]:
    """``(rows, distinct users)`` of one fan-out event (tests and the benchmark)."""
    n = notifications.c
    async with store.read() as tx:
        r = (await tx.conn.execute(select(func.count(), func.count(func.distinct(n.user_id))).where(n.id == event_id))).one()
    return int(r[0]), int(r[1])


# ---------------------------------------------------------------- schedules

async def create_schedule(store: SqlStore, s: Schedule, *, now_ms: int) -> None:
    """Raises: Conflict: the id is taken (``guarded``). Unavailable."""
    async with store.write() as tx:
        await tx.conn.execute(schedules.insert().values(
            id=s.id, host_id=s.host, title=s.title, start_ms=s.start_ms, products=list(s.products), room_id=s.room,
            state=s.state, created_ms=now_ms, updated_ms=now_ms))


def _with_counts(q: Any) -> Any:
    counts = (select(schedule_subs.c.schedule_id, func.count().label("n")).group_by(schedule_subs.c.schedule_id)
              .subquery())
    return (select(schedules, func.coalesce(counts.c.n, 0).label("subscribers"))
            .select_from(schedules.outerjoin(counts, counts.c.schedule_id == schedules.c.id)).where(q))


async def get_schedule(store: SqlStore, schedule: str) -> Schedule | None:
    async with store.read() as tx:
        r = (await tx.conn.execute(_with_counts(schedules.c.id == schedule))).first()
    return None if r is None else _schedule(r, r.subscribers)


async def host_schedules(store: SqlStore, host: str, *, from_ms: int, limit: int = 50) -> list[Schedule]:
    """The host's schedules starting at or after ``from_ms`` (any state), soonest first."""
    c = schedules.c
    q = _with_counts(and_(c.host_id == host, c.start_ms >= from_ms)).order_by(c.start_ms, c.id).limit(limit)
    async with store.read() as tx:
        return [_schedule(r, r.subscribers) for r in await tx.conn.execute(q)]


async def scheduled_between(store: SqlStore, lo_ms: int, hi_ms: int, *, limit: int = 200) -> list[Schedule]:
    """Still-scheduled schedules starting in ``[lo_ms, hi_ms]``, soonest first (the feed)."""
    c = schedules.c
    q = _with_counts(and_(c.state == "scheduled", c.start_ms >= lo_ms, c.start_ms <= hi_ms)).order_by(c.start_ms, c.id)
    async with store.read() as tx:
        return [_schedule(r, r.subscribers) for r in await tx.conn.execute(q.limit(limit))]


async def host_scheduled(store: SqlStore, host: str, *, until_ms: int, limit: int = 20) -> list[Schedule]:
    """The host's still-scheduled schedules starting at or before ``until_ms``, soonest first."""
    c = schedules.c
    q = select(schedules).where(and_(c.host_id == host, c.state == "scheduled", c.start_ms <= until_ms))
    async with store.read() as tx:
        return [_schedule(r) for r in await tx.conn.execute(q.order_by(c.start_ms, c.id).limit(limit))]


async def due_schedules(store: SqlStore, now_ms: int, *, limit: int = 100) -> list[Schedule]:
    """Still-scheduled schedules whose start is reached, earliest first (the sweep)."""
    c = schedules.c
    q = select(schedules).where(and_(c.state == "scheduled", c.start_ms <= now_ms)).order_by(c.start_ms, c.id).limit(limit)
    async with store.read() as tx:
        return [_schedule(r) for r in await tx.conn.execute(q)]


async def step_schedule(store: SqlStore, schedule: str, step: ScheduleStep, *, now_ms: int) -> Schedule:
    """Apply ``step`` (compare-and-set on the state).

    Raises:
        NotFound: no such schedule. Conflict: not allowed from its state. Unavailable.
    """
    c = schedules.c
    async with store.write() as tx:
        r = (await tx.conn.execute(select(schedules).where(c.id == schedule).with_for_update())).first()
        if r is None:
            raise NotFound(f"schedule {schedule!r} does not exist")
        new = schedule_step(cast(ScheduleState, r.state), step)
        await tx.conn.execute(update(schedules).where(and_(c.id == schedule, c.state == r.state))
                              .values(state=new, updated_ms=now_ms))
    got = await get_schedule(store, schedule)
    assert got is not None
    return got


async def mark_reminded(store: SqlStore, ids: Sequence[str], *, now_ms: int) -> int:
    """``scheduled -> reminded`` for ``ids`` (those still scheduled); return how many."""
    if not ids:
        return 0
    c = schedules.c
    async with store.write() as tx:
        res = await tx.conn.execute(update(schedules).where(and_(c.id.in_(list(ids)), c.state == "scheduled"))
                                    .values(state="reminded", updated_ms=now_ms))
    return int(res.rowcount or 0)


async def subscribe(store: SqlStore, schedule: str, user: str, *, on: bool, now_ms: int) -> bool:
    """Subscribe (``on``) or unsubscribe ``user``; return whether anything changed."""
    s = schedule_subs.c
    async with store.write() as tx:
        if on:
            res = await tx.conn.execute(_insert(tx.conn, schedule_subs).values(
                schedule_id=schedule, user_id=user, created_ms=now_ms).on_conflict_do_nothing(
                index_elements=["schedule_id", "user_id"]))
        else:
            res = await tx.conn.execute(schedule_subs.delete().where(and_(s.schedule_id == schedule, s.user_id == user)))
    return bool(res.rowcount)


async def subscribed(store: SqlStore, user: str, ids: Sequence[str]) -> set[str]:
    """Which of the schedules ``ids`` the user subscribed to."""
    if not ids:
        return set()
    s = schedule_subs.c
    async with store.read() as tx:
        return {str(r[0]) for r in await tx.conn.execute(
            select(s.schedule_id).where(and_(s.user_id == user, s.schedule_id.in_(list(ids)))))}
