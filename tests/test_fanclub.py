"""Fan clubs end to end: follow and join over HTTP, intimacy from watching, commenting, gifting
and buying (the log's ``activity``, ``gifts`` and ``orders``), the fan badge on a member's
comments in the host's room, and the host's fan leaderboard."""

from __future__ import annotations

from typing import Any

from livecommerce.fanclub import FAN_LEVELS, fan_level, intimacy, lww
from tests.test_refunds import World, http  # noqa: F401  (fixture)
from tests.wsclient import Client


def test_fan_levels_and_last_writer_wins() -> None:
    assert [fan_level(p) for p in (0, 19, 20, 99, 100, 30000, 10**9)] == [1, 1, 2, 2, 3, 8, 8]
    assert len(FAN_LEVELS) == 8
    assert intimacy({"watch": 10, "comments": 3, "gift_value": 525, "spend": 19_990}) == 10 + 6 + 52 + 199
    assert lww([3, 0], [2, 1]) == lww([2, 1], [3, 0]) == [3, 0]


async def _comment(c: Client, text: str) -> dict[str, Any]:
    await c.request("comment", text=text)
    while True:
        e = await c.next_event()
        if e["t"] == "comment" and e["d"]["text"] == text:
            return dict(e["d"])


async def test_members_earn_intimacy_wear_a_badge_and_rank_on_the_host_board(gateway_factory: Any, token: Any, redis: Any,
                                                                             http: Any) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http)
    try:
        await w.room("stage", "h1")
        f1, f2, f3 = token("f1"), token("f2"), token("f3")
        for tok in (f1, f2):
            await w.call("POST", "/api/v1/hosts/h1/follow", tok, status=202)
        joined = await w.call("POST", "/api/v1/hosts/h1/fanclub", f1, status=202)
        assert joined["member"] is True
        await w.call("POST", "/api/v1/hosts/h1/fanclub", f3, status=202)
        await w.call("DELETE", "/api/v1/hosts/h1/fanclub", f3, status=202)  # joined and left: the last change wins
        await w.call("POST", "/api/v1/hosts/h1/follow", token("h1", "host", ("stage",)), status=403)
        # watch time comes from the gateways' activity.watch events (every few minutes): appended here
        await w.log.append("activity", "f1", "activity.watch", {"user": "f1", "room": "stage", "session": "s", "minutes": 30},
                           event_id="watch:s:1")
        await w.call("POST", "/api/v1/wallets/f1/topup", token("ops1", "ops"), {"amount": 1000, "idempotency_key": "k1"})
        sid = await w.campaign("stage", stock=5, price=2500)
        assert await w.buy("f1", sid, 2)
        await w.settle()

        c1 = await Client.connect(w.node.ws, "stage", f1, fmt="json")
        c2 = await Client.connect(w.node.ws, "stage", f2, fmt="json")
        gift = await c1.request("gift", gift_id="cake", count=5)
        assert gift["t"] == "ack", gift
        d1 = await _comment(c1, "love this")
        d2 = await _comment(c2, "hi")
        assert d1["fan"] == {"host": "h1", "level": fan_level(30 + 5000 // 100)} and "fan" not in d2
        await w.settle()

        board = await w.call("GET", "/api/v1/hosts/h1/fans?n=5", f2)
        points = 30 + 2 * 1 + (5 * 99) // 10 + 5000 // 100
        assert (board["members"], board["followers"]) == (1, 3)  # joining follows; leaving the club does not unfollow
        assert board["top"] == [{"rank": 1, "user": "f1", "name": "f1", "intimacy": points, "level": fan_level(points)}]
        mine = await w.call("GET", "/api/v1/me/fanclubs", f1)
        assert mine["fanclubs"] == [{"host": "h1", "following": True, "member": True, "intimacy": points, "level": fan_level(points)}]
        f3_club = (await w.call("GET", "/api/v1/me/fanclubs", f3))["fanclubs"][0]
        assert (f3_club["member"], f3_club["following"], f3_club["level"]) == (False, True, None)
        prof = await w.call("GET", "/api/v1/users/f1/profile", token("ops1", "ops"))
        assert prof["fan_clubs"] == ["h1"] and prof["hosts_followed"] == ["h1"] and prof["intimacy"] == {"h1": points}
        await w.call("GET", "/api/v1/users/f1/profile", f2, status=403)
        await c1.close()
        await c2.close()
    finally:
        await w.close()
