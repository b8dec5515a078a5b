"""The red packet scripts and their pure twins give the same answer in the same situation
(real Redis; the pattern of ``tests/test_rule_parity.py``): hypothesis writes a packet's
state straight into the keys a script reads, runs the script once as the adapter calls it,
and compares its answer and its effect with the rule's:

* grab: ``redpackets_grab.lua`` vs :func:`~livecommerce.redpackets.decide_grab` (the code,
  the share taken, the counts after, the pending credit, the due set when emptied);
* end: ``redpackets_step.lua`` vs :func:`~livecommerce.redpackets.decide_end` (ends or not,
  the refund, its pending credit)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as sync_redis
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.keys import Keys
from livecommerce.redpackets import PacketView, decide_end, decide_grab
from livecommerce.redpackets_redis import GRAB, STEP

NOW = 1_700_000_000_000
PID = "7-abc"
EXAMPLES = settings(max_examples=200, deadline=None)


@pytest.fixture(scope="module")
def lab(redis_url: str) -> Iterator[tuple[sync_redis.Redis, str]]:
    client = sync_redis.Redis.from_url(redis_url)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield client, prefix
    for k in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(k)
    client.close()


def _write(r: sync_redis.Redis, keys: Keys, v: PacketView, shares: list[int], user: str) -> dict[str, str]:
    w = {p: keys.entity("wallet", "7", p) for p in ("rpc", "rpdue")}
    k = {p: keys.entity("wallet", "7", f"rp:{PID}" + (f":{p}" if p else "")) for p in ("", "shares", "grabs", "order")}
    if v.state is not None:
        r.hset(k[""], mapping={"id": PID, "room": "r", "by": "boss", "state": v.state, "expires_ms": v.expires_ms,
                               "amount": v.amount, "count": v.count, "grabbed": v.grabbed, "taken": v.taken})
        r.rpush(k["shares"], *shares)
        for i in range(v.grabbed):
            r.hset(k["grabs"], f"u{i}", f"{i}|{shares[i]}|{NOW}")
        if v.prior is not None:
            r.hset(k["grabs"], user, f"{v.prior[0]}|{v.prior[1]}|{NOW}")
    return {"meta": k[""], "shares": k["shares"], "grabs": k["grabs"], "order": k["order"], **w}


@st.composite
def views(draw: Any) -> tuple[PacketView, list[int]]:
    count = draw(st.integers(1, 6))
    shares = [draw(st.integers(1, 50)) for _ in range(count)]
    grabbed = draw(st.integers(0, count))
    state = draw(st.sampled_from([None, "open", "open", "open", "ended", "announced"]))
    prior = draw(st.none() | st.just((0, shares[0]))) if grabbed else None
    return PacketView(state, expires_ms=NOW + draw(st.integers(-2, 2)), amount=sum(shares), count=count, grabbed=grabbed,
                      taken=sum(shares[:grabbed]), prior=prior), shares


@EXAMPLES
@given(situation=views())
def test_the_grab_script_answers_as_decide_grab(lab: tuple[sync_redis.Redis, str], situation: tuple[PacketView, list[int]]) -> None:
    r, prefix = lab
    v, shares = situation
    keys = Keys(f"{prefix}:{uuid.uuid4().hex[:8]}")
    k = _write(r, keys, v, shares, "me")
    code, amount, index, left, pending = r.register_script(GRAB)(
        keys=[k["meta"], k["shares"], k["grabs"], k["order"], k["rpc"], k["rpdue"]], args=["me", NOW, PID])
    want = decide_grab(v, now_ms=NOW)
    assert code.decode() == want
    if want == "already_grabbed":
        assert v.prior is not None and (amount, index) == (v.prior[1], v.prior[0])
    if want == "ok":
        assert (amount, index, left) == (shares[v.grabbed], v.grabbed, v.count - v.grabbed - 1)
        assert int(r.hget(k["meta"], "grabbed")) == v.grabbed + 1
        assert int(r.hget(k["meta"], "taken")) == v.taken + shares[v.grabbed]
        pc = json.loads(r.hget(k["rpc"], f"rp:{PID}:{v.grabbed}"))
        assert (pc["user"], pc["amount"], pc["index"], pc["kind"]) == ("me", shares[v.grabbed], v.grabbed, "credit")
        assert json.loads(pending) == pc
        emptied = v.grabbed + 1 == v.count
        assert (r.zscore(k["rpdue"], PID) == 0) == emptied
    else:
        assert r.hlen(k["rpc"]) == 0 and (v.state is None or int(r.hget(k["meta"], "grabbed")) == v.grabbed)


@EXAMPLES
@given(situation=views())
def test_the_end_step_ends_and_refunds_as_decide_end(lab: tuple[sync_redis.Redis, str], situation: tuple[PacketView, list[int]]) -> None:
    r, prefix = lab
    v, shares = situation
    keys = Keys(f"{prefix}:{uuid.uuid4().hex[:8]}")
    k = _write(r, keys, v, shares, "me")
    action, refunded = r.register_script(STEP)(keys=[k["meta"], k["rpdue"], k["rpc"]], args=[NOW, "k1", 30_000, PID])
    want = decide_end(v, now_ms=NOW)
    state_after = r.hget(k["meta"], "state")
    if want is None:
        assert r.hlen(k["rpc"]) == 0
        if v.state == "open":
            assert (action, state_after) == (b"open", b"open")
        elif v.state is None:
            assert action == b"missing"
    else:
        assert (action, refunded, state_after) == (b"announce", want, b"ended")
        pending = r.hget(k["rpc"], f"rp:{PID}:refund")
        assert (pending is None) == (want == 0)
        if pending is not None:
            pc = json.loads(pending)
            assert (pc["user"], pc["amount"], pc["kind"]) == ("boss", want, "refund")
