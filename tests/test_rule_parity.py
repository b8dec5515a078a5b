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
  cases through the adapter's API);
* a batch of buys: ``flash_sale_reserve_batch.lua`` vs
  :func:`~livecommerce.flash_sale.decide_reserve_batch` (answers, stock, holdings, requests,
  counts and the sale's state), and each buy of the batch vs ``flash_sale_reserve.lua`` called
  alone in the same order on a copy of the same situation.
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
from livecommerce.flash_sale import (
    BatchBuy,
    Sale,
    SaleState,
    decide_reserve,
    decide_reserve_batch,
    request_key,
)
from livecommerce.flash_sale_redis import PARTS, RESERVE, RESERVE_BATCH
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


# ---------------------------------------------------------------- a batch of buys


def _sale_situation(lab: Lab, k: Keys, sale: Sale, state: SaleState, closed_by: str | None, remaining: int,
                    bought: dict[str, int], requests: dict[str, str]) -> list[str]:
    keys = [k.sale(sale.id, p) for p in PARTS]
    meta: dict[FieldT, EncodableT] = {"state": state, "starts_ms": sale.starts_ms, "ends_ms": sale.ends_ms,
                                      "per_user_limit": sale.per_user_limit,
                                      "payment_window_s": sale.payment_window_s, "price": sale.price}
    if closed_by is not None:
        meta["closed_by"] = closed_by
    lab.r.hset(keys[0], mapping=meta)
    lab.r.set(keys[1], remaining)
    for user, n in bought.items():
        if n:
            lab.r.hset(keys[2], user, n)
    for rkey, oid in requests.items():
        user = rkey.split(":")[1]
        lab.r.hset(keys[3], rkey, oid)
        lab.r.hset(keys[4], oid, json.dumps({"u": user, "q": 1, "s": "reserved", "p": "99", "r": rkey}))
    return keys


USERS = ("u1", "u2", "u3")
buy_st = st.builds(lambda u, q, r, now, o: (u, q, r, now, o), st.sampled_from(USERS), st.integers(1, 3),
                   st.sampled_from(["ra", "rb", "rc"]), st.sampled_from([NOW - 1, NOW, NOW + 5, NOW + 10]),
                   st.sampled_from(["o1", "o2", "o3", "o4", "o5", "o6", "old1"]))


@EXAMPLES
@given(
    state=st.sampled_from(["scheduled", "live", "sold_out", "ended"]),
    closed_by=st.sampled_from([None, "room:1700000000000"]),
    remaining=st.integers(0, 6),
    bought=st.fixed_dictionaries({u: st.integers(0, 3) for u in USERS}),
    known=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(["ra", "rb"])), max_size=2, unique=True),
    raw=st.lists(buy_st, min_size=1, max_size=8),
    room_ended=st.booleans(),
)
def test_the_batch_script_answers_as_decide_reserve_batch(lab: Lab, state: SaleState, closed_by: str | None,
                                                           remaining: int, bought: dict[str, int],
                                                           known: list[tuple[str, str]],
                                                           raw: list[tuple[str, int, str, int, str]],
                                                           room_ended: bool) -> None:
    sale = Sale("s1", "r1", "p1", 100, 8, 3, NOW, NOW + 10, 900)
    requests = {request_key(u, r): f"old{i + 1}" for i, (u, r) in enumerate(known)}
    buys = [BatchBuy(u, q, request_key(u, r), now, o) for u, q, r, now, o in raw]
    k = lab.keys()
    keys = _sale_situation(lab, k, sale, state, closed_by, remaining, bought, requests)
    args: list[EncodableT] = ["1" if room_ended else "0", "1"]
    for b, (_, _, r, _, _) in zip(buys, raw, strict=True):
        args += [b.user, b.qty, b.request_key, b.now_ms, b.order_id, r]
    out = lab.r.register_script(RESERVE_BATCH)(keys=keys, args=args)

    decisions, left, after = decide_reserve_batch(sale, buys, state=state, remaining=remaining, bought=bought,
                                                   requests=requests, taken=set(requests.values()),
                                                   room_closed=closed_by is not None, room_ended=room_ended)
    assert _s(out[0]) == "ok" and int(out[1]) == left and _s(out[3]) == after
    got = [(_s(out[i]), _s(out[i + 1]) or None, int(out[i + 4]), int(out[i + 5])) for i in range(5, len(out), 6)]
    assert got == [(d.code, d.order_id, d.remaining, d.bought) for d in decisions]
    # the effects: stock, holdings, request records, deadlines, counts, the sale's state
    made = [d for d in decisions if d.code == "ok"]
    units = remaining - left
    assert int(lab.r.get(keys[1]) or 0) == left
    assert _s(lab.r.hget(keys[0], "state")) == after
    held = {_s(u): int(n) for u, n in lab.r.hgetall(keys[2]).items()}
    final = dict(bought)
    for d, b in zip(decisions, buys, strict=True):
        if d.code == "ok":
            final[b.user] = d.bought
    assert held == {u: n for u, n in final.items() if n}
    assert lab.r.zcard(keys[5]) == len(made) and lab.r.hlen(keys[3]) == len(requests) + len(made)
    assert int(lab.r.hget(keys[6], "reserved") or 0) == units
    assert int(lab.r.hget(keys[6], "reserved_orders") or 0) == len(made)
    assert {_s(u) for u in out[4]} == ({u for u, n in final.items() if n} if left == 0 else set())


