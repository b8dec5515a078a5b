"""Segments: malformed rules are refused with a JSON pointer to the bad part; rules select the
right profiles; a segment's coupon drop can be claimed by its members only; a push reaches the
online members through their gateways' inboxes; each target counts delivered and redeemed."""

from __future__ import annotations

from typing import Any

import pytest

from livecommerce.profiles import DAY_MS
from livecommerce.segments import RuleError, evaluate, parse_rule
from tests.test_refunds import World, http  # noqa: F401  (fixture)
from tests.waiting import wait_until
from tests.wsclient import Client

BAD_RULES: list[tuple[Any, str, str]] = [
    ([], "", "must be an object"),
    ({"and": []}, "/and", "non-empty list"),
    ({"and": [{"field": "spend", "op": "gt", "value": 1}, {"field": "spnd", "op": "gt", "value": 1}]}, "/and/1/field",
     "did you mean 'spend'"),
    ({"or": [{"not": {"field": "stage", "op": "eq", "value": "vip"}}]}, "/or/0/not/value", "no lifecycle stage"),
    ({"field": "spend", "op": "contains", "value": 1}, "/op", "does not apply to number field"),
    ({"field": "spend", "op": "gt", "value": "100"}, "/value", "is a number"),
    ({"field": "categories", "op": "contains_any", "value": []}, "/value", "non-empty list"),
    ({"field": "categories", "op": "contains_any", "value": ["tea", 3]}, "/value/1", "holds text"),
    ({"field": "spend", "op": "gt"}, "", "missing 'value'"),
    ({"field": "spend", "op": "gt", "value": 1, "weight": 2}, "/weight", "unexpected key"),
    ({"and": [{"field": "spend", "op": "gt", "value": 1}], "or": []}, "/or", "cannot share an object"),
    ({"not": {"and": [{"field": "x/y", "op": "eq", "value": 1}]}}, "/not/and/0/field", "unknown field"),
    ({"field": "stage", "op": "exists", "value": 1}, "/value", "true or false"),
]


@pytest.mark.parametrize(("rule", "pointer", "words"), BAD_RULES)
def test_a_malformed_rule_is_refused_with_a_pointer_to_the_bad_part(rule: Any, pointer: str, words: str) -> None:
    with pytest.raises(RuleError) as exc:
        parse_rule(rule)
    assert exc.value.pointer == pointer and words in exc.value.message and exc.value.code == "invalid_rule"
    assert exc.value.message.startswith(f"at {pointer or '/'}: ")


def test_deep_or_huge_rules_are_refused() -> None:
    deep: Any = {"field": "spend", "op": "gt", "value": 1}
    for _ in range(13):
        deep = {"not": deep}
    with pytest.raises(RuleError, match="deeper"):
        parse_rule(deep)
    with pytest.raises(RuleError, match="at most 1000"):
        parse_rule({"field": "user_id", "op": "in", "value": [str(i) for i in range(1001)]})


def test_rules_select_profiles() -> None:
    view = {"stage": "mature", "spend": 50_000, "categories": ["tea", "toys"], "hosts_followed": ["h1"], "rfm": {"r": 5, "f": 3, "m": 4},
            "intimacy": {"h1": 120}, "category_spend": {"tea": 40_000}, "recency_days": None}
    yes = [
        {"and": [{"field": "stage", "op": "in", "value": ["mature", "growing"]}, {"field": "category_spend.tea", "op": "gt", "value": 10_000}]},
        {"field": "hosts_followed", "op": "contains", "value": "h1"},
        {"field": "categories", "op": "contains_all", "value": ["tea", "toys"]},
        {"field": "rfm.r", "op": "gte", "value": 5},
        {"field": "intimacy.h1", "op": "gte", "value": 100},
        {"field": "intimacy.h2", "op": "eq", "value": 0},
        {"field": "recency_days", "op": "exists", "value": False},
        {"not": {"field": "recency_days", "op": "lt", "value": 3}},
        {"or": [{"field": "spend", "op": "lt", "value": 1}, {"field": "fan_clubs", "op": "exists", "value": False}]},
    ]
    no = [{"field": "categories", "op": "contains_any", "value": ["shoes"]}, {"field": "recency_days", "op": "lt", "value": 3},
          {"field": "stage", "op": "not_in", "value": ["mature"]}]
    assert all(evaluate(parse_rule(r), view) for r in yes)
    assert not any(evaluate(parse_rule(r), view) for r in no)


async def _notice(c: Client) -> dict[str, Any]:
    while True:
        e = await c.next_event()
        if e["t"] == "notice":
            return e


