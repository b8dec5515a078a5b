"""SQL side of growth analytics, experiments and referrals.

Tables (declared in :mod:`livecommerce.schema`, created by migration step "growth"):

* ``growth_facts(event_id, user_id, kind, ts_ms, day, amount, room_id)``: one row per
  (event, user), :class:`livecommerce.growth.Fact`; insert-or-ignore, so a redelivered
  event adds nothing.
* ``growth_days(user_id, day)``: the days each viewer was active (DAU, retention).
* ``growth_users(user_id, first_ms, first_day, activated_ms, first_paid_ms,
  first_paid_event, channel, invite_code, referrer, acquired_ms, acquired_day,
  referral_event, referral_ms)``: per viewer, every column a minimum over facts (so
  any order of application gives the same row), the acquisition (earliest wins), and the
  referral reward claim (set once).
* ``exp_exposures(exp_id, user_id, arm, first_ms)``: first exposure of each user to each
  experiment.

Every write runs inside the growth worker's ``store.apply_batch`` transaction (the
``applied_events`` claims commit with it). Reads aggregate on demand: the dashboards ask
for a window of days, and every query is bounded by an indexed day or experiment id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Float,
    Table,
    and_,
    case,
    cast,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .experiments import Exposure
from .growth import ACTIVE_KINDS, ORGANIC, Acquisition, Fact, UserRollup, day_of, rollup
from .referrals import Reward
from .schema import exp_exposures, growth_days, growth_facts, growth_users, points_ledger
from .store_sql import SqlStore

CHUNK = 500


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _earlier(new: Any, old: Any) -> Any:
    """SQL: the new value is known and earlier than the stored one (or none is stored)."""
    return and_(new.isnot(None), or_(old.is_(None), new < old))


# ---------------------------------------------------------------- writes (inside apply_batch)


async def record(
    conn: AsyncConnection,
    facts: Sequence[Fact],
    acquisitions: Sequence[Acquisition],
    exposures: Sequence[tuple[str, Exposure, int]],
) -> None:
    """Store a batch's facts, active days, per-user minima, acquisitions and exposures
    (``(user, exposure, ts)``). Idempotent: applying the same rows again changes nothing."""
    if facts:
        rows = [{"event_id": f.event_id, "user_id": f.user, "kind": f.kind, "ts_ms": f.ts, "day": day_of(f.ts),
                 "amount": f.amount, "room_id": f.room} for f in facts]
        for i in range(0, len(rows), CHUNK):
            await conn.execute(_insert(conn, growth_facts).values(rows[i : i + CHUNK]).on_conflict_do_nothing())
        days = sorted({(f.user, day_of(f.ts)) for f in facts if f.kind in ACTIVE_KINDS})
        for i in range(0, len(days), CHUNK):
            stmt = _insert(conn, growth_days).values([{"user_id": u, "day": d} for u, d in days[i : i + CHUNK]])
            await conn.execute(stmt.on_conflict_do_nothing())
        await _upsert_rollups(conn, rollup(facts))
    for a in sorted(acquisitions, key=lambda a: (a.user, a.ts)):
        stmt = _insert(conn, growth_users).values(
            user_id=a.user, channel=a.channel, invite_code=a.invite_code, referrer=a.referrer,
            acquired_ms=a.ts, acquired_day=day_of(a.ts),
        )
        t = growth_users.c
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={"channel": stmt.excluded.channel, "invite_code": stmt.excluded.invite_code,
                  "referrer": stmt.excluded.referrer, "acquired_ms": stmt.excluded.acquired_ms,
                  "acquired_day": stmt.excluded.acquired_day},
            where=_earlier(stmt.excluded.acquired_ms, t.acquired_ms),
        )
        await conn.execute(stmt)
    for user, e, ts in sorted(exposures, key=lambda x: (x[1].exp, x[0], x[2])):
        stmt = _insert(conn, exp_exposures).values(exp_id=e.exp, user_id=user, arm=e.variant, first_ms=ts)
        stmt = stmt.on_conflict_do_update(
            index_elements=["exp_id", "user_id"],
            set_={"first_ms": stmt.excluded.first_ms},
            where=stmt.excluded.first_ms < exp_exposures.c.first_ms,
        )
        await conn.execute(stmt)


async def _upsert_rollups(conn: AsyncConnection, rolls: Mapping[str, UserRollup]) -> None:
    t = growth_users.c
    for user in sorted(rolls):
        r = rolls[user]
        first_day = day_of(r.first_active_ms) if r.first_active_ms is not None else None
        stmt = _insert(conn, growth_users).values(
            user_id=user, first_ms=r.first_active_ms, first_day=first_day, activated_ms=r.activated_ms,
            first_paid_ms=r.first_paid_ms, first_paid_event=r.first_paid_event, channel=ORGANIC,
        )
        x = stmt.excluded
        first = _earlier(x.first_ms, t.first_ms)
        paid = _earlier(x.first_paid_ms, t.first_paid_ms)
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={
                "first_ms": case((first, x.first_ms), else_=t.first_ms),
                "first_day": case((first, x.first_day), else_=t.first_day),
                "activated_ms": case((_earlier(x.activated_ms, t.activated_ms), x.activated_ms), else_=t.activated_ms),
                "first_paid_ms": case((paid, x.first_paid_ms), else_=t.first_paid_ms),
                "first_paid_event": case((paid, x.first_paid_event), else_=t.first_paid_event),
            },
        )
        await conn.execute(stmt)


async def claim_rewards(conn: AsyncConnection, users: Iterable[str], *, now_ms: int) -> list[Reward]:
    """Claim the referral reward of each of ``users`` whose invite and first paid order
    are both known, whose first paid order is not older than the invite, and whose reward
    is unclaimed; return the claims made here. A claim is
    a conditional update (``referral_event IS NULL``), so it succeeds once per invitee
    whatever runs concurrently."""
    us = sorted(set(users))
    out: list[Reward] = []
    t = growth_users.c
    for i in range(0, len(us), CHUNK):
        q = select(t.user_id, t.referrer, t.first_paid_event, t.first_paid_ms).where(
            t.user_id.in_(us[i : i + CHUNK]), t.referrer.isnot(None), t.referral_event.is_(None), t.first_paid_event.isnot(None),
            t.first_paid_ms >= t.acquired_ms,  # a customer who paid before the invite was not brought by it
        ).order_by(t.user_id)
        for row in list(await conn.execute(q)):
            res = await conn.execute(
                update(growth_users)
                .where(t.user_id == row.user_id, t.referral_event.is_(None))
                .values(referral_event=row.first_paid_event, referral_ms=now_ms)
            )
            if res.rowcount == 1:
                out.append(Reward(row.user_id, row.referrer, row.first_paid_event, int(row.first_paid_ms)))
    return out


# ---------------------------------------------------------------- reads


async def daily(store: SqlStore, first: int, last: int) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
    """Per day: (active viewers, new among them) and (net revenue, paying viewers)."""
    d, u, f = growth_days.c, growth_users.c, growth_facts.c
    q1 = (
        select(d.day, func.count(), func.sum(case((u.first_day == d.day, 1), else_=0)))
        .select_from(growth_days.join(growth_users, u.user_id == d.user_id))
        .where(d.day.between(first, last))
        .group_by(d.day)
    )
    q2 = (
        select(f.day, func.sum(case((f.kind == "pay", f.amount), else_=-f.amount)),
               func.count(func.distinct(case((f.kind == "pay", f.user_id), else_=None))))
        .where(f.day.between(first, last), f.kind.in_(("pay", "refund")))
        .group_by(f.day)
    )
    async with store.read() as tx:
        active = {int(r[0]): (int(r[1]), int(r[2] or 0)) for r in await tx.conn.execute(q1)}
        money = {int(r[0]): (int(r[1] or 0), int(r[2] or 0)) for r in await tx.conn.execute(q2)}
    return active, money


async def retention(store: SqlStore, first: int, last: int) -> dict[int, tuple[int, int, int]]:
    """Per first-active day: (cohort size, active on day + 1, active on day + 7)."""
    u = growth_users.c
    d1, d7 = growth_days.alias("d1"), growth_days.alias("d7")
    q = (
        select(u.first_day, func.count(), func.count(d1.c.user_id), func.count(d7.c.user_id))
        .select_from(
            growth_users.outerjoin(d1, and_(d1.c.user_id == u.user_id, d1.c.day == u.first_day + 1))
            .outerjoin(d7, and_(d7.c.user_id == u.user_id, d7.c.day == u.first_day + 7))
        )
        .where(u.first_day.between(first, last))
        .group_by(u.first_day)
    )
    async with store.read() as tx:
        return {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in await tx.conn.execute(q)}


async def funnel(store: SqlStore, first: int, last: int, *, by: str = "channel") -> list[dict[str, Any]]:
    """Funnel rows per acquisition channel (``by="channel"``) or invite code
    (``by="invite"``, invited viewers only) for viewers whose cohort day (acquisition,
    else first activity) is in the window."""
    u = growth_users.c
    f = growth_facts.c
    d1, d7 = growth_days.alias("d1"), growth_days.alias("d7")
    inv = (
        select(u.referrer.label("who"), func.count().label("n"))
        .where(u.referrer.isnot(None))
        .group_by(u.referrer)
        .subquery("inv")
    )
    rev = (
        select(f.user_id.label("who"), func.sum(case((f.kind == "pay", f.amount), else_=-f.amount)).label("net"))
        .where(f.kind.in_(("pay", "refund")))
        .group_by(f.user_id)
        .subquery("rev")
    )
    key = u.invite_code if by == "invite" else u.channel
    cohort = func.coalesce(u.acquired_day, u.first_day)
    q = (
        select(
            key.label("key"),
            func.count().label("acquired"),
            func.count(u.activated_ms).label("activated"),
            func.count(d1.c.user_id).label("retained_d1"),
            func.count(d7.c.user_id).label("retained_d7"),
            func.count(u.first_paid_ms).label("paying"),
            func.count(inv.c.who).label("referring"),
            func.coalesce(func.sum(inv.c.n), 0).label("invitees"),
            func.coalesce(func.sum(rev.c.net), 0).label("revenue"),
        )
        .select_from(
            growth_users.outerjoin(d1, and_(d1.c.user_id == u.user_id, d1.c.day == u.first_day + 1))
            .outerjoin(d7, and_(d7.c.user_id == u.user_id, d7.c.day == u.first_day + 7))
            .outerjoin(inv, inv.c.who == u.user_id)
            .outerjoin(rev, rev.c.who == u.user_id)
        )
        .where(cohort.between(first, last))
        .group_by(key)
    )
    if by == "invite":
        q = q.where(u.invite_code.isnot(None))
    async with store.read() as tx:
        return [dict(r._mapping) for r in await tx.conn.execute(q)]


async def experiment_arms(store: SqlStore, exp_id: str, *, until_ms: int | None) -> list[dict[str, Any]]:
    """Per arm of ``exp_id``: exposed users and their conversions from their first
    exposure until ``until_ms`` (None: until now), in :class:`ArmStats` field names."""
    e, f = exp_exposures.c, growth_facts.c
    on = and_(f.user_id == e.user_id, f.ts_ms >= e.first_ms)
    if until_ms is not None:
        on = and_(on, f.ts_ms <= until_ms)
    per_user = (
        select(
            e.arm.label("arm"),
            e.user_id.label("user_id"),
            func.coalesce(func.sum(case((f.kind == "pay", f.amount), (f.kind == "refund", -f.amount), else_=0)), 0).label("gmv"),
            func.coalesce(func.sum(case((f.kind == "pay", 1), else_=0)), 0).label("pays"),
            func.coalesce(func.sum(case((f.kind == "buy", 1), else_=0)), 0).label("buys"),
            func.coalesce(func.sum(case((f.kind == "gift", 1), else_=0)), 0).label("gifts"),
            func.coalesce(func.sum(case((f.kind == "watch", f.amount), else_=0)), 0).label("watch"),
        )
        .select_from(exp_exposures.outerjoin(growth_facts, on))
        .where(e.exp_id == exp_id)
        .group_by(e.arm, e.user_id)
        .subquery("pu")
    )
    p = per_user.c
    g = cast(p.gmv, Float)
    q = select(
        p.arm.label("arm"),
        func.count().label("exposed"),
        func.sum(case((p.pays > 0, 1), else_=0)).label("converted"),
        func.sum(case((p.buys > 0, 1), else_=0)).label("buyers"),
        func.sum(case((p.gifts > 0, 1), else_=0)).label("gifters"),
        func.sum(case((p.watch > 0, 1), else_=0)).label("watchers"),
        func.sum(p.gmv).label("gmv"),
        func.sum(g * g).label("gmv_sq"),
        func.sum(p.watch).label("watch_min"),
    ).group_by(p.arm)
    async with store.read() as tx:
        return [dict(r._mapping) for r in await tx.conn.execute(q)]


async def referrals_of(store: SqlStore, referrer: str, *, limit: int = 500) -> list[dict[str, Any]]:
    """The viewers ``referrer`` invited, newest first, with their progress and reward."""
    u = growth_users.c
    q = (
        select(u.user_id, u.invite_code, u.acquired_ms, u.activated_ms, u.first_paid_ms, u.referral_event, u.referral_ms)
        .where(u.referrer == referrer)
        .order_by(u.acquired_ms.desc(), u.user_id)
        .limit(limit)
    )
    async with store.read() as tx:
        return [
            {"user": r.user_id, "invite_code": r.invite_code, "acquired_ms": r.acquired_ms, "activated": r.activated_ms is not None,
             "paid": r.first_paid_ms is not None, "rewarded": r.referral_event is not None, "reward_event": r.referral_event,
             "rewarded_ms": r.referral_ms}
            for r in await tx.conn.execute(q)
        ]


async def user_row(store: SqlStore, user: str) -> dict[str, Any] | None:
    async with store.read() as tx:
        r = (await tx.conn.execute(select(growth_users).where(growth_users.c.user_id == user))).first()
    return None if r is None else dict(r._mapping)


async def fact_count(store: SqlStore) -> int:
    async with store.read() as tx:
        return int((await tx.conn.execute(select(func.count()).select_from(growth_facts))).scalar_one())



async def points_by_reason(store: SqlStore, user: str, reason: str) -> int:
    """The user's viewer points from entries with ``reason`` (e.g. referral rewards)."""
    p = points_ledger.c
    q = select(func.coalesce(func.sum(p.delta), 0)).where(p.user_id == user, p.reason == reason)
    async with store.read() as tx:
        return int((await tx.conn.execute(q)).scalar_one())