@EXAMPLES
@given(
    state=st.sampled_from(["live", "sold_out"]),
    remaining=st.integers(0, 6),
    bought=st.fixed_dictionaries({u: st.integers(0, 3) for u in USERS}),
    raw=st.lists(buy_st, min_size=1, max_size=8),
)
def test_a_batch_answers_each_buy_as_the_reserve_script_alone_in_the_same_order(lab: Lab, state: SaleState,
                                                                                remaining: int, bought: dict[str, int],
                                                                                raw: list[tuple[str, int, str, int, str]]) -> None:
    sale = Sale("s1", "r1", "p1", 100, 8, 3, NOW, NOW + 10, 900)
    buys = [BatchBuy(u, q, request_key(u, r), now, o) for u, q, r, now, o in raw]
    batch_keys = _sale_situation(lab, lab.keys(), sale, state, None, remaining, bought, {})
    alone_keys = _sale_situation(lab, lab.keys(), sale, state, None, remaining, bought, {})
    args: list[EncodableT] = ["0", "0"]
    for b, (_, _, r, _, _) in zip(buys, raw, strict=True):
        args += [b.user, b.qty, b.request_key, b.now_ms, b.order_id, r]
    out = lab.r.register_script(RESERVE_BATCH)(keys=batch_keys, args=args)
    one = lab.r.register_script(RESERVE)
    for i, (b, (_, _, r, _, _)) in enumerate(zip(buys, raw, strict=True)):
        alone = one(keys=alone_keys, args=[b.user, b.qty, b.request_key, b.now_ms, b.order_id, r])
        j = 5 + 6 * i
        if _s(alone[0]) in ("ok", "dup"):
            assert (_s(out[j]), _s(out[j + 1]), int(out[j + 2]), int(out[j + 3]), int(out[j + 4]), int(out[j + 5])) == (
                _s(alone[0]), _s(alone[1]), int(alone[2]), int(alone[3]), int(alone[4]), int(alone[5]))
        elif _s(alone[0]) == "order_exists":
            assert _s(out[j]) == "order_exists"
        else:
            assert (_s(out[j]), int(out[j + 4]), int(out[j + 5])) == (_s(alone[0]), int(alone[1]), int(alone[2]))
    for key_a, key_b in zip(batch_keys, alone_keys, strict=True):
        assert _dump(lab, key_a) == _dump(lab, key_b), key_a


def _dump(lab: Lab, key: str) -> tuple[str, Any]:
    kind = _s(lab.r.type(key))
    if kind == "string":
        return kind, lab.r.get(key)
    if kind == "hash":
        return kind, lab.r.hgetall(key)
    if kind == "zset":
        return kind, lab.r.zrange(key, 0, -1, withscores=True)
    return kind, None
