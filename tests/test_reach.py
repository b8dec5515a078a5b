"""Follower reach: the pure rules, and the fan-out worker on real SQL (SQLite and PostgreSQL)
with a real Redis for the unread counts: one inbox row per follower whatever is redelivered,
a fan-out interrupted mid-way resumes after its last committed page, reminders go out once
per subscriber whatever the sweepers do."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livecommerce import reach_sql
from livecommerce.errors import BadFrame, Conflict, Unavailable
from livecommerce.keys import Keys
from livecommerce.log import MemoryLog, new_event
from livecommerce.reach import (
    HOST_LIVE,
    SCHEDULE_DUE,
    SCHEDULE_TRANSITIONS,
    TOPIC,
    Fanout,
    Schedule,
    check_read,
    check_schedule,
    due,
    fanout_of,
    live_event,
    live_event_id,
    push_frame,
    schedule_step,
    starts_with_show,
    upcoming,
)
from livecommerce.reach_redis import RedisReach
from livecommerce.schema import fan_members, notifications, reach_fanouts
from livecommerce.store_sql import SqlStore
from workers.reach import ReachWorker, Sweeper

NOW = 1_800_000_000_000


# ---------------------------------------------------------------- rules


@pytest.mark.parametrize("body, field", [
    (None, "body"), ({"start_ms": NOW}, "title"), ({"title": " ", "start_ms": NOW}, "title"),
    ({"title": "x" * 101, "start_ms": NOW}, "title"), ({"title": "t", "start_ms": "soon"}, "start_ms"),
    ({"title": "t", "start_ms": True}, "start_ms"), ({"title": "t", "start_ms": NOW - 3_600_000}, "past"),
    ({"title": "t", "start_ms": NOW + 31 * 86_400_000}, "30 days"), ({"title": "t", "start_ms": NOW, "products": "p1"}, "products"),
    ({"title": "t", "start_ms": NOW, "products": ["bad id!"]}, "products"), ({"title": "t", "start_ms": NOW, "room": 5}, "room"),
])
def test_a_bad_schedule_is_refused_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(BadFrame) as e:
        check_schedule(body, now_ms=NOW)
    assert field in e.value.message and e.value.code == "invalid"


def test_a_schedule_keeps_its_products_once_in_order() -> None:
    got = check_schedule({"title": " Spring sale ", "start_ms": NOW + 60_000, "products": ["p2", "p1", "p2"], "room": "r1"},
                         now_ms=NOW)
    assert (got.title, got.products, got.room) == ("Spring sale", ("p2", "p1"), "r1")


def test_the_schedule_life_cycle_has_two_final_states() -> None:
    assert schedule_step("scheduled", "remind") == "reminded"
    assert schedule_step("scheduled", "cancel") == "cancelled"
    for state in ("reminded", "cancelled"):
        for step in ("remind", "cancel"):
            with pytest.raises(Conflict) as e:
                schedule_step(state, step)  # type: ignore[arg-type]
            assert e.value.code == f"schedule_{state}"
    assert {s for s, _ in SCHEDULE_TRANSITIONS} == {"scheduled"}


def test_a_live_event_fans_out_to_the_hosts_followers_with_the_row_id_as_the_notice_id() -> None:
    eid = live_event_id("r1", NOW)
    f = fanout_of(HOST_LIVE, eid, live_event("h1", "r1", "Tea", NOW))
    assert f == Fanout(eid, "followers", "h1", {"id": eid, "kind": "host.live", "host": "h1", "room": "r1", "title": "Tea",
                                                "start_ms": NOW})
    assert push_frame(f.notice) == ("host.live", {"id": eid, "host": "h1", "room": "r1", "title": "Tea", "start_ms": NOW})
    assert live_event_id("r1", NOW) == eid  # a repeated go-live of the same show: the same event
    assert fanout_of(HOST_LIVE, "x", {"host": "bad host!", "room": "r1"}) is None
    assert fanout_of("gift.sent", "x", {}) is None
    due_f = fanout_of(SCHEDULE_DUE, "sd", {"schedule": "s1", "host": "h1", "title": "T", "start_ms": NOW, "room": None})
    assert due_f is not None and (due_f.audience, due_f.of, due_f.notice["kind"]) == ("subscribers", "s1", "schedule.reminder")


@pytest.mark.parametrize("body", [None, {}, {"ids": []}, {"ids": "a"}, {"ids": [1]}, {"all": "yes"}, {"all": True, "ids": ["a"]},
                                  {"ids": ["a"] * 201}])
def test_marking_read_takes_ids_or_all(body: Any) -> None:
    with pytest.raises(BadFrame):
        check_read(body)


def test_marking_read_forms() -> None:
    assert check_read({"all": True}) is None
    assert check_read({"ids": ["b", "a", "b"]}) == ["b", "a"]


_states = st.sampled_from(["scheduled", "reminded", "cancelled"])


@given(st.lists(st.tuples(st.integers(-10, 10), _states, st.sampled_from(["h1", "h2", "h3"])), max_size=20),
       st.frozensets(st.sampled_from(["h1", "h2", "h3"])))
def test_due_and_upcoming_list_only_scheduled_shows_followed_hosts_first(rows: list[tuple[int, str, str]],
                                                                       following: frozenset[str]) -> None:
    hour = 3_600_000
    ss = [Schedule(f"s{i}", h, "t", NOW + d * hour, state=state) for i, (d, state, h) in enumerate(rows)]  # type: ignore[arg-type]
    got = due(ss, NOW)
    assert all(s.state == "scheduled" and s.start_ms <= NOW for s in got)
    assert len(got) == sum(1 for s in ss if s.state == "scheduled" and s.start_ms <= NOW)
    soon = upcoming(ss, now_ms=NOW, following=following, limit=50)
    assert all(x["state"] == "scheduled" and x["start_ms"] >= NOW - 60_000 for x in soon)
    flags = [x["following"] for x in soon]
    assert flags == sorted(flags, reverse=True)  # followed hosts first


# ---------------------------------------------------------------- the fan-out on SQL


async def follow(store: SqlStore, host: str, users: list[str], *, following: bool = True) -> None:
    async with store.write() as tx:
        await tx.conn.execute(fan_members.insert(), [
            {"host_id": host, "user_id": u, "following": following, "member": False, "intimacy": 0, "updated_ms": NOW}
            for u in users])


def live(room: str, host: str, live_ms: int = NOW) -> Any:
    return new_event(TOPIC, host, HOST_LIVE, live_event(host, room, "show", live_ms), live_event_id(room, live_ms), live_ms)


async def test_every_follower_gets_one_row_whatever_is_redelivered(store: SqlStore, redis: Any, keys: Keys) -> None:
    followers = [f"f{i:03d}" for i in range(53)]
    await follow(store, "h1", followers)
    await follow(store, "h1", ["gone1", "gone2"], following=False)  # unfollowed: not in the audience
    await follow(store, "h2", ["other"])
    reach = RedisReach(redis, keys)
    worker = ReachWorker(store, reach, None, page=10)
    log = MemoryLog()
    ev = live("r1", "h1")
    await log.append_many([ev, ev])  # appended twice (a retried go-live): the same id
    assert await worker.drain(log) == 2
    assert await reach_sql.count_rows(store, ev.id) == (53, 53)
    state = await reach_sql.fanout_state(store, ev.id)
    assert state is not None and state["written"] == 53 and state["done_ms"] is not None
    assert worker.written == 53
    # redelivered once more after the fan-out finished: nothing is written, nobody counted twice
    await worker([ev])
    assert await reach_sql.count_rows(store, ev.id) == (53, 53) and worker.written == 53
    assert await reach.unread("f000") == 1 and await reach.unread("other") == 0 and await reach.unread("gone1") == 0
    assert await reach.unread_many(["f000", "f052", "other"]) == {"f000": 1, "f052": 1, "other": 0}
    items, unread = await reach_sql.inbox(store, "f007")
    assert unread == 1 and [(i["id"], i["kind"], i["host"], i["room"], i["read"]) for i in items] == [
        (ev.id, "host.live", "h1", "r1", False)]
    # a second show of the same room is another notice
    ev2 = live("r1", "h1", NOW + 10_000)
    await worker([ev2])
    items, unread = await reach_sql.inbox(store, "f007")
    assert unread == 2 and [i["id"] for i in items] == [ev2.id, ev.id]
    assert await reach_sql.mark_read(store, "f007", [ev.id, "not-mine"], now_ms=NOW) == (1, 1)
    assert await reach_sql.mark_read(store, "f007", [ev.id], now_ms=NOW) == (0, 1)  # already read
    items, unread = await reach_sql.inbox(store, "f007", unread_only=True)
    assert unread == 1 and [i["id"] for i in items] == [ev2.id]
    assert await reach_sql.mark_read(store, "f007", None, now_ms=NOW) == (1, 0)
    assert (await reach_sql.inbox(store, "f008"))[1] == 2  # someone else's rows are untouched


class Crash(Exception):
    pass


class CrashingWorker(ReachWorker):
    """Dies after ``pages`` committed pages, before pushing the last one (a kill between a
    page's commit and its push)."""

    def __init__(self, *a: Any, pages: int, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.left = pages

    async def deliver(self, f: Fanout, users: list[str]) -> None:
        self.left -= 1
        if self.left < 0:
            raise Crash
        await super().deliver(f, users)


async def test_a_fan_out_killed_mid_way_resumes_after_its_last_committed_page(store: SqlStore, redis: Any, keys: Keys) -> None:
    followers = [f"u{i:04d}" for i in range(95)]
    await follow(store, "h1", followers)
    reach = RedisReach(redis, keys)
    ev = live("r9", "h1")
    first = CrashingWorker(store, reach, None, page=20, pages=2)
    with pytest.raises(Crash):
        await first([ev])
    state = await reach_sql.fanout_state(store, ev.id)
    assert state is not None and state["written"] == 60 and state["done_ms"] is None  # three pages committed
    assert await reach_sql.count_rows(store, ev.id) == (60, 60)
    second = ReachWorker(store, reach, None, page=20)
    await second([ev])
    assert await reach_sql.count_rows(store, ev.id) == (95, 95)
    assert second.written == 35  # only what was left
    unread = {u: await reach.unread(u) for u in followers}
    # the page committed but not pushed (u0040..u0059) has no count: listing the inbox repairs it
    assert {u for u, n in unread.items() if n != 1} == {f"u{i:04d}" for i in range(40, 60)}


async def test_two_workers_on_the_same_event_write_each_row_once(store: SqlStore, redis: Any, keys: Keys) -> None:
    import asyncio

    await follow(store, "h1", [f"u{i:04d}" for i in range(240)])
    reach = RedisReach(redis, keys)
    ev = live("r2", "h1")
    a, b = ReachWorker(store, reach, None, page=16), ReachWorker(store, reach, None, page=16)
    await asyncio.gather(a([ev]), b([ev]))
    assert await reach_sql.count_rows(store, ev.id) == (240, 240)
    assert a.written + b.written == 240
    state = await reach_sql.fanout_state(store, ev.id)
    assert state is not None and state["written"] == 240


# ---------------------------------------------------------------- schedules and reminders


async def test_subscribers_are_reminded_once_at_the_start_whatever_the_sweepers_do(store: SqlStore, redis: Any,
                                                                                   keys: Keys) -> None:
    reach = RedisReach(redis, keys)
    s = Schedule("h1.1.a", "h1", "Spring", NOW + 60_000, products=("p1",), room="r1")
    later = Schedule("h1.2.b", "h1", "Later", NOW + 3_600_000)
    gone = Schedule("h1.3.c", "h1", "Cancelled", NOW + 30_000)
    for x in (s, later, gone):
        await reach_sql.create_schedule(store, x, now_ms=NOW)
    for u in ("v1", "v2", "v3"):
        assert await reach_sql.subscribe(store, s.id, u, on=True, now_ms=NOW)
        await reach_sql.subscribe(store, gone.id, u, on=True, now_ms=NOW)
    assert not await reach_sql.subscribe(store, s.id, "v1", on=True, now_ms=NOW)  # already
    assert await reach_sql.subscribe(store, s.id, "v3", on=False, now_ms=NOW)
    await reach_sql.step_schedule(store, gone.id, "cancel", now_ms=NOW)
    with pytest.raises(Conflict):
        await reach_sql.step_schedule(store, gone.id, "cancel", now_ms=NOW)
    got = await reach_sql.get_schedule(store, s.id)
    assert got is not None and got.subscribers == 2 and got.products == ("p1",)

    log = MemoryLog()
    one = Sweeper(store, reach, log, worker="w1", lease_ms=60_000)
    two = Sweeper(store, reach, log, worker="w2", lease_ms=60_000)
    assert await one.sweep(NOW) == 0  # nothing due yet
    assert await two.sweep(NOW + 120_000) == 0  # w1 holds the lease
    assert await one.sweep(NOW + 120_000) == 1  # s is due; later is not, gone was cancelled
    assert await one.sweep(NOW + 130_000) == 0  # reminded: not again
    worker = ReachWorker(store, reach, None, page=1)
    assert await worker.drain(log) == 1
    rows = {u: (await reach_sql.inbox(store, u))[0] for u in ("v1", "v2", "v3")}
    assert [r["kind"] for r in rows["v1"]] == ["schedule.reminder"] and rows["v1"][0]["schedule"] == s.id
    assert rows["v3"] == []  # unsubscribed before the start
    # a sweeper that crashed between the append and the mark appends the same event again
    await log.append_many([new_event(TOPIC, "h1", SCHEDULE_DUE, {"schedule": s.id, "host": "h1", "title": "Spring",
                                                                 "start_ms": s.start_ms}, f"schedule.due:{s.id}", NOW)])
    await worker.drain(log)
    assert await reach_sql.count_rows(store, f"schedule.due:{s.id}") == (2, 2)
    assert worker.written == 2
    listed = await reach_sql.host_schedules(store, "h1", from_ms=0)
    assert [(x.id, x.state) for x in listed] == [(gone.id, "cancelled"), (s.id, "reminded"), (later.id, "scheduled")]


class DownReach(RedisReach):
    async def add_unread(self, users: Any) -> None:
        raise Unavailable("redis down")


async def test_a_push_that_fails_leaves_the_rows_written(store: SqlStore, redis: Any, keys: Keys) -> None:
    await follow(store, "h1", ["a", "b"])
    worker = ReachWorker(store, DownReach(redis, keys), None)
    ev = live("r3", "h1")
    await worker([ev])
    assert await reach_sql.count_rows(store, ev.id) == (2, 2)


async def test_old_inbox_rows_and_finished_cursors_are_pruned(store: SqlStore, redis: Any, keys: Keys) -> None:
    await follow(store, "h1", [f"u{i}" for i in range(30)])
    worker = ReachWorker(store, RedisReach(redis, keys), None, page=10)
    old, new = live("r1", "h1", NOW), live("r1", "h1", NOW + 10_000)
    await worker([old])
    async with store.write() as tx:  # the first show's rows and cursor are from long ago (the rows carry the worker's clock)
        await tx.conn.execute(notifications.update().where(notifications.c.id == old.id).values(created_ms=1000))
        await tx.conn.execute(reach_fanouts.update().where(reach_fanouts.c.event_id == old.id).values(done_ms=1000))
    await worker([new])
    cutoff = 2000
    assert await reach_sql.prune(store, cutoff, limit=1000) == 30
    assert await reach_sql.count_rows(store, old.id) == (0, 0) and await reach_sql.count_rows(store, new.id) == (30, 30)
    assert await reach_sql.fanout_state(store, old.id) is None and await reach_sql.fanout_state(store, new.id) is not None
    assert await reach_sql.prune(store, cutoff) == 0


async def test_a_migration_step_that_lands_after_a_higher_one_is_still_applied(store_url: str,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Step numbers are handed out ahead of landing: reach's step 10 may reach a database
    before a step 8 or 9 exists. Upgrading later applies the lower step too."""
    from livecommerce import migrations

    full = list(migrations.STEPS)
    monkeypatch.setattr(migrations, "STEPS", [s for s in full if s[0] != 7])  # step 7 "not landed yet"
    assert await migrations.upgrade(store_url) == migrations.LATEST
    assert (await migrations.status(store_url)).up_to_date
    monkeypatch.setattr(migrations, "STEPS", full)  # step 7 lands
    st = await migrations.status(store_url)
    assert st.current == 6 and [v for v, _ in st.pending] == [7] and not st.up_to_date
    assert await migrations.upgrade(store_url) == migrations.LATEST
    assert (await migrations.status(store_url)).up_to_date
    s = SqlStore(store_url)
    try:
        assert await s.check_schema() == migrations.LATEST
        async with s.read() as tx:  # step 7's tables exist now
            from sqlalchemy import func, select

            from livecommerce.schema import moderation_actions
            assert (await tx.conn.execute(select(func.count()).select_from(moderation_actions))).scalar() == 0
    finally:
        await s.close()



async def test_the_sweep_lease_passes_on_when_it_lapses_or_is_given_up(store: SqlStore, redis: Any, keys: Keys) -> None:
    import asyncio

    reach = RedisReach(redis, keys)
    assert await reach.take_lease("w1", 150) and await reach.take_lease("w1", 150)  # held, extended
    assert not await reach.take_lease("w2", 150)
    await asyncio.sleep(0.3)  # w1 died: its lease lapses
    assert await reach.take_lease("w2", 60_000) and not await reach.take_lease("w1", 60_000)
    await reach.release_lease("w1")  # not the holder: nothing happens
    assert not await reach.take_lease("w1", 60_000)
    stop = asyncio.Event()
    stop.set()
    await Sweeper(store, reach, MemoryLog(), worker="w2").loop(stop)  # w2 stops: gives it up
    assert await reach.take_lease("w1", 60_000)


@pytest.mark.cluster
async def test_unread_counts_and_the_lease_on_redis_cluster(cluster_redis: Any, keys: Keys) -> None:
    """The users' counters live in their own slots: a cluster gets a pipeline, not the script."""
    await cluster_redis.initialize()
    reach = RedisReach(cluster_redis, keys)
    users = [f"c{i}" for i in range(50)]
    await reach.add_unread(users)
    await reach.add_unread(users[:10])
    assert [await reach.unread(u) for u in ("c0", "c9", "c10", "c49", "nobody")] == [2, 2, 1, 1, 0]
    assert await reach.unread_many(["c0", "c10", "nobody"]) == {"c0": 2, "c10": 1, "nobody": 0}
    assert await reach.take_lease("w1", 60_000) and not await reach.take_lease("w2", 60_000)
    await reach.release_lease("w1")
    assert await reach.take_lease("w2", 60_000)
    for u in users:
        await reach.forget(u)
    await cluster_redis.delete(keys.global_key("reach:sweep"))


def test_a_go_live_starts_the_hosts_schedule_for_that_room_up_to_half_an_hour_early() -> None:
    s = Schedule("s", "h1", "t", NOW + 20 * 60_000, room="r1")
    assert starts_with_show(s, host="h1", room="r1", live_ms=NOW)
    assert not starts_with_show(s, host="h1", room="r2", live_ms=NOW)  # another room's show
    assert not starts_with_show(s, host="h2", room="r1", live_ms=NOW)
    assert not starts_with_show(s, host="h1", room="r1", live_ms=NOW - 20 * 60_000)  # 40 min early
    assert starts_with_show(Schedule("s", "h1", "t", NOW - 3_600_000), host="h1", room="r9", live_ms=NOW)  # no room, late
    assert not starts_with_show(Schedule("s", "h1", "t", NOW, state="reminded"), host="h1", room="r1", live_ms=NOW)


async def test_subscribers_are_reminded_with_an_early_go_live_and_not_again_at_the_start(store: SqlStore, redis: Any,
                                                                                         keys: Keys) -> None:
    import time

    now = int(time.time() * 1000)
    reach = RedisReach(redis, keys)
    soon = Schedule("h1.a", "h1", "Soon", now + 10 * 60_000, room="r1")
    later = Schedule("h1.b", "h1", "Later", now + 3 * 3_600_000)
    elsewhere = Schedule("h1.c", "h1", "Elsewhere", now + 10 * 60_000, room="r2")
    for s in (soon, later, elsewhere):
        await reach_sql.create_schedule(store, s, now_ms=now)
        for u in ("v1", "v2"):
            await reach_sql.subscribe(store, s.id, u, on=True, now_ms=now)
    worker = ReachWorker(store, reach, None)
    await worker([live("r1", "h1", now)])  # no followers; the go-live starts `soon`
    assert await reach_sql.count_rows(store, f"schedule.due:{soon.id}") == (2, 2)
    assert await reach_sql.count_rows(store, f"schedule.due:{later.id}") == (0, 0)
    assert await reach_sql.count_rows(store, f"schedule.due:{elsewhere.id}") == (0, 0)
    got = {s.id: s.state for s in await reach_sql.host_schedules(store, "h1", from_ms=0)}
    assert got == {soon.id: "reminded", later.id: "scheduled", elsewhere.id: "scheduled"}
    log = MemoryLog()  # at soon's start the sweep has nothing of it left to do ...
    assert await Sweeper(store, reach, log, worker="w").sweep(soon.start_ms) == 1  # (elsewhere is due)
    # ... and a schedule.due of `soon` appended anyway (a sweep racing the go-live) writes nothing
    await log.append_many([new_event(TOPIC, "h1", SCHEDULE_DUE, {"schedule": soon.id, "host": "h1", "title": "Soon",
                                                                 "start_ms": soon.start_ms}, f"schedule.due:{soon.id}", now)])
    await worker.drain(log)
    assert await reach_sql.count_rows(store, f"schedule.due:{soon.id}") == (2, 2)
    assert await reach_sql.count_rows(store, f"schedule.due:{elsewhere.id}") == (2, 2)
    await worker([live("r1", "h1", now)])  # the same go-live again: nothing new
    assert worker.written == 4