async def test_only_members_claim_a_segment_coupon_and_online_members_get_the_push(gateway_factory: Any, token: Any, redis: Any,
                                                                                   http: Any) -> None:  # noqa: F811
    w = await World.make(gateway_factory, token, redis, http)
    try:
        ops = token("ops1", "ops")
        await w.room("shop", "h1")
        await w.call("POST", "/api/v1/products", token("h1", "host", ("shop",)), {"id": "tea1", "name": "Tea", "price": 900, "category": "Tea"})
        await w.call("POST", "/api/v1/products", token("h1", "host", ("shop",)), {"id": "toy1", "name": "Toy", "price": 900, "category": "toys"})
        tea = await w.campaign("shop", stock=20, price=6000, product="tea1")
        toy = await w.campaign("shop", stock=20, price=6000, product="toy1")
        for u in ("m1", "m2"):
            assert await w.buy(u, tea, 1)
        assert await w.buy("x1", toy, 1)
        await w.log.append("activity", "x2", "activity.watch", {"user": "x2", "room": "shop", "minutes": 3}, event_id="watch:x2:1",
                           ts=w.node.gw.now_ms() - 20 * DAY_MS)
        await w.settle()

        bad = await w.call("POST", "/api/v1/segments", ops, {"name": "tea", "rule": {"and": [{"field": "categoris", "op": "contains",
                                                                                             "value": "tea"}]}}, status=400)
        assert bad["error"]["code"] == "invalid_rule" and bad["error"]["pointer"] == "/and/0/field"
        assert "did you mean 'categories'" in bad["error"]["message"]
        await w.call("POST", "/api/v1/segments", token("m1"), {"rule": {"field": "spend", "op": "gt", "value": 0}}, status=403)
        rule = {"and": [{"field": "categories", "op": "contains", "value": "tea"}, {"field": "stage", "op": "in", "value": ["new", "growing"]}]}
        made = await w.call("POST", "/api/v1/segments", ops, {"id": "tea-lovers", "name": "Tea lovers", "rule": rule}, status=201)
        assert made["size"] == 2
        pv = await w.call("POST", "/api/v1/segments/preview", ops, {"rule": {"field": "stage", "op": "eq", "value": "dormant"}})
        assert pv == {"size": 1, "sample": ["x2"], "rule": {"field": "stage", "op": "eq", "value": "dormant"}}
        assert (await w.call("POST", "/api/v1/segments/preview", ops, {"rule": {"not": []}}, status=400))["error"]["pointer"] == "/not"

        # m1 is online: the drop's notice reaches them; m2 is offline
        c1 = await Client.connect(w.node.ws, "shop", token("m1"), fmt="json")
        cx = await Client.connect(w.node.ws, "shop", token("x1"), fmt="json")
        # presence is written in short windows after a join: m1 counts as online once it is
        await wait_until(lambda: w.node.gw.presence.user_nodes(["m1"]), until=lambda got: bool(got.get("m1")),
                         what="m1 online in presence")
        target = await w.call("POST", "/api/v1/segments/tea-lovers/coupons", ops,
                              {"kind": "full_reduction", "value": 500, "threshold": 5000, "drop_id": "tea5"}, status=201)
        assert (target["members"], target["delivered"], target["drop_id"]) == (2, 1, "tea5")
        note = await _notice(c1)
        assert note["d"]["drop_id"] == "tea5" and note["d"]["segment"] == "tea-lovers"
        # only members claim
        refused = await w.call("POST", "/api/v1/coupons/tea5/claim", token("x1"), status=409)
        assert refused["error"]["code"] == "not_eligible"
        got = await cx.request("coupon.claim", drop_id="tea5")
        assert got["t"] == "error" and got["d"]["code"] == "not_eligible"
        coupon = await w.call("POST", "/api/v1/coupons/tea5/claim", token("m1"), status=201)
        assert (await w.call("POST", "/api/v1/coupons/tea5/claim", token("m2"), status=201))["drop_id"] == "tea5"
        # m1 redeems it on a paid order
        r = await w.http.post(f"{w.node.url}/api/v1/sales/{tea}/buy", json={"qty": 1, "request_id": "r2"}, headers={"Authorization": f"Bearer {token('m1')}"})
        oid = (await r.json())["order_id"]
        paid = await w.call("POST", f"/api/v1/orders/{oid}/pay", token("m1"), {"coupon_id": coupon["coupon_id"]})
        assert paid["discount"] == 500
        await w.settle()
        # a refund gives back what was paid, after the coupon
        rf = await w.call("POST", f"/api/v1/orders/{oid}/refunds", token("m1"), {"reason": "changed_mind"}, status=202)
        assert rf["amount"] == 5500
        # a push to the online members, linked to the sale
        await w.call("POST", f"/api/v1/refunds/{rf['refund_id']}/approve", ops, {})
        push = await w.call("POST", "/api/v1/segments/tea-lovers/push", ops, {"text": "New tea tonight", "sale_id": tea}, status=201)
        assert (push["members"], push["delivered"]) == (2, 1)
        assert (await _notice(c1))["d"]["text"] == "New tea tonight"
        await w.settle()
        seg = await w.call("GET", "/api/v1/segments/tea-lovers", ops)
        by_kind = {t["kind"]: t for t in seg["targets"]}
        assert (by_kind["coupon"]["delivered"], by_kind["coupon"]["claimed"], by_kind["coupon"]["redeemed"]) == (1, 2, 1)
        assert (by_kind["push"]["delivered"], by_kind["push"]["redeemed"]) == (1, 1)
        funnel = await w.call("GET", "/api/v1/coupons/tea5/funnel", ops)
        assert funnel["counts"]["tried"] == 3 and funnel["counts"]["reserved"] == 2 and funnel["counts"]["paid"] == 1
        assert funnel["extra"]["segment_members"] == 2 and funnel["gmv"] == 0 and funnel["refunded_amount"] == 5500
        assert funnel["counts"]["refunded"] == 1
        assert await w.store.wallet_balance("m1") == 5500 == await w.node.services.wallet.balance("m1")
        await c1.close()
        await cx.close()
    finally:
        await w.close()
