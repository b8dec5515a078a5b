"""Growth analytics: facts from log events (pure), daily actives, new against returning,
day-1/day-7 retention and the acquisition funnel computed exactly from a small known log
(SQLite and PostgreSQL), and the HTTP flow: an invite code, a newcomer arriving with it,
visits from ``welcome``, the funnel by invite code and the referral status."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.openapi import document
from livecommerce.errors import BadFrame
from livecommerce.growth import (
    DAY_MS,
    Fact,
    facts_for,
    iso_day,
    parse_day,
    retention_json,
    rollup,
    window,
)
from livecommerce.keys import Keys
from livecommerce.log_open import open_log
from livecommerce.log_redis import RedisLog
from livecommerce.store_sql import SqlStore
from tests.fixtures_gateway import GatewayFactory
from tests.test_openapi import validate
from tests.waiting import wait_until
from tests.wsclient import Client
from workers.growth import GrowthWorker
from workers.growth import drain as growth_drain

TODAY = int(time.time() * 1000) // DAY_MS
D0 = TODAY - 10


def test_each_event_becomes_a_fact_of_its_user() -> None:
    assert facts_for("e1", "order.paid", {"user_id": "u", "amount": 1999, "room_id": "r"}, 5) == [Fact("e1", "u", "pay", 5, 1999, "r")]
    assert facts_for("e2", "activity.watch", {"user": "u", "minutes": 3, "room": "r"}, 6)[0].amount == 3
    assert facts_for("e3", "order.reserved", {"user_id": "u", "qty": 2, "unit_price": 500}, 7)[0].amount == 1000
    assert facts_for("e4", "gift.sent", {"user": "u", "value": 30, "room": "r"}, 8)[0].kind == "gift"
    assert facts_for("e5", "order.cancelled", {"user_id": "u"}, 9) == []
    assert facts_for("e6", "growth.visit", {"room": "r"}, 9) == []  # no user, no fact
    r = rollup([Fact("a", "u", "pay", 30), Fact("b", "u", "comment", 20), Fact("c", "u", "pay", 10), Fact("d", "u", "refund", 1)])
    assert (r["u"].first_active_ms, r["u"].activated_ms, r["u"].first_paid_ms, r["u"].first_paid_event) == (10, 20, 10, "c")


def test_windows_and_cohorts_that_have_not_come_back_yet() -> None:
    assert window({}, today=100) == (71, 100)
    assert window({"days": "7", "until": "1970-01-11"}, today=100) == (4, 10)
    assert parse_day(iso_day(19_000)) == 19_000
    for bad in ({"days": "0"}, {"days": "x"}, {"until": "tomorrow"}):
        with pytest.raises(BadFrame):
            window(bad, today=100)
    j = retention_json(9, 10, 10, {9: (4, 1, 0), 10: (2, 0, 0)})
    assert j["cohorts"][0]["d1_rate"] == 0.25 and j["cohorts"][0]["d7_rate"] is None  # day 16 is in the future
    assert j["cohorts"][1]["d1"] is None and j["d1_rate"] == 0.25


def _ev(eid: str, topic: str, key: str, type_: str, data: dict, day: int, minute: int = 0) -> tuple:
    return (topic, key, type_, data, eid, (D0 + day) * DAY_MS + 10 * 3_600_000 + minute * 60_000)


LOG = [
    _ev("acq:u1", "growth", "u1", "growth.acquired", {"user": "u1", "channel": "ads"}, 0),
    _ev("visit:u1:0", "growth", "u1", "growth.visit", {"user": "u1", "room": "r1"}, 0, 1),
    _ev("c1", "activity", "u1", "activity.comment", {"user": "u1", "room": "r1"}, 0, 2),
    _ev("w2", "activity", "u2", "activity.watch", {"user": "u2", "room": "r1", "minutes": 4}, 0, 3),
    _ev("visit:u1:1", "growth", "u1", "growth.visit", {"user": "u1", "room": "r1"}, 1),
    _ev("o1:paid", "orders", "o1", "order.paid", {"user_id": "u1", "room_id": "r1", "amount": 5000}, 1, 5),
    _ev("acq:u3", "growth", "u3", "growth.acquired", {"user": "u3", "channel": "invite", "invite_code": "ABCDEFGH", "referrer": "u1"}, 1),
    _ev("visit:u3:1", "growth", "u3", "growth.visit", {"user": "u3", "room": "r2"}, 1, 1),
    _ev("g3", "gifts", "u3", "gift.sent", {"user": "u3", "room": "r2", "value": 10}, 1, 2),
    _ev("visit:u2:2", "growth", "u2", "growth.visit", {"user": "u2", "room": "r1"}, 2),
    _ev("o3:paid", "orders", "o3", "order.paid", {"user_id": "u3", "room_id": "r2", "amount": 3000}, 2, 3),
    _ev("o3:refunded", "orders", "o3", "order.refunded", {"user_id": "u3", "room_id": "r2", "amount": 1000}, 3),
    _ev("acq:u4", "growth", "u4", "growth.acquired", {"user": "u4", "channel": "ads"}, 3),
    _ev("visit:u1:7", "growth", "u1", "growth.visit", {"user": "u1", "room": "r1"}, 7),
]


async def test_daily_retention_and_funnel_match_the_log(redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    from livecommerce import growth_sql

    log = RedisLog(redis, keys)
    for topic, key, type_, data, eid, ts in LOG + LOG[::3]:  # some events twice
        await log.append(topic, key, type_, data, event_id=eid, ts=ts)
    worker = GrowthWorker(store, redis, keys)
    await growth_drain(log, worker, fetch_timeout_ms=100)
    assert worker.applied == len(LOG)
    active, money = await growth_sql.daily(store, D0, D0 + 7)
    assert active == {D0: (2, 2), D0 + 1: (2, 1), D0 + 2: (2, 0), D0 + 7: (1, 0)}
    assert money == {D0 + 1: (5000, 1), D0 + 2: (3000, 1), D0 + 3: (-1000, 0)}
    assert await growth_sql.retention(store, D0, D0 + 7) == {D0: (2, 1, 1), D0 + 1: (1, 1, 0)}
    rows = {r["key"]: r for r in await growth_sql.funnel(store, D0, D0 + 7)}
    steps = ("acquired", "activated", "retained_d1", "retained_d7", "paying", "referring", "invitees", "revenue")
    assert {k: tuple(int(r[s]) for s in steps) for k, r in rows.items()} == {
        "ads": (2, 1, 1, 1, 1, 1, 1, 5000),
        "invite": (1, 1, 1, 0, 1, 0, 0, 2000),
        "organic": (1, 0, 0, 0, 0, 0, 0, 0),
    }
    by_code = await growth_sql.funnel(store, D0, D0 + 7, by="invite")
    assert [(r["key"], r["acquired"], r["paying"]) for r in by_code] == [("ABCDEFGH", 1, 1)]
    assert (await growth_sql.user_row(store, "u3"))["referral_event"] == "o3:paid"  # type: ignore[index]


DOC = document()


async def _json(s: aiohttp.ClientSession, method: str, url: str, token: str, **kw: object) -> tuple[int, dict]:
    """Call and check the answer against its OpenAPI schema (the documented status)."""
    async with s.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kw) as r:  # type: ignore[arg-type]
        data = await r.json()
        template = next(p for p in DOC["paths"] if re.fullmatch(re.sub(r"{\w+}", "[^/]+", p), r.url.path))
        resp = DOC["paths"][template][method.lower()]["responses"][str(r.status)]
        assert not validate(data, resp["content"]["application/json"]["schema"], DOC), (template, data)
        return r.status, data


async def test_invite_acquire_visit_and_the_ops_endpoints(
    gateway_factory: GatewayFactory, token: Callable[..., str], redis: aioredis.Redis, keys: Keys
) -> None:
    node = await gateway_factory()
    ops = token("boss", "ops")
    async with aiohttp.ClientSession() as s:
        st, inv = await _json(s, "POST", f"{node.url}/api/v1/invites", token("alice"))
        assert st == 200 and inv["referrer_points"] == 200 and inv["invitee_points"] == 100
        st, again = await _json(s, "POST", f"{node.url}/api/v1/invites", token("alice"))
        assert again["code"] == inv["code"]
        st, err = await _json(s, "POST", f"{node.url}/api/v1/growth/acquire", token("alice"), json={"invite_code": inv["code"]})
        assert st == 409 and err["error"]["code"] == "own_code"
        st, err = await _json(s, "POST", f"{node.url}/api/v1/growth/acquire", token("bob"), json={"invite_code": "ZZZZZZZZ"})
        assert st == 404 and err["error"]["code"] == "unknown_code"
        st, acq = await _json(s, "POST", f"{node.url}/api/v1/growth/acquire", token("bob"), json={"invite_code": inv["code"].lower()})
        assert st == 201 and acq["referrer"] == "alice" and acq["channel"] == "invite"
        st, acq2 = await _json(s, "POST", f"{node.url}/api/v1/growth/acquire", token("bob"), json={"channel": "ads"})
        assert st == 200 and acq2["first"] is False and acq2["channel"] == "invite"
        c = await Client.connect(node.ws, "room1", token("bob"), fmt="json")  # a visit
        assert "flags" in c.welcome["d"] and c.welcome["d"]["flags"]["feed.ranker"] == "popularity"
        await c.close()
        durable = open_log(node.settings, redis)
        await durable.append("orders", "o1", "order.paid", {"order_id": "o1", "user_id": "bob", "room_id": "room1", "amount": 2500},
                             event_id="o1:paid")
        store = SqlStore(node.settings.database_url)
        try:
            worker = GrowthWorker(store, redis, keys)

            async def applied() -> int:  # the visit and acquisition are appended in the background
                await growth_drain(durable, worker, fetch_timeout_ms=100)
                return worker.applied

            await wait_until(applied, until=lambda n: n >= 3, interval=0.1, what="the visit, the acquisition and the payment applied")
        finally:
            await store.close()
            await durable.close()
        st, funnel = await _json(s, "GET", f"{node.url}/api/v1/growth/funnel?by=invite&days=2", ops)
        assert st == 200 and funnel["rows"][0]["invite"] == inv["code"]
        assert funnel["rows"][0]["counts"]["acquired"] == 1 and funnel["rows"][0]["counts"]["paying"] == 1
        st, daily = await _json(s, "GET", f"{node.url}/api/v1/growth/daily?days=3", ops)
        assert daily["days"][-1]["active"] == 1 and daily["days"][-1]["new"] == 1 and daily["days"][-1]["revenue"] == 2500
        st, ret = await _json(s, "GET", f"{node.url}/api/v1/growth/retention?days=3", ops)
        assert ret["cohorts"][-1]["size"] == 1 and ret["cohorts"][-1]["d1_rate"] is None
        st, ref = await _json(s, "GET", f"{node.url}/api/v1/referrals/alice", token("alice"))
        assert (ref["invited"], ref["paid"], ref["rewarded"], ref["points_earned"]) == (1, 1, 1, 200)
        st, _ = await _json(s, "GET", f"{node.url}/api/v1/growth/daily", token("bob"))
        assert st == 403
