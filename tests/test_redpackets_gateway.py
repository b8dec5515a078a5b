"""Red packets through real gateways (two nodes), real WebSocket clients, Redis and SQL:
drop over HTTP, ``redpacket.dropped`` to viewers on both nodes and in a late joiner's
welcome, grabs racing over WebSockets (each answered once, privately), password and
followers-only packets, the keeper's ``redpacket.ended``, the public record that verifies,
and the SQL ledger equal to every balance. Bad input is a 4xx or an error frame with a code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from livecommerce.fanclub_redis import FanclubRedis
from livecommerce.log_open import open_log
from livecommerce.redpackets import verify_record
from livecommerce.redpackets_redis import RedisRedPackets
from livecommerce.store_sql import SqlStore
from livecommerce.wallet_redis import RedisWallet
from tests.wsclient import Client, next_of
from workers.redpackets import RedPacketKeeper
from workers.wallet import drain


async def _call(s: aiohttp.ClientSession, method: str, url: str, tok: str | None, **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    async with s.request(method, url, headers=headers, **kw) as r:
        return r.status, await r.json()


async def _show(s: aiohttp.ClientSession, url: str, token: Callable[..., str], room: str, host: str) -> None:
    st, body = await _call(s, "POST", f"{url}/api/v1/rooms", token(host, "host", rooms=(room,)), json={"id": room})
    assert st == 201, body
    st, body = await _call(s, "POST", f"{url}/api/v1/rooms/{room}/live", token(host, "host", rooms=(room,)))
    assert st == 200, body


async def _fund(s: aiohttp.ClientSession, url: str, token: Callable[..., str], user: str, amount: int) -> None:
    st, body = await _call(s, "POST", f"{url}/api/v1/wallets/{user}/topup", token("ops", "ops"),
                           json={"amount": amount, "idempotency_key": f"fund-{user}"})
    assert st == 201, body


async def _grab_twice(v: Client, pid: str) -> list[dict[str, Any]]:
    """Send two grabs at once on one connection; their two replies (by command id), and
    the private ``redpacket.grabbed`` pushed to a winner."""
    ids = [await v.send("redpacket.grab", packet_id=pid), await v.send("redpacket.grab", packet_id=pid)]
    got: dict[Any, dict[str, Any]] = {}
    while len(got) < 2:
        e = await v.next_event(5, skip=("online", "likes"))
        if e.get("id") in ids:
            got[e["id"]] = e
    return [got[i] for i in ids]


async def test_a_packet_dropped_on_one_node_is_grabbed_over_websockets_on_another_and_ends_once(
    gateway_factory: Any, token: Callable[..., str], store: SqlStore, redis: Any
) -> None:
    a = await gateway_factory(database_url=store.url, command_rate=1000.0, command_burst=1000)
    b = await gateway_factory(database_url=store.url, command_rate=1000.0, command_burst=1000)
    room = "rp-show"
    async with aiohttp.ClientSession() as s:
        await _show(s, a.url, token, room, "hana")
        await _fund(s, a.url, token, "hana", 1000)
        viewers = [await Client.connect(b.ws if i % 2 else a.ws, room, token(f"fan{i}"), fmt="json") for i in range(12)]
        body = {"amount": 300, "count": 5, "request_id": "show-1", "greeting": "恭喜发财"}
        st, p = await _call(s, "POST", f"{a.url}/api/v1/rooms/{room}/redpackets", token("hana", "host", rooms=(room,)), json=body)
        assert st == 201 and p["balance"] == 700 and p["count"] == 5 and len(p["seed_hash"]) == 64 and "seed" not in p, p
        # a retry of the same request answers the same packet and debits nothing
        st, again = await _call(s, "POST", f"{a.url}/api/v1/rooms/{room}/redpackets", token("hana", "host", rooms=(room,)), json=body)
        assert (st, again["id"], again["duplicate"]) == (200, p["id"], True)
        # a gateway killed between the drop script and the room's index: the retry lists it again
        packets = RedisRedPackets(redis, a.gw.keys)
        await packets.unindex_room(room, p["id"])
        assert (await _call(s, "GET", f"{a.url}/api/v1/rooms/{room}/redpackets", None))[1]["redpackets"] == []
        st, again = await _call(s, "POST", f"{a.url}/api/v1/rooms/{room}/redpackets", token("hana", "host", rooms=(room,)), json=body)
        assert (st, again["duplicate"], again["state"]) == (200, True, "open")
        st, listed = await _call(s, "GET", f"{a.url}/api/v1/rooms/{room}/redpackets", None)
        assert [x["id"] for x in listed["redpackets"]] == [p["id"]]
        st, w = await _call(s, "GET", f"{a.url}/api/v1/wallets/hana", token("hana"))
        assert w["balance"] == 700  # debited once
        for v in viewers:  # on both nodes
            ev = await next_of(v, "redpacket.dropped")
            assert ev["d"]["id"] == p["id"] and ev["d"]["greeting"] == "恭喜发财"
        late = await Client.connect(b.ws, room, token("late"), fmt="json")
        assert [x["id"] for x in late.welcome["d"]["redpackets"]] == [p["id"]]
        # 12 viewers race for 5 shares, each sending twice
        answers = await asyncio.gather(*(_grab_twice(v, p["id"]) for v in viewers))
        replies = [r for pair in answers for r in pair]
        for pair in answers:  # the winner's second grab answers its first share
            first = [r for r in pair if r["t"] == "redpacket.grabbed"]
            assert len(first) != 2 or (first[0]["d"]["amount"] == first[1]["d"]["amount"]
                                       and [r["d"]["duplicate"] for r in first] == [False, True]), pair
        won = [r for r in replies if r["t"] == "redpacket.grabbed" and not r["d"]["duplicate"]]
        refused = [r for r in replies if r["t"] == "error"]
        assert len(won) == 5 and sum(r["d"]["amount"] for r in won) == 300 and all(r["d"]["amount"] > 0 for r in won)
        assert {r["d"]["code"] for r in refused} == {"empty"}
        assert sorted(r["d"]["index"] for r in won) == list(range(5))
        for r in won:
            assert r["d"]["balance"] == r["d"]["amount"]  # credited before the answer
        # the record before the end: grabs so far, no seed
        st, rec = await _call(s, "GET", f"{b.url}/api/v1/redpackets/{p['id']}", None)
        assert st == 200 and rec["state"] == "open" and rec["grabbed"] == 5 and "seed" not in rec
        # the keeper ends it (every share taken): one redpacket.ended to the room, off the welcome
        durable = open_log(a.settings, redis)
        keeper = RedPacketKeeper(RedisRedPackets(redis, a.gw.keys), RedisWallet(redis, a.gw.keys), durable, a.gw.broker,
                                 worker="k1")
        outs = await keeper.drain()
        assert [(o.action, o.refunded) for o in outs] == [("ended", 0)]
        ended = await next_of(late, "redpacket.ended")
        assert ended["d"]["grabbed_amount"] == 300 and ended["d"]["best"]["amount"] == max(r["d"]["amount"] for r in won)
        st, rec = await _call(s, "GET", f"{a.url}/api/v1/redpackets/{p['id']}", None)
        assert st == 200 and rec["state"] == "announced" and verify_record(rec).ok, rec
        later = await Client.connect(a.ws, room, token("later"), fmt="json")
        assert later.welcome["d"]["redpackets"] == []
        for c in [*viewers, late, later]:
            await c.close()
        # SQL: every balance equals its ledger, the coins are conserved
        await a.services.wallet_outbox.flush()
        await drain(durable, store, fetch_timeout_ms=100)
        winners = {r["d"]["packet_id"] + str(r["d"]["index"]): r for r in won}
        assert len(winners) == 5
        assert await store.wallet_balance("hana") == 700
        total = 0
        for i in range(12):
            st, w = await _call(s, "GET", f"{a.url}/api/v1/wallets/fan{i}", token(f"fan{i}"))
            assert await store.wallet_balance(f"fan{i}") == w["balance"]
            total += w["balance"]
        assert total == 300
        await durable.close()


async def test_password_and_followers_only_packets(gateway_factory: Any, token: Callable[..., str], store: SqlStore,
                                                   redis: Any) -> None:
    node = await gateway_factory(database_url=store.url, command_rate=1000.0, command_burst=1000)
    room = "rp-pw"
    host_tok = token("kai", "host", rooms=(room,))
    async with aiohttp.ClientSession() as s:
        await _show(s, node.url, token, room, "kai")
        await _fund(s, node.url, token, "kai", 100)
        st, pw = await _call(s, "POST", f"{node.url}/api/v1/rooms/{room}/redpackets", host_tok,
                             json={"amount": 20, "count": 2, "request_id": "pw", "password": "Lucky Cat"})
        assert st == 201 and pw["password"] == "Lucky Cat"
        v1 = await Client.connect(node.ws, room, token("v1"), fmt="json")
        err = await v1.request("redpacket.grab", packet_id=pw["id"])
        assert (err["t"], err["d"]["code"]) == ("error", "password_required")
        await v1.send("comment", text="meow, lucky cat!")  # the comment grabs
        got = await next_of(v1, "redpacket.grabbed")
        assert got["d"]["packet_id"] == pw["id"] and got["d"]["amount"] > 0
        ok = await v1.request("redpacket.grab", packet_id=pw["id"], password="lucky cat")
        assert ok["d"]["duplicate"] is True and ok["d"]["amount"] == got["d"]["amount"]
        st, r = await _call(s, "POST", f"{node.url}/api/v1/redpackets/{pw['id']}/grab", token("v2"), json={"password": "LUCKY CAT"})
        assert st == 201 and r["amount"] == 20 - got["d"]["amount"]
        # followers only: the host's followers (the fan-club cache) may grab
        st, fo = await _call(s, "POST", f"{node.url}/api/v1/rooms/{room}/redpackets", host_tok,
                             json={"amount": 30, "count": 3, "request_id": "fo", "followers_only": True})
        assert st == 201
        st, r = await _call(s, "POST", f"{node.url}/api/v1/redpackets/{fo['id']}/grab", token("stranger"))
        assert (st, r["error"]["code"]) == (409, "followers_only")
        await FanclubRedis(redis, node.gw.keys).put([{"host_id": "kai", "user_id": "loyal", "following": True, "member": False,
                                                      "intimacy": 0}])
        st, r = await _call(s, "POST", f"{node.url}/api/v1/redpackets/{fo['id']}/grab", token("loyal"))
        assert st == 201 and r["amount"] > 0
        st, r = await _call(s, "POST", f"{node.url}/api/v1/redpackets/{fo['id']}/grab", host_tok)
        assert (st, r["error"]["code"]) == (409, "own_packet")
        st, listed = await _call(s, "GET", f"{node.url}/api/v1/rooms/{room}/redpackets", None)
        assert st == 200 and {x["id"] for x in listed["redpackets"]} == {pw["id"], fo["id"]}
        await v1.close()


async def test_bad_input_is_a_4xx_or_an_error_frame_with_a_reason(gateway_factory: Any, token: Callable[..., str],
                                                                  store: SqlStore) -> None:
    node = await gateway_factory(database_url=store.url)
    room = "rp-bad"
    tok = token("poor")
    url = f"{node.url}/api/v1/rooms/{room}/redpackets"
    async with aiohttp.ClientSession() as s:
        await _show(s, node.url, token, room, "host1")
        assert (await _call(s, "POST", url, None, json={"amount": 5, "count": 1, "request_id": "x"}))[0] == 401
        for body in ({"amount": 5, "count": 10, "request_id": "x"}, {"amount": 5, "count": 1}, {"amount": "5", "count": 1, "request_id": "x"},
                     {"amount": 5, "count": 1, "request_id": "x", "duration_s": 2}, [1, 2]):
            st, r = await _call(s, "POST", url, tok, json=body)
            assert st == 400 and r["error"]["code"] == "invalid" and r["error"]["message"], (body, r)
        st, r = await _call(s, "POST", url, tok, json={"amount": 5, "count": 1, "request_id": "x"})
        assert (st, r["error"]["code"]) == (409, "insufficient_funds") and "0 coins" in r["error"]["message"]
        st, r = await _call(s, "POST", f"{node.url}/api/v1/rooms/nosuchroom/redpackets", tok,
                            json={"amount": 5, "count": 1, "request_id": "x"})
        assert (st, r["error"]["code"]) == (404, "not_found")
        for pid in ("1-nothere", "zz", "99-abc"):
            st, r = await _call(s, "POST", f"{node.url}/api/v1/redpackets/{pid}/grab", tok)
            assert st in (400, 404) and r["error"]["code"] in ("invalid", "not_found"), (pid, r)
            st, r = await _call(s, "GET", f"{node.url}/api/v1/redpackets/{pid}", None)
            assert st in (400, 404), (pid, r)
        st, r = await _call(s, "POST", f"{node.url}/api/v1/redpackets/1-nothere/grab", tok, json={"password": 5})
        assert st == 400
    c = await Client.connect(node.ws, room, tok, fmt="json")
    for d in ({}, {"packet_id": "a b"}, {"packet_id": "1-x", "password": 7}):
        e = await c.request("redpacket.grab", **d)
        assert (e["t"], e["d"]["code"]) == ("error", "invalid"), e
    e = await c.request("redpacket.grab", packet_id="1-nothere")
    assert (e["t"], e["d"]["code"]) == ("error", "not_found")
    await c.close()
