"""Room moderation end to end (issue 20 item 1): two real gateway nodes on one Redis and one
SQLite file, real WebSocket clients, real HTTP.

What holds across nodes: a mute, kick or ban given through one node is enforced on the other
as soon as the room's ``moderation`` event reaches it (no Redis read per comment: the node's
copy); a kick or ban closes the viewer's connections there with 4403; a platform ban closes
them in every room; state survives a new gateway process; ``comment.deleted`` reaches live
viewers and ``since=`` recovery; slow mode, followers-only and fan-club-only chat; reports
with context and resolution; the audit log (ops only); the permission matrix.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import websockets

from livecommerce.keys import Keys
from livecommerce.log_open import open_log
from livecommerce.store_sql import SqlStore
from tests.fixtures_gateway import Node
from tests.test_catalog_gateway import Monitor
from tests.waiting import wait_until
from tests.wsclient import Client, next_of
from workers.profiles import ProfilesWorker
from workers.profiles import drain as profiles_drain


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@dataclass
class Stage:
    """Two nodes, a room ``r`` hosted by ``h1``, tokens, and a way to call HTTP."""

    a: Node
    b: Node
    http: aiohttp.ClientSession
    token: Any
    room: str
    host: str
    ops: str

    async def call(self, method: str, path: str, tok: str, body: Any = None, *, node: Node | None = None,
                   status: int | tuple[int, ...] = (200, 201)) -> Any:
        url = (node or self.a).url + "/api/v1" + path
        async with self.http.request(method, url, json=body, headers={"Authorization": f"Bearer {tok}"}) as r:
            data = await r.json()
            want = (status,) if isinstance(status, int) else status
            assert r.status in want, (method, path, r.status, data)
            return data

    def viewer(self, user: str) -> str:
        return str(self.token(user))

    async def join(self, node: Node, user: str, *, since: int | None = None, tok: str | None = None) -> Client:
        return await Client.connect(node.ws, self.room, tok or self.viewer(user), fmt="json", since=since)


async def stage(gateway_factory: Any, token: Any, http: aiohttp.ClientSession) -> Stage:
    a = await gateway_factory()
    b = await gateway_factory()
    room = f"r{uuid.uuid4().hex[:8]}"
    host = token("h1", "host", (room,))
    s = Stage(a, b, http, token, room, host, token("ops1", "ops"))
    await s.call("POST", "/rooms", host, {"id": room, "title": "Tea night"}, status=201)
    return s


async def comment(c: Client, text: str) -> dict[str, Any]:
    """The reply to a comment: ``ack`` (with its seq) or the error frame."""
    return await c.request("comment", text=text)


def code_of(frame: dict[str, Any]) -> str:
    return str(frame["d"]["code"]) if frame["t"] == "error" else str(frame["t"])


async def refused_at_welcome(node: Node, room: str, tok: str) -> tuple[dict[str, Any], int, str]:
    """Connect and expect the refusal: the error frame, the close code and reason."""
    async with websockets.connect(f"{node.ws}?room={room}&format=json&token={tok}") as ws:
        frame = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None
        return frame, info.value.rcvd.code, info.value.rcvd.reason


async def closed_with(c: Client) -> tuple[list[dict[str, Any]], int, str]:
    """Read until the server closes ``c``; the frames seen and the close code and reason."""
    seen: list[dict[str, Any]] = []
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            seen.append(await c.next_event(5, skip=()))
    assert info.value.rcvd is not None
    return seen, info.value.rcvd.code, info.value.rcvd.reason


# ------------------------------------------------------------------ across two nodes
async def test_a_mute_given_on_one_node_refuses_comments_on_the_other(gateway_factory: Any, token: Any,
                                                                      http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    v1 = await s.join(s.b, "v1")
    assert code_of(await comment(v1, "hello")) == "ack"
    done = await s.call("POST", f"/rooms/{s.room}/mutes", s.host, {"user": "v1", "seconds": 600, "reason": "spam"}, node=s.a)
    assert done["action"] == "mute" and done["until_ms"] > 0
    ev = await next_of(v1, "moderation")  # node B heard the change: from here on it refuses
    version = ev["d"].pop("v")
    assert ev["d"] == {"action": "mute", "user": "v1", "until_ms": done["until_ms"], "by_role": "host"} and version > 0
    r = await comment(v1, "hello again")
    assert r["t"] == "error" and r["d"]["code"] == "muted" and r["d"]["until_ms"] == done["until_ms"]
    # a muted viewer still likes (a mute is about chat)
    assert code_of(await v1.request("like", count=1)) == "ack"
    # a newcomer on node A is told at its welcome
    again = await s.join(s.a, "v1")
    assert again.welcome["d"]["moderation"] == {"role": "viewer", "slow_mode_s": 0, "chat": "all", "muted_until_ms": done["until_ms"]}
    await s.call("DELETE", f"/rooms/{s.room}/mutes/v1", s.host, node=s.b)
    await wait_until(lambda: comment(v1, "free"), until=lambda f: f["t"] == "ack", what="v1 unmuted on node B")
    for c in (v1, again):
        await c.close()


async def test_a_comment_of_a_viewer_not_muted_reads_nothing_from_redis(gateway_factory: Any, token: Any,
                                                                       http: aiohttp.ClientSession, redis_url: str) -> None:
    """The node decides from its copy: a moderated room (mutes, a ban, slow mode) costs a
    comment no moderation read; the only reads are the room's first welcome on each node
    (and, in a followers-only room, one per viewer per hold time). Counted twice: the
    adapters' calls, and the commands the Redis server ran on moderation keys (MONITOR)."""
    s = await stage(gateway_factory, token, http)
    await s.call("POST", f"/rooms/{s.room}/mutes", s.host, {"user": "m1"})
    await s.call("POST", f"/rooms/{s.room}/bans", s.host, {"user": "b1"})
    await s.call("PUT", f"/rooms/{s.room}/chat", s.host, {"slow_mode_s": 1})
    mod = s.b.services.moderation
    counted = CountingCalls(mod.store), CountingCalls(mod.fans)
    mod.store, mod.fans = counted
    viewers = [await s.join(s.b, f"v{i}") for i in range(3)]
    reads_at_join = counted[0].calls
    assert reads_at_join == ["load"]  # one read for the room on this node, at its first welcome
    async with Monitor(redis_url, s.a.settings.key_prefix) as mon:
        for i, c in enumerate(viewers):
            assert code_of(await comment(c, f"hi {i}")) == "ack"
        await mon.mark()
    assert counted[0].calls == reads_at_join and counted[1].calls == []  # no read per comment
    assert [cmd for cmd in mon.seen if ":mod" in cmd or ":followers" in cmd] == []
    assert any(f"{{room:{s.room}}}:hist" in cmd for cmd in mon.seen)  # (the comments themselves were seen)
    # followers-only: one relation read per viewer, then the node holds it
    await s.call("PUT", f"/rooms/{s.room}/chat", s.host, {"slow_mode_s": 0, "mode": "followers"})
    await next_of(viewers[0], "moderation")
    for _ in range(3):
        assert code_of(await comment(viewers[0], "me again")) == "followers_only"
    assert counted[1].calls == ["relation"]
    for c in viewers:
        await c.close()


