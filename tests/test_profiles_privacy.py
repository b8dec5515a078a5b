"""A viewer's own data: the export holds everything kept about them; the deletion leaves no
personal field (name, notes, ticket texts, user id) in SQL, keeps every ledger balanced under
a pseudonym, and later events of theirs are folded under the pseudonym, rebuild included."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import String, Text, select

from livecommerce import migrations, profiles_sql, refunds_sql, schema
from livecommerce.auth import issue_token
from livecommerce.profiles import pseudonym
from tests.test_refunds import World, http  # noqa: F401  (fixture)
from tests.wsclient import Client
from workers.profiles import rebuild

SECRETS = ("alice", "Alice Liddell", "555-0100", "Baker St")
TABLES = [schema.metadata.tables[n] for n in (*migrations.V1_TABLES, *migrations.V2_TABLES)]
NOT_REWRITTEN = {"applied_events", "lotteries"}  # exactly-once claims and published draw proofs (documented)


async def _personal_rows(w: World) -> list[tuple[str, Any]]:
    found = []
    async with w.store.read() as tx:
        for table in TABLES:
            if table.name in NOT_REWRITTEN or (table.name == "refunds" and table is not refunds_sql.refunds):
                continue
            cols = [c for c in table.columns if isinstance(c.type, (String, Text)) or c.name in ("data", "rule")]
            for row in await tx.conn.execute(select(*cols)):
                text = " ".join(str(v) for v in row)
                if any(s.lower() in text.lower() for s in SECRETS):
                    found.append((table.name, tuple(row)))
    return found


async def test_export_then_erase_leaves_no_personal_field_and_balanced_ledgers(gateway_factory: Any, token: Any, redis: Any,
                                                                              http: Any) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http)
    try:
        s = w.node.settings
        alice = issue_token(s.secret, user="alice", role="viewer", name="Alice Liddell", now_s=int(time.time()), ttl_s=3600)
        ops, host = token("ops1", "ops"), token("h1", "host", ("shop",))
        await w.room("shop", "h1")
        sid = await w.campaign("shop", stock=5, price=1500)
        await w.call("POST", "/api/v1/wallets/alice/topup", ops, {"amount": 800, "idempotency_key": "t1"})
        oid = await w.buy("alice", sid, 2)
        await w.call("POST", "/api/v1/hosts/h1/fanclub", alice, status=202)
        c = await Client.connect(w.node.ws, "shop", alice, fmt="json")
        assert (await c.request("gift", gift_id="cake", count=2))["t"] == "ack"
        await c.request("comment", text="hello from Baker St")
        await c.close()
        await w.settle()
        rf = await w.call("POST", f"/api/v1/orders/{oid}/refunds", alice, {"qty": 1, "reason": "damaged", "note": "call me 555-0100"},
                          status=202)
        await w.call("POST", f"/api/v1/refunds/{rf['refund_id']}/approve", host, {"note": "sorry Alice Liddell"})
        ticket = await w.call("POST", "/api/v1/tickets", alice, {"subject": "Parcel to Baker St", "text": "I am Alice Liddell",
                                                                  "order_id": oid, "priority": "high"}, status=201)
        assert ticket["sla"]["stage"] == "first_response" and ticket["room_id"] == "shop"
        await w.call("POST", f"/api/v1/tickets/{ticket['id']}/status", ops, {"status": "in_progress", "note": "on it, Alice Liddell"})
        await w.settle()
        wallet = w.node.services.wallet
        before = {"wallet": await wallet.balance("alice"), "points": await w.store.points_balance("alice")}
        assert before["wallet"] == 800 - 2 * 99 + 1500 == await w.store.wallet_balance("alice")

        export = await w.call("GET", "/api/v1/me/data", alice)
        assert export["profile"]["display_name"] == "Alice Liddell" and export["profile"]["fan_clubs"] == ["h1"]
        assert [o["id"] for o in export["orders"]] == [oid] and export["orders"][0]["history"]
        assert export["refunds"][0]["note"] == "call me 555-0100" and export["tickets"][0]["text"] == "I am Alice Liddell"
        assert export["wallet"]["balance"] == export["wallet"]["ledger_balance"] == before["wallet"]
        assert export["points"]["viewer"] == before["points"] and export["fanclubs"][0]["member"] is True
        assert {e["reason"] for e in export["wallet"]["entries"]} == {"topup", "gift.sent"}
        assert await _personal_rows(w)  # there was personal data to erase

        gone = await w.call("DELETE", "/api/v1/me/data", alice)
        p = pseudonym(s.secret, "alice")
        assert gone["erased"] and gone["pseudonym"] == p and gone["wallet_moved"] == before["wallet"]
        assert await _personal_rows(w) == []
        # every ledger still balances, now under the pseudonym
        assert await wallet.balance("alice") == 0 == await w.store.wallet_balance("alice")
        assert await wallet.balance(p) == before["wallet"] == await w.store.wallet_balance(p)
        assert await w.store.points_balance(p) == before["points"] and await w.store.points_balance("alice") == 0
        assert [k async for k in redis.scan_iter(match=f"{s.key_prefix}:{{user:alice}}:*")] == []
        assert (await w.call("GET", "/api/v1/hosts/h1/fans", ops))["top"] == []
        await w.call("GET", "/api/v1/users/alice/profile", ops, status=404)
        prof = await w.call("GET", f"/api/v1/users/{p}/profile", ops)
        assert prof["erased"] and prof["display_name"] is None and prof["orders"] == 1 and prof["refunds"] == 1
        t = await w.call("GET", f"/api/v1/tickets/{ticket['id']}", ops)
        assert (t["subject"], t["text"], t["user_id"]) == ("[erased]", "[erased]", p) and all(h["note"] is None for h in t["history"])
        again = await w.call("DELETE", "/api/v1/me/data", alice)  # idempotent: nothing left to move
        assert again["wallet_moved"] == 0 and await wallet.balance(p) == before["wallet"]

        # a late event of theirs lands under the pseudonym, and a rebuild agrees
        erased_ms = w.node.gw.now_ms()
        await w.log.append("activity", "alice", "activity.watch", {"user": "alice", "room": "shop", "minutes": 5}, event_id="watch:late:1",
                           ts=erased_ms - 60_000)  # watched before the erasure, delivered after it
        await w.settle()
        assert await profiles_sql.get_profile(w.store, "alice") is None
        late = (await profiles_sql.get_profile(w.store, p))
        assert late is not None and late[0]["watch_min"] == 5 and late[2] is True
        await rebuild(w.store, w.redis, w.keys, w.log, secret=s.secret, fetch_timeout_ms=50)
        assert await profiles_sql.get_profile(w.store, "alice") is None
        assert await profiles_sql.get_profile(w.store, p) == late
        assert await _personal_rows(w) == []
        assert await w.store.points_balance(p) == before["points"] + 5 and await w.store.points_balance("alice") == 0
    finally:
        await w.close()
