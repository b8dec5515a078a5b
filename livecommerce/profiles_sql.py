"""SQL side of profiles and fan clubs: ``profiles``, ``fan_members``, ``erasures``.

* ``profiles(user_id, display_name, data, erased, updated_ms)``: ``data`` is the folded
  state of :mod:`livecommerce.profiles`; ``display_name`` is the one personal field (set by
  the gateway when the viewer joins a fan club, asks for a refund or opens a ticket; never
  derived from the log, so a rebuild keeps it).
* ``fan_members(host_id, user_id, following, member, intimacy, updated_ms)``: a projection
  of the profiles (the follow and membership registers, and the intimacy of each pair) for
  per-host queries: fan leaderboards, follower counts.
* ``erasures(pseudonym, erased_ms)``: the pseudonyms of erased users (no user ids) and
  when they were (last) erased, so their events up to then met later are folded, and
  their points awarded, under the pseudonym.
* ``profiles_base(user_id, data, updated_ms)``: the fold of the events that log retention
  trimmed (claimed under :data:`BASE_CONSUMER`); a rebuild starts from it
  (docs/retention.md).

Concurrency: a batch locks its users' rows in user-id order (PostgreSQL ``FOR UPDATE``;
SQLite has one writer), after taking the shared profiles lock (a PostgreSQL advisory lock);
a rebuild and an erasure take it exclusively, so neither interleaves with a batch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from sqlalchemy import (
    Table,
    any_,
    bindparam,
    case,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from . import fulfilment_sql
from .fanclub import intimacy
from .profiles import Profile, merge
from .schema import (
    applied_events,
    coupon_claims,
    erasures,
    notifications,
    orders,
    points_balances,
    points_ledger,
    profiles_base,
    reach_fanouts,
    refunds,
    schedule_subs,
    ticket_events,
    tickets,
    wallet_ledger,
)
from .schema import fan_members as fan_members
from .schema import profiles as profiles
from .store_sql import SqlStore

BASE_CONSUMER = "profiles-base"  # the applied_events claims of the events folded into the base

_LOCK = 0x6C63_7072  # "lcpr": batches share it, a rebuild or an erasure holds it alone
CHUNK = 500


def _insert(conn: AsyncConnection, table: Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


async def lock(conn: AsyncConnection, *, exclusive: bool) -> None:
    """Take the profiles lock for this transaction (PostgreSQL; SQLite serialises writers)."""
    if conn.dialect.name == "postgresql":
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        await conn.execute(text(f"SELECT {fn}(:k)"), {"k": _LOCK})


async def erased_among(conn: AsyncConnection, pseudonyms: Iterable[str]) -> dict[str, int]:
    """Which of ``pseudonyms`` are erased users, with the time of their (last) erasure."""
    ps = sorted(set(pseudonyms))
    out: dict[str, int] = {}
    if ps and conn.dialect.name == "postgresql":  # one array parameter, however many (a points batch asks for thousands)
        q = select(erasures.c.pseudonym, erasures.c.erased_ms).where(
            erasures.c.pseudonym == any_(bindparam("ps", type_=postgresql.ARRAY(erasures.c.pseudonym.type))))
        return {r[0]: int(r[1]) for r in await conn.execute(q, {"ps": ps})}
    for i in range(0, len(ps), CHUNK):
        q = select(erasures.c.pseudonym, erasures.c.erased_ms).where(erasures.c.pseudonym.in_(ps[i : i + CHUNK]))
        out.update((r[0], int(r[1])) for r in await conn.execute(q))
    return out


async def all_erasures(conn: AsyncConnection) -> dict[str, tuple[str, int]]:
    """Every erasure: ``pseudonym -> (pseudonym, erased_ms)``."""
    return {r[0]: (r[0], int(r[1])) for r in await conn.execute(select(erasures.c.pseudonym, erasures.c.erased_ms))}


async def erasure_map(conn: AsyncConnection, secret: str, users: Iterable[str]) -> dict[str, tuple[str, int]]:
    """``user -> (pseudonym, erased_ms)`` for the erased ones among ``users``."""
    from .profiles import pseudonym

    aliases = {pseudonym(secret, u): u for u in users}
    return {aliases[p]: (p, ms) for p, ms in (await erased_among(conn, aliases)).items()}


async def claim(conn: AsyncConnection, consumer: str, event_ids: Iterable[str], *, now_ms: int) -> set[str]:
    """Claim events for ``consumer`` in this transaction (the ``applied_events`` guard of
    ``store.apply_batch``, taken here after the profiles lock so that a batch and a rebuild
    always lock in the same order); returns the ids not claimed before."""
    ids = sorted(set(event_ids))
    fresh: set[str] = set()
    table = applied_events
    for i in range(0, len(ids), CHUNK):
        stmt = (
            _insert(conn, table)
            .values([{"consumer": consumer, "event_id": e, "applied_ms": now_ms} for e in ids[i : i + CHUNK]])
            .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
            .returning(table.c.event_id)
        )
        fresh.update(r[0] for r in await conn.execute(stmt))
    return fresh


def _data(v: Any) -> Profile:
    if isinstance(v, str):
        return dict(json.loads(v))
    return dict(v or {})


async def apply_partials(
    conn: AsyncConnection, partials: Mapping[str, Profile], *, erased: set[str], now_ms: int
) -> dict[str, Profile]:
    """Merge each user's partial into their stored profile (creating it), project the
    touched fan pairs, and return the new profiles. Call inside a transaction that holds
    the shared lock and has claimed the events."""
    users = sorted(partials)
    if not users:
        return {}
    for i in range(0, len(users), CHUNK):
        rows = [{"user_id": u, "data": {}, "erased": u in erased, "updated_ms": now_ms} for u in users[i : i + CHUNK]]
        await conn.execute(_insert(conn, profiles).values(rows).on_conflict_do_nothing(index_elements=["user_id"]))
    stored: dict[str, Profile] = {}
    for i in range(0, len(users), CHUNK):
        q = select(profiles.c.user_id, profiles.c.data).where(profiles.c.user_id.in_(users[i : i + CHUNK])).order_by(profiles.c.user_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        stored.update({r.user_id: _data(r.data) for r in await conn.execute(q)})
    new = {u: merge(stored.get(u, {}), partials[u]) for u in users}
    stmt = (
        update(profiles)
        .where(profiles.c.user_id == bindparam("uid"))
        .values(data=bindparam("d"), updated_ms=bindparam("ts"))
    )
    await conn.execute(stmt, [{"uid": u, "d": new[u], "ts": now_ms} for u in users])
    touched = {u: set(partials[u].get("hosts", {})) | set(partials[u].get("follows", {})) | set(partials[u].get("clubs", {})) for u in users}
    await project_fans(conn, {u: (new[u], hs) for u, hs in touched.items() if hs}, now_ms=now_ms)
    return new


def fan_rows(user: str, p: Mapping[str, Any], hosts: Iterable[str], now_ms: int) -> list[dict[str, Any]]:
    """The ``fan_members`` rows of ``user`` for ``hosts`` from their profile."""
    out = []
    for h in sorted(hosts):
        f = p.get("follows", {}).get(h)
        c = p.get("clubs", {}).get(h)
        out.append({
            "host_id": h,
            "user_id": user,
            "following": bool(f and f[1]),
            "member": bool(c and c[1]),
            "intimacy": intimacy(p.get("hosts", {}).get(h, {})),
            "updated_ms": now_ms,
        })
    return out


async def project_fans(conn: AsyncConnection, items: Mapping[str, tuple[Profile, Iterable[str]]], *, now_ms: int) -> None:
    rows = [r for u, (p, hs) in sorted(items.items()) for r in fan_rows(u, p, hs, now_ms)]
    for i in range(0, len(rows), CHUNK):
        stmt = _insert(conn, fan_members).values(rows[i : i + CHUNK])
        stmt = stmt.on_conflict_do_update(
            index_elements=["host_id", "user_id"],
            set_={"following": stmt.excluded.following, "member": stmt.excluded.member,
                  "intimacy": stmt.excluded.intimacy, "updated_ms": stmt.excluded.updated_ms},
        )
        await conn.execute(stmt)


async def replace_all(conn: AsyncConnection, rebuilt: Mapping[str, Profile], *, erased: set[str], now_ms: int) -> int:
    """A rebuild's write: every profile becomes its rebuilt value (profiles the log no
    longer explains become empty; display names stay), and the fan projection is redone.
    Returns the number of profiles written. Hold the exclusive lock."""
    await conn.execute(update(profiles).values(data={}, updated_ms=now_ms))
    users = sorted(rebuilt)
    for i in range(0, len(users), CHUNK):
        part = users[i : i + CHUNK]
        stmt = _insert(conn, profiles).values(
            [{"user_id": u, "data": rebuilt[u], "erased": u in erased, "updated_ms": now_ms} for u in part]
        )
        stmt = stmt.on_conflict_do_update(index_elements=["user_id"], set_={"data": stmt.excluded.data, "updated_ms": stmt.excluded.updated_ms})
        await conn.execute(stmt)
    await conn.execute(delete(fan_members))
    items = {u: (p, set(p.get("hosts", {})) | set(p.get("follows", {})) | set(p.get("clubs", {}))) for u, p in rebuilt.items()}
    await project_fans(conn, items, now_ms=now_ms)
    return len(users)


async def fold_into_base(conn: AsyncConnection, partials: Mapping[str, Profile], *, now_ms: int) -> None:
    """Merge each user's partial into ``profiles_base``: the fold of the events the log no
    longer holds, which a rebuild starts from. Call inside a transaction that holds the
    shared lock and has claimed the events for :data:`BASE_CONSUMER`."""
    users = sorted(partials)
    for i in range(0, len(users), CHUNK):
        part = users[i : i + CHUNK]
        rows = [{"user_id": u, "data": {}, "updated_ms": now_ms} for u in part]
        await conn.execute(_insert(conn, profiles_base).values(rows).on_conflict_do_nothing(index_elements=["user_id"]))
        q = select(profiles_base.c.user_id, profiles_base.c.data).where(profiles_base.c.user_id.in_(part)).order_by(profiles_base.c.user_id)
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        stored = {r.user_id: _data(r.data) for r in await conn.execute(q)}
        stmt = update(profiles_base).where(profiles_base.c.user_id == bindparam("uid")).values(data=bindparam("d"), updated_ms=bindparam("ts"))
        await conn.execute(stmt, [{"uid": u, "d": merge(stored.get(u, {}), partials[u]), "ts": now_ms} for u in part])


async def load_base(conn: AsyncConnection) -> dict[str, Profile]:
    """Every row of ``profiles_base``."""
    return {r.user_id: _data(r.data) for r in await conn.execute(select(profiles_base.c.user_id, profiles_base.c.data))}


async def claimed_among(conn: AsyncConnection, consumer: str, event_ids: Iterable[str]) -> set[str]:
    """Which of ``event_ids`` ``consumer`` has claimed (``applied_events``)."""
    ids = sorted(set(event_ids))
    table = applied_events
    out: set[str] = set()
    for i in range(0, len(ids), CHUNK):
        q = select(table.c.event_id).where(table.c.consumer == consumer, table.c.event_id.in_(ids[i : i + CHUNK]))
        out.update(r[0] for r in await conn.execute(q))
    return out


async def fan_hosts(conn: AsyncConnection) -> set[str]:
    """Every host with a row in the fan projection."""
    return {r[0] for r in await conn.execute(select(fan_members.c.host_id).distinct())}


# ---------------------------------------------------------------- reads


async def get_profile(store: SqlStore, user: str) -> tuple[Profile, str | None, bool] | None:
    """``(data, display_name, erased)`` of one profile, or None."""
    async with store.read() as tx:
        r = (await tx.conn.execute(select(profiles).where(profiles.c.user_id == user))).first()
    return None if r is None else (_data(r.data), r.display_name, bool(r.erased))


async def iter_profiles(store: SqlStore, *, chunk: int = 1000) -> AsyncIterator[tuple[str, Profile, str | None, bool]]:
    """Every profile as ``(user, data, display_name, erased)``, by user id (keyset pages)."""
    after = ""
    while True:
        q = select(profiles).where(profiles.c.user_id > after).order_by(profiles.c.user_id).limit(chunk)
        async with store.read() as tx:
            rows = list(await tx.conn.execute(q))
        for r in rows:
            yield r.user_id, _data(r.data), r.display_name, bool(r.erased)
        if len(rows) < chunk:
            return
        after = rows[-1].user_id


async def set_display_name(store: SqlStore, user: str, name: str, *, now_ms: int) -> None:
    """Remember the viewer's display name (creates the profile row if needed)."""
    async with store.write() as tx:
        stmt = _insert(tx.conn, profiles).values(user_id=user, display_name=name[:200], data={}, erased=False, updated_ms=now_ms)
        await tx.conn.execute(stmt.on_conflict_do_update(index_elements=["user_id"], set_={"display_name": name[:200]}))


