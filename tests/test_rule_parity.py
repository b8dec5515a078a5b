"""Each pure rule and its Lua twin give the same answer in the same situation (real Redis).

The gateway and the workers run the rules (``decide_reserve`` on a node's view of a sale)
and the scripts (the atomic step); if the two drift, a node answers what Redis would not.
Hypothesis writes a situation straight into the keys a script reads (its KEYS contract),
runs the script once, and compares its answer and its effect with the rule's:

* wallet debit: ``wallet_gift.lua`` vs :func:`~livecommerce.wallet.decide_debit` and
  :func:`~livecommerce.gifts.next_combo`, called as ``RedisWallet.send_gift`` calls it;
* coupon claim: ``coupons_claim.lua`` vs :func:`~livecommerce.coupons.decide_claim`;
* reserve: ``flash_sale_reserve.lua`` vs :func:`~livecommerce.flash_sale.decide_reserve`,
  including a sale its room's end closed (``tests/test_flash_sale_redis.py`` reaches fixed
  cases through the adapter's API).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as sync_redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.typing import EncodableT, FieldT

from livecommerce.coupons import CouponDrop, decide_claim
from livecommerce.coupons_redis import CLAIM
from livecommerce.flash_sale import Sale, SaleState, decide_reserve
from livecommerce.flash_sale_redis import PARTS, RESERVE
from livecommerce.gifts import Combo, next_combo
from livecommerce.keys import Keys
from livecommerce.wallet import decide_debit, shard_of
from livecommerce.wallet_redis import GIFT

NOW = 1_700_000_000_000
EXAMPLES = settings(max_examples=150, deadline=None)


class Lab:
    """A sync Redis client and a fresh key space per example (one prefix per module)."""

    def __init__(self, client: sync_redis.Redis, prefix: str) -> None:
        self.r = client
        self.prefix = prefix

    def keys(self) -> Keys:
        return Keys(f"{self.prefix}:{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def lab(redis_url: str) -> Iterator[Lab]:
    client = sync_redis.Redis.from_url(redis_url)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield Lab(client, prefix)
    for k in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(k)
    client.close()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------- wallet debit


@EXAMPLES
@given(
    balance=st.none() | st.integers(0, 1000),
    price=st.integers(0, 300),
    count=st.integers(1, 9),
    prev=st.none() | st.builds(Combo, st.sampled_from(["c1", "c2"]), st.integers(1, 50)),
    requested=st.sampled_from([None, "", "c1", "c9"]),
)
def test_the_gift_script_debits_and_combines_as_the_rules(lab: Lab, balance: int | None, price: int, count: int,
                                                          prev: Combo | None, requested: str | None) -> None:
    user, room, gift = "u1", "r1", "heart"
    k = lab.keys()
    shard = str(shard_of(user))
    bal_key, out_key = k.entity("wallet", shard, "bal"), k.entity("wallet", shard, "out")
    combo_key = k.entity("wallet", shard, f"combo:{user}:{room}:{gift}")
    if balance is not None:
        lab.r.hset(bal_key, user, balance)
    if prev is not None:
        lab.r.set(combo_key, f"{prev.id}|{prev.total}", px=60_000)
    cost = price * count
    # as RedisWallet.send_gift calls it: no combo id requested is ''
    args: list[str | int] = [user, cost, count, requested or "", "fresh", 3000, "ev1", "packed-event"]
    ok, bal, cid, total = lab.r.register_script(GIFT)(keys=[bal_key, out_key, combo_key], args=args)

    before = balance or 0
    refused = decide_debit(before, cost)
    assert (int(ok) == 1) == (refused is None)
    if refused is None:
        assert int(bal) == before - cost == int(lab.r.hget(bal_key, user) or 0)
        assert Combo(_s(cid), int(total)) == next_combo(prev, count=count, requested=requested, new_id="fresh")
        assert lab.r.hget(out_key, "ev1") == b"packed-event"
    else:
        assert int(bal) == before == int(lab.r.hget(bal_key, user) or 0)
        assert not lab.r.exists(out_key)
        assert lab.r.get(combo_key) == (None if prev is None else f"{prev.id}|{prev.total}".encode())


# ---------------------------------------------------------------- coupon claim


@EXAMPLES
@given(
    exists=st.booleans(),
    only_user=st.sampled_from([None, "", "u1", "u2"]),
    closed_by=st.sampled_from([None, "room:1700000000000", "ops:1"]),
    segment=st.sampled_from([None, "", "seg1"]),
    member=st.booleans(),
    expires=st.sampled_from([NOW - 1, NOW, NOW + 1]),
    already=st.booleans(),
    left=st.none() | st.integers(-1, 3),
)
def test_the_claim_script_answers_as_decide_claim(lab: Lab, exists: bool, only_user: str | None, closed_by: str | None,
                                                  segment: str | None, member: bool, expires: int, already: bool,
                                                  left: int | None) -> None:
    user = "u1"
    k = lab.keys()
    meta, left_key, owners, members = (k.entity("coupon", "cd1", p) for p in ("meta", "left", "owners", "members"))
    drop = CouponDrop("cd1", "r1", "full_reduction", 0, 100, 3, expires, "h1", NOW - 1000)
    if exists:
        fields: dict[FieldT, EncodableT] = {k: v for k, v in drop.fields().items()}
        for name, v in (("only_user", only_user), ("closed_by", closed_by), ("segment", segment)):
            if v is not None:
                fields[name] = v
        lab.r.hset(meta, mapping=fields)
    if left is not None:
        lab.r.set(left_key, left)
    if already:
        lab.r.hset(owners, user, json.dumps({"state": "claimed", "claimed_ms": NOW - 5}))
    if member:
        lab.r.sadd(members, user)
    code, remaining = lab.r.register_script(CLAIM)(keys=[meta, left_key, owners, members], args=[user, NOW, 10**13])  # keys outlive the (past) NOW

    expected = decide_claim(drop if exists else None, now_ms=NOW, left=left or 0, already=already, user=user,
                            only_user=only_user, closed_by=closed_by, segment=segment, member=member)
    assert _s(code) == (expected or "ok")
    if expected is None:
        assert int(remaining) == (left or 0) - 1 == int(lab.r.get(left_key) or 0)
        assert lab.r.hexists(owners, user)
    else:
        assert int(lab.r.get(left_key) or 0) == (left or 0)


# ---------------------------------------------------------------- reserve


@EXAMPLES
@given(
    state=st.sampled_from(["scheduled", "live", "sold_out", "ended"]),
    closed_by=st.sampled_from([None, "room:1700000000000"]),
    now=st.sampled_from([NOW - 1, NOW, NOW + 5, NOW + 10]),
    remaining=st.integers(0, 4),
    bought=st.integers(0, 4),
    qty=st.integers(1, 4),
)
def test_the_reserve_script_answers_as_decide_reserve(lab: Lab, state: SaleState, closed_by: str | None, now: int,
                                                      remaining: int, bought: int, qty: int) -> None:
    sale = Sale("s1", "r1", "p1", 100, 8, 3, NOW, NOW + 10, 900)
    k = lab.keys()
    keys = [k.sale(sale.id, p) for p in PARTS]
    meta: dict[FieldT, EncodableT] = {"state": state, "starts_ms": sale.starts_ms, "ends_ms": sale.ends_ms,
                            "per_user_limit": sale.per_user_limit, "payment_window_s": sale.payment_window_s,
                            "price": sale.price}
    if closed_by is not None:
        meta["closed_by"] = closed_by
    lab.r.hset(keys[0], mapping=meta)
    lab.r.set(keys[1], remaining)
    if bought:
        lab.r.hset(keys[2], "u1", bought)
    r = lab.r.register_script(RESERVE)(keys=keys, args=["u1", qty, "2:u1:rq", now, "o1", "rq"])

    expected = decide_reserve(sale, now_ms=now, remaining=remaining, bought=bought, qty=qty, state=state,
                              room_closed=closed_by is not None)
    assert _s(r[0]) == (expected or "ok")
    assert int(lab.r.get(keys[1]) or 0) == remaining - (qty if expected is None else 0)