class CountingCalls:
    """Wraps an adapter and records the name of every method called (its Redis round trips)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def counted(*a: Any, **kw: Any) -> Any:
            self.calls.append(name)
            return await attr(*a, **kw)

        return counted


async def test_a_kick_closes_the_viewer_on_the_other_node_and_refuses_them_for_a_while(
        gateway_factory: Any, token: Any, http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    v1 = await s.join(s.b, "v1")
    watcher = await s.join(s.b, "w1")
    done = await s.call("POST", f"/rooms/{s.room}/kicks", s.host, {"user": "v1", "seconds": 60}, node=s.a)
    seen, code, reason = await closed_with(v1)
    assert (code, reason) == (4403, "kicked")
    assert seen[-1]["t"] == "error" and seen[-1]["d"]["code"] == "kicked" and seen[-1]["d"]["until_ms"] == done["until_ms"]
    assert (await next_of(watcher, "moderation"))["d"]["action"] == "kick"  # the room sees it; the watcher stays
    for node in (s.a, s.b):  # reconnect refused on either node
        frame, code, reason = await refused_at_welcome(node, s.room, s.viewer("v1"))
        assert (frame["d"]["code"], frame["d"]["until_ms"], code, reason) == ("kicked", done["until_ms"], 4403, "kicked")
    other = await Client.connect(s.a.ws, f"{s.room}-2", s.viewer("v1"), fmt="json")  # a kick is one room's
    await s.call("DELETE", f"/rooms/{s.room}/bans/v1", s.host)  # unban lifts the kick
    back = await s.join(s.b, "v1")
    assert code_of(await comment(back, "sorry")) == "ack"
    for c in (watcher, other, back):
        await c.close()


async def test_a_ban_survives_a_gateway_restart(gateway_factory: Any, token: Any, http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    v1 = await s.join(s.a, "v1")
    await s.call("POST", f"/rooms/{s.room}/bans", s.host, {"user": "v1", "reason": "scam links"})
    _, code, reason = await closed_with(v1)
    assert (code, reason) == (4403, "banned")
    fresh = await gateway_factory()  # a new process: nothing in memory, the state comes from Redis
    frame, code, _ = await refused_at_welcome(fresh, s.room, s.viewer("v1"))
    assert frame["d"] == {"code": "banned", "message": "banned from this room for good", "until_ms": None} and code == 4403
    state = await s.call("GET", f"/rooms/{s.room}/moderation", s.host, node=fresh)
    assert state["bans"] == [{"user": "v1", "until_ms": None}]


async def test_a_platform_ban_closes_every_room_on_every_node(gateway_factory: Any, token: Any, http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    in_a = await Client.connect(s.a.ws, "elsewhere", s.viewer("v1"), fmt="json")
    in_b = await s.join(s.b, "v1")
    await s.call("POST", "/platform/bans", s.host, {"user": "v1"}, status=403)  # ops only
    done = await s.call("POST", "/platform/bans", s.ops, {"user": "v1", "seconds": 3600, "reason": "fraud"}, status=201)
    for c in (in_a, in_b):
        _, code, reason = await closed_with(c)
        assert (code, reason) == (4403, "banned")
    late = await gateway_factory()  # a node started after the ban reads it at start-up
    await wait_until(lambda: late.services.moderation.platform_loaded, what="the platform's bans read")
    frame, code, _ = await refused_at_welcome(late, "anywhere", s.viewer("v1"))
    assert frame["d"]["until_ms"] == done["until_ms"] and code == 4403
    assert (await s.call("GET", "/platform/bans", s.ops))["bans"] == [{"user": "v1", "until_ms": done["until_ms"]}]
    await s.call("DELETE", "/platform/bans/v1", s.ops, node=s.b)
    await wait_until(lambda: "v1" not in late.services.moderation.platform, what="the unban on the third node")
    back = await Client.connect(late.ws, "anywhere", s.viewer("v1"), fmt="json")
    await back.close()
    own = await s.join(s.b, "h1", tok=s.host)  # a host in its own room: no room ban reaches it, a platform ban does
    await s.call("POST", "/platform/bans", s.ops, {"user": "h1", "seconds": 60}, status=201)
    _, code, reason = await closed_with(own)
    assert (code, reason) == (4403, "banned")


# ------------------------------------------------------------------ deleted comments
async def test_a_deleted_comment_is_retracted_live_and_on_recovery(gateway_factory: Any, token: Any,
                                                                 http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    writer = await s.join(s.a, "v1")
    reader = await s.join(s.b, "v2")
    since = (await comment(writer, "first"))["d"]["seq"]  # what the reader had seen when it dropped
    seq = (await comment(writer, "buy followers at spam.example"))["d"]["seq"]
    assert [(await next_of(reader, "comment"))["seq"] for _ in range(2)] == [since, seq]
    await reader.close()  # offline while the comment goes
    mod = token("m1")
    await s.call("PUT", f"/rooms/{s.room}/moderators/m1", s.host)
    done = await s.call("DELETE", f"/rooms/{s.room}/comments/{seq}?reason=spam", mod, node=s.b)
    assert (done["deleted_seq"], done["user"]) == (seq, "v1")
    live = await next_of(writer, "comment.deleted")
    assert live["d"] == {"seq": seq, "user": "v1", "by_role": "moderator"}
    back = await s.join(s.b, "v2", since=since)  # recovery replays the comment and its retraction
    assert back.welcome["d"]["recovered"] is True
    got = [await next_of(back, t) for t in ("comment", "comment.deleted")]
    assert got[0]["seq"] == seq and got[1]["d"]["seq"] == seq and got[1]["seq"] > seq
    # what may not be deleted
    host_seq = (await comment(await s.join(s.a, "h1", tok=s.host), "welcome all"))["d"]["seq"]
    await s.call("DELETE", f"/rooms/{s.room}/comments/{host_seq}", mod, status=403)  # the host's
    await s.call("DELETE", f"/rooms/{s.room}/comments/{seq}", s.viewer("v3"), status=403)  # a viewer
    await s.call("DELETE", f"/rooms/{s.room}/comments/{seq + 10_000}", s.host, status=404)  # no such comment
    for c in (writer, back):
        await c.close()


# ----------------------------------------------------------------- chat settings
async def test_slow_mode_lets_one_comment_per_window_and_spares_the_staff(gateway_factory: Any, token: Any,
                                                                          http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    v1 = await s.join(s.b, "v1")
    await s.call("PUT", f"/rooms/{s.room}/moderators/m1", s.host)
    m1 = await s.join(s.b, "m1")
    assert m1.welcome["d"]["moderation"]["role"] == "moderator"
    set_ = await s.call("PUT", f"/rooms/{s.room}/chat", s.host, {"slow_mode_s": 30}, node=s.a)
    assert (set_["slow_mode_s"], set_["mode"]) == (30, "all")
    await next_of(v1, "moderation")
    assert code_of(await comment(v1, "one")) == "ack"
    r = await comment(v1, "two")
    assert r["d"]["code"] == "slow_mode" and 29 <= r["d"]["retry_after_s"] <= 30
    assert [code_of(await comment(m1, f"staff {i}")) for i in range(3)] == ["ack"] * 3
    assert (await s.join(s.a, "v9")).welcome["d"]["moderation"] == {"role": "viewer", "slow_mode_s": 30, "chat": "all"}
    await s.call("PUT", f"/rooms/{s.room}/chat", s.viewer("v1"), {"slow_mode_s": 0}, status=403)
    await s.call("PUT", f"/rooms/{s.room}/chat", s.host, {"slow_mode_s": 301}, status=400)
    await s.call("PUT", f"/rooms/{s.room}/chat", token("m1"), {"slow_mode_s": 0})  # a moderator turns it off
    await wait_until(lambda: comment(v1, "three"), until=lambda f: f["t"] == "ack", what="slow mode off on node B")
    for c in (v1, m1):
        await c.close()


async def test_followers_only_and_fan_club_only_chat(gateway_factory: Any, token: Any, http: aiohttp.ClientSession,
                                                    redis: Any) -> None:
    s = await stage(gateway_factory, token, http)
    settings = s.a.settings
    durable = open_log(settings, redis)
    store = SqlStore(settings.database_url)
    worker = ProfilesWorker(store, redis, Keys(settings.key_prefix), secret=settings.secret)
    try:
        fan, stranger = await s.join(s.b, "f1"), await s.join(s.b, "x1")
        await s.call("PUT", f"/rooms/{s.room}/chat", s.host, {"mode": "followers"})
        await next_of(fan, "moderation")
        assert code_of(await comment(fan, "hi")) == "followers_only"
        await s.call("POST", "/hosts/h1/follow", s.viewer("f1"), status=202)
        await profiles_drain(durable, worker, fetch_timeout_ms=50)  # the follow reaches the fan cache
        await wait_until(lambda: comment(fan, "hi"), until=lambda f: f["t"] == "ack", timeout=15, interval=0.5,
                         what="the follower's comment (a refusal is held a few seconds)")
        assert code_of(await comment(stranger, "hi")) == "followers_only"
        await s.call("PUT", f"/rooms/{s.room}/chat", s.host, {"mode": "fanclub"})
        await next_of(fan, "moderation")
        assert code_of(await comment(fan, "still me")) == "fanclub_only"
        await s.call("POST", "/hosts/h1/fanclub", s.viewer("f1"), status=202)
        await profiles_drain(durable, worker, fetch_timeout_ms=50)
        await wait_until(lambda: comment(fan, "member now"), until=lambda f: f["t"] == "ack", timeout=15, interval=0.5,
                         what="the member's comment")
        host = await s.join(s.b, "h1", tok=s.host)
        assert code_of(await comment(host, "the host always speaks")) == "ack"
        for c in (fan, stranger, host):
            await c.close()
    finally:
        await durable.close()
        await store.close()


# ------------------------------------------------------------------------ reports
async def test_reports_queue_with_context_and_are_resolved_with_an_action(gateway_factory: Any, token: Any,
                                                                         http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    talkers = [await s.join(s.a, f"v{i}") for i in range(3)]
    seqs = []
    for i in range(8):
        seqs.append((await comment(talkers[i % 3], f"c{i}"))["d"]["seq"])
    bad = seqs[4]  # c4, by v1
    rep = await s.call("POST", f"/rooms/{s.room}/reports", s.viewer("r1"), {"seq": bad, "reason": "spam", "note": "links"},
                       node=s.b, status=201)
    assert (rep["target"], rep["seq"], rep["status"]) == ("v1", bad, "open")
    assert [c["text"] for c in rep["context"]] == ["c1", "c2", "c3", "c4", "c5", "c6", "c7"]
    assert [c["reported"] for c in rep["context"]] == [False, False, False, True, False, False, False]
    again = await s.call("POST", f"/rooms/{s.room}/reports", s.viewer("r1"), {"seq": bad, "reason": "abuse"}, status=200)
    assert again["id"] == rep["id"]  # one report per reporter and comment
    second = await s.call("POST", f"/rooms/{s.room}/reports", s.viewer("r2"), {"seq": bad, "reason": "spam"}, status=201)
    of_user = await s.call("POST", f"/rooms/{s.room}/reports", s.viewer("r2"), {"user": "v2", "reason": "harassment"}, status=201)
    assert [c["text"] for c in of_user["context"]] == ["c2", "c5"]
    await s.call("POST", f"/rooms/{s.room}/reports", s.viewer("v1"), {"seq": bad, "reason": "spam"}, status=400)  # oneself
    await s.call("POST", f"/rooms/{s.room}/reports", s.viewer("r1"), {"seq": bad + 999, "reason": "spam"}, status=404)
    await s.call("POST", f"/rooms/{s.room}/reports", s.viewer("r1"), {"seq": bad, "reason": "meh"}, status=400)
    # the queue: staff only, oldest first
    await s.call("GET", f"/rooms/{s.room}/reports", s.viewer("r1"), status=403)
    await s.call("PUT", f"/rooms/{s.room}/moderators/m1", s.host)
    queue = await s.call("GET", f"/rooms/{s.room}/reports", token("m1"), node=s.b)
    assert [r["id"] for r in queue["reports"]] == [rep["id"], second["id"], of_user["id"]]
    # resolved with a mute: both reports of the comment close, the user report stays open
    out = await s.call("POST", f"/reports/{rep['id']}/resolve", token("m1"), {"action": "mute", "seconds": 300, "reason": "spam"})
    assert sorted(out["closed"]) == sorted([rep["id"], second["id"]])
    assert out["report"]["status"] == "resolved" and out["report"]["resolution"]["action"] == "mute"
    await s.call("POST", f"/reports/{rep['id']}/resolve", token("m1"), {"action": "dismiss"}, status=409)
    await wait_until(lambda: comment(talkers[1], "muted?"), until=lambda f: code_of(f) == "muted", what="v1 muted")
    left = await s.call("GET", f"/rooms/{s.room}/reports", s.host)
    assert [r["id"] for r in left["reports"]] == [of_user["id"]]
    dismissed = await s.call("POST", f"/reports/{of_user['id']}/resolve", s.host, {"action": "dismiss", "reason": "banter"})
    assert dismissed["report"]["status"] == "dismissed"
    closed = await s.call("GET", f"/rooms/{s.room}/reports?status=all", s.host)
    assert {r["status"] for r in closed["reports"]} == {"resolved", "dismissed"}
    audit = await s.call("GET", f"/moderation/audit?room={s.room}", s.ops)
    assert [(e["action"], e["target"], e["report_id"]) for e in audit["entries"][:2]] == [
        ("report.dismiss", "v2", of_user["id"]), ("mute", "v1", rep["id"])]
    for c in talkers:
        await c.close()


async def test_staff_hear_of_a_new_report(gateway_factory: Any, token: Any, http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    console = await s.join(s.b, "h1", tok=s.host)
    v1 = await s.join(s.a, "v1")
    # the push goes to the staff's nodes: wait until presence (written in short windows) has h1
    await wait_until(lambda: s.a.gw.presence.user_nodes(["h1"]), until=lambda got: bool(got.get("h1")), what="h1 in presence")
    seq = (await comment(v1, "rude"))["d"]["seq"]
    rep = await s.call("POST", f"/rooms/{s.room}/reports", s.viewer("r1"), {"seq": seq, "reason": "abuse"}, status=201)
    pushed = await next_of(console, "report.filed")
    assert pushed["d"] == {"id": rep["id"], "target": "v1", "seq": seq, "reason": "abuse"}
    for c in (console, v1):
        await c.close()


# ---------------------------------------------------------- permissions and the audit log
async def test_the_permission_matrix(gateway_factory: Any, token: Any, http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    r, v, m1, m2 = s.room, s.viewer("v1"), token("m1"), token("m2")
    other_host = token("h2", "host", ("elsewhere",))
    for path, body in ((f"/rooms/{r}/mutes", {"user": "v2"}), (f"/rooms/{r}/kicks", {"user": "v2"}), (f"/rooms/{r}/bans", {"user": "v2"})):
        await s.call("POST", path, v, body, status=403)  # a viewer moderates nothing
        await s.call("POST", path, other_host, body, status=403)  # nor another room's host
    await s.call("PUT", f"/rooms/{r}/moderators/m1", m1, status=403)  # nobody appoints themself
    await s.call("PUT", f"/rooms/{r}/moderators/m1", s.host)
    await s.call("PUT", f"/rooms/{r}/moderators/m2", s.ops)
    await s.call("PUT", f"/rooms/{r}/moderators/v9", m1, status=403)  # moderators do not appoint
    await s.call("POST", f"/rooms/{r}/bans", m1, {"user": "h1"}, status=403)  # the host
    await s.call("POST", f"/rooms/{r}/mutes", m1, {"user": "m2"}, status=403)  # another moderator
    await s.call("POST", f"/rooms/{r}/kicks", m2, {"user": "m1"}, status=403)  # either way
    await s.call("POST", f"/rooms/{r}/mutes", m1, {"user": "v2", "seconds": 2 * 86400}, status=403)  # over a moderator's 24 h
    await s.call("POST", f"/rooms/{r}/bans", m1, {"user": "v2", "permanent": True}, status=403)  # for good: the host's call
    await s.call("POST", f"/rooms/{r}/mutes", m1, {"user": "v2", "seconds": 60}, status=201)
    await s.call("POST", f"/rooms/{r}/mutes", s.host, {"user": "m2"}, status=201)  # the host outranks a moderator
    await s.call("POST", f"/rooms/{r}/bans", s.host, {"user": "ops1"}, status=201)  # an ops id is not known as ops...
    ops_in = await s.join(s.b, "ops1", tok=s.ops)  # ... and an ops token is never refused
    assert code_of(await comment(ops_in, "ops here")) == "ack"
    await ops_in.close()
    await s.call("POST", "/platform/bans", m1, {"user": "v2"}, status=403)
    await s.call("POST", "/platform/bans", s.host, {"user": "v2"}, status=403)
    await s.call("POST", "/platform/bans", s.ops, {"user": "ops1"}, status=400)  # oneself
    await s.call("POST", f"/rooms/{r}/mutes", s.host, {"user": "v2", "seconds": 0}, status=400)
    await s.call("POST", f"/rooms/{r}/mutes", s.host, {"user": "../x"}, status=400)
    await s.call("POST", f"/rooms/{r}/mutes", s.host, {"user": "v2", "surprise": 1}, status=400)
    await s.call("DELETE", f"/rooms/{r}/moderators/m2", m1, status=403)
    await s.call("DELETE", f"/rooms/{r}/moderators/m2", s.host)
    state = await s.call("GET", f"/rooms/{r}/moderation", m1)
    assert state["moderators"] == ["m1"] and [m["user"] for m in state["mutes"]] == ["m2", "v2"]
    await s.call("GET", f"/rooms/{r}/moderation", v, status=403)


async def test_every_action_is_in_the_audit_log_which_only_ops_read(gateway_factory: Any, token: Any,
                                                                    http: aiohttp.ClientSession) -> None:
    s = await stage(gateway_factory, token, http)
    r = s.room
    v1 = await s.join(s.a, "v1")
    seq = (await comment(v1, "x"))["d"]["seq"]
    steps: list[tuple[str, str, Any]] = [
        ("PUT", f"/rooms/{r}/moderators/m1", None), ("POST", f"/rooms/{r}/mutes", {"user": "v2", "reason": "caps"}),
        ("DELETE", f"/rooms/{r}/mutes/v2?reason=ok", None), ("POST", f"/rooms/{r}/kicks", {"user": "v3"}),
        ("POST", f"/rooms/{r}/bans", {"user": "v4", "seconds": 60}), ("DELETE", f"/rooms/{r}/bans/v4", None),
        ("PUT", f"/rooms/{r}/chat", {"slow_mode_s": 5, "mode": "fanclub"}), ("DELETE", f"/rooms/{r}/comments/{seq}", None),
        ("DELETE", f"/rooms/{r}/moderators/m1", None),
    ]
    for method, path, body in steps:
        await s.call(method, path, s.host, body)
    await s.call("POST", "/platform/bans", s.ops, {"user": "v5", "reason": "fraud"})
    await s.call("DELETE", "/platform/bans/v5", s.ops)
    got = (await s.call("GET", "/moderation/audit", s.ops, node=s.b))["entries"]
    mine = [e for e in got if e["room"] in (r, "")]
    assert [e["action"] for e in reversed(mine)] == [
        "moderator.add", "mute", "unmute", "kick", "ban", "unban", "chat", "comment.delete", "moderator.remove",
        "platform.ban", "platform.unban"]
    by = {e["action"]: e for e in mine}
    assert by["mute"]["reason"] == "caps" and by["mute"]["actor"] == "h1" and by["mute"]["actor_role"] == "host"
    assert by["mute"]["until_ms"] > by["mute"]["ts_ms"] and not by["mute"]["for_good"]
    assert by["unmute"]["reason"] == "ok" and by["comment.delete"]["seq"] == seq and by["comment.delete"]["target"] == "v1"
    assert by["comment.delete"]["details"] == {"text": "x"}
    assert by["platform.ban"]["for_good"] and by["platform.ban"]["room"] == "" and by["platform.ban"]["actor_role"] == "ops"
    assert by["chat"]["details"] == {"slow_mode_s": 5, "mode": "fanclub"}
    page1 = (await s.call("GET", f"/moderation/audit?room={r}&limit=3", s.ops))["entries"]
    page2 = (await s.call("GET", f"/moderation/audit?room={r}&limit=3&offset=3", s.ops))["entries"]
    assert [e["id"] for e in page1 + page2] == [e["id"] for e in mine if e["room"] == r][:6]
    only = (await s.call("GET", f"/moderation/audit?action=kick&room={r}", s.ops))["entries"]
    assert [e["target"] for e in only] == ["v3"]
    await s.call("GET", "/moderation/audit", s.host, status=403)
    await s.call("GET", "/moderation/audit", s.viewer("v1"), status=403)
    await s.call("GET", "/moderation/audit?action=dance", s.ops, status=400)
    await v1.close()


async def test_what_a_node_did_not_hear_is_read_again_after_a_resubscribe(gateway_factory: Any, token: Any,
                                                                         http: aiohttp.ClientSession) -> None:
    """A change written without its event (a process killed between the two, or messages
    lost while the broker reconnected) reaches the node when the broker resubscribes: the
    room's moderation and the platform's bans are read again."""
    from livecommerce.moderation import FOREVER, Change
    from livecommerce.moderation_redis import PLATFORM_INBOX

    s = await stage(gateway_factory, token, http)
    v1 = await s.join(s.b, "v1")
    mod = s.b.services.moderation
    await mod.store.apply(s.room, Change("mute", user="v1", until_ms=4_000_000_000_000), now_ms=0)
    await mod.store.platform_ban("v9", FOREVER, now_ms=0)
    assert code_of(await comment(v1, "not heard yet")) == "ack"  # the node decides from its copy
    assert "v9" not in mod.platform
    keys = s.b.gw.keys
    mod.on_resubscribed({keys.room_channel(s.room), keys.node_inbox(PLATFORM_INBOX)})
    await wait_until(lambda: comment(v1, "now?"), until=lambda f: code_of(f) == "muted", what="the mute read again")
    await wait_until(lambda: "v9" in mod.platform, what="the platform's bans read again")
    await v1.close()


async def test_concurrent_changes_on_both_nodes_converge_on_what_redis_holds(gateway_factory: Any, token: Any,
                                                                             http: aiohttp.ClientSession) -> None:
    """Mutes, unmutes and bans given at once through both nodes (each applies its own change
    before the event comes back): once the events are in, both nodes' copies equal the state
    a fresh read gives."""
    import asyncio

    from livecommerce.moderation import RoomRules

    s = await stage(gateway_factory, token, http)
    # viewers so both nodes serve the room; they read nothing (an unbounded queue: closing
    # them must not wait behind the events they never read)
    watchers = [await Client.connect(n.ws, s.room, s.viewer(u), fmt="json", max_queue=None) for n, u in ((s.a, "w1"), (s.b, "w2"))]

    async def churn(i: int) -> None:
        node = s.a if i % 2 else s.b
        user = f"u{i % 6}"
        await s.call("POST", f"/rooms/{s.room}/mutes", s.host, {"user": user, "seconds": 600}, node=node)
        if i % 3 == 0:
            await s.call("DELETE", f"/rooms/{s.room}/mutes/{user}", s.host, node=s.b if i % 2 else s.a)
        if i % 5 == 0:
            await s.call("POST", f"/rooms/{s.room}/bans", s.host, {"user": f"b{i}"}, node=node)

    await asyncio.gather(*(churn(i) for i in range(24)))
    truth = RoomRules.from_fields(await s.a.services.moderation.store.load(s.room), 0)

    def copies() -> list[Any]:
        now = s.a.gw.now_ms()
        return [n.services.moderation.rooms[s.room].rules.view(now) for n in (s.a, s.b)]

    await wait_until(copies, until=lambda got: got == [truth.view(s.a.gw.now_ms())] * 2, what="both nodes' copies = Redis")
    for c in watchers:
        await c.close()