async def fan_board(store: SqlStore, host: str, n: int) -> list[tuple[str, int, str | None]]:
    """The host's fan-club members by intimacy: ``(user, intimacy, display name)``."""
    q = (
        select(fan_members.c.user_id, fan_members.c.intimacy, profiles.c.display_name)
        .select_from(fan_members.outerjoin(profiles, profiles.c.user_id == fan_members.c.user_id))
        .where(fan_members.c.host_id == host, fan_members.c.member.is_(True))
        .order_by(fan_members.c.intimacy.desc(), fan_members.c.user_id)
        .limit(n)
    )
    async with store.read() as tx:
        return [(r[0], int(r[1]), r[2]) for r in await tx.conn.execute(q)]


async def fan_counts(store: SqlStore, host: str) -> dict[str, int]:
    q = select(
        func.coalesce(func.sum(case((fan_members.c.member.is_(True), 1), else_=0)), 0),
        func.coalesce(func.sum(case((fan_members.c.following.is_(True), 1), else_=0)), 0),
    ).where(fan_members.c.host_id == host)
    async with store.read() as tx:
        members, followers = (await tx.conn.execute(q)).one()
    return {"members": int(members), "followers": int(followers)}


async def memberships(store: SqlStore, user: str) -> list[dict[str, Any]]:
    q = select(fan_members).where(fan_members.c.user_id == user).order_by(fan_members.c.intimacy.desc(), fan_members.c.host_id)
    async with store.read() as tx:
        return [
            {"host": r.host_id, "following": bool(r.following), "member": bool(r.member), "intimacy": int(r.intimacy)}
            for r in await tx.conn.execute(q)
        ]


# ---------------------------------------------------------------- erasure


def _rekey(ref: str, user: str, alias: str) -> str:
    return ref.replace(f":{user}:", f":{alias}:")


async def erase_user(store: SqlStore, user: str, alias: str, *, now_ms: int) -> dict[str, int]:
    """Remove or pseudonymise ``user``'s personal data in SQL, in one transaction.

    * ledgers (wallet, points), orders, coupon claims, refunds and tickets keep their rows
      under ``alias``, so every balance still equals the sum of its entries; ledger
      references that embed the user id (``topup:<user>:<key>``) embed ``alias`` instead;
    * free text the viewer wrote (refund notes, ticket subjects, texts and notes) is blanked
      (``[erased]``) or nulled, and the display name is dropped;
    * the profile is merged into ``alias``'s (marked erased) and the fan rows move with it;
    * ``alias`` is recorded in ``erasures`` (the user id is not);
    * the notification inbox and schedule subscriptions (follower reach) are deleted.

    Returns the rows changed per table.
    """
    done: dict[str, int] = {}
    async with store.write() as tx:
        conn = tx.conn
        await lock(conn, exclusive=True)
        stmt = _insert(conn, erasures).values(pseudonym=alias, erased_ms=now_ms)
        await conn.execute(stmt.on_conflict_do_update(index_elements=["pseudonym"], set_={"erased_ms": now_ms}))
        mine = (await conn.execute(select(profiles).where(profiles.c.user_id.in_([user, alias])))).all()
        merged: Profile = {}
        for r in mine:
            merged = merge(merged, _data(r.data))
        await conn.execute(delete(profiles).where(profiles.c.user_id.in_([user, alias])))
        await conn.execute(profiles.insert().values(user_id=alias, display_name=None, data=merged, erased=True, updated_ms=now_ms))
        done["profiles"] = len(mine)
        based = (await conn.execute(select(profiles_base).where(profiles_base.c.user_id.in_([user, alias])))).all()
        if based:  # the folded, trimmed part of the log moves to the pseudonym too
            base: Profile = {}
            for r in based:
                base = merge(base, _data(r.data))
            await conn.execute(delete(profiles_base).where(profiles_base.c.user_id.in_([user, alias])))
            await conn.execute(profiles_base.insert().values(user_id=alias, data=base, updated_ms=now_ms))
        done["profiles_base"] = len(based)
        res = await conn.execute(delete(fan_members).where(fan_members.c.user_id.in_([user, alias])))
        done["fan_members"] = int(res.rowcount)
        hosts = set(merged.get("hosts", {})) | set(merged.get("follows", {})) | set(merged.get("clubs", {}))
        await project_fans(conn, {alias: (merged, hosts)}, now_ms=now_ms)
        for table in (wallet_ledger, points_ledger):
            rows = (await conn.execute(select(table.c.id, table.c.ref_event_id).where(table.c.user_id == user))).all()
            if rows:
                await conn.execute(
                    update(table).where(table.c.id == bindparam("rid")).values(user_id=alias, ref_event_id=bindparam("ref")),
                    [{"rid": r.id, "ref": _rekey(r.ref_event_id, user, alias)} for r in rows],
                )
            done[str(table.name)] = len(rows)
        # the points balances follow the rows: the pseudonym's is the sum of its rows now
        pl = points_ledger.c
        await conn.execute(delete(points_balances).where(points_balances.c.user_id.in_([user, alias])))
        await conn.execute(points_balances.insert().from_select(
            ["user_id", "role", "balance"],
            select(pl.user_id, pl.role, func.sum(pl.delta)).where(pl.user_id.in_([user, alias])).group_by(pl.user_id, pl.role)))
        for table in (orders, coupon_claims):
            res = await conn.execute(update(table).where(table.c.user_id == user).values(user_id=alias))
            done[str(table.name)] = int(res.rowcount)
        res = await conn.execute(update(refunds).where(refunds.c.user_id == user).values(user_id=alias, note=None, decision_note=None))
        done["refunds"] = int(res.rowcount)
        ids = [r[0] for r in await conn.execute(select(tickets.c.id).where(tickets.c.user_id == user))]
        if ids:
            await conn.execute(update(tickets).where(tickets.c.id.in_(ids)).values(user_id=alias, subject="[erased]", text="[erased]"))
            await conn.execute(update(ticket_events).where(ticket_events.c.ticket_id.in_(ids)).values(note=None))
        await conn.execute(update(ticket_events).where(ticket_events.c.by_user == user).values(by_user=alias))
        done["tickets"] = len(ids)
        # follower reach: the inbox and the reminders are about the user only: deleted
        for table in (notifications, schedule_subs):
            res = await conn.execute(delete(table).where(table.c.user_id == user))
            done[str(table.name)] = int(res.rowcount)
        # a fan-out's cursor names the last user of its last page: forgotten (an unfinished
        # fan-out starts its scan again; rows already written are not written twice)
        await conn.execute(update(reach_fanouts).where(reach_fanouts.c.after_user == user).values(after_user=""))
        done |= await fulfilment_sql.erase_user(conn, user, alias)  # addresses go, parcels keep no address
    return done
