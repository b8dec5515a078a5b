"""Red packets, the pure rules: the verifiable split (sums exact, no share zero, a function
of the committed seed), the drop body, who may grab, the life-cycle table and the record's
verifier (which catches every kind of tampering)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.errors import BadFrame, Conflict
from livecommerce.redpackets import (
    Grab,
    RedPacket,
    best_luck,
    build_record,
    credit_id,
    grab_reject,
    new_packet,
    packet_id,
    parse_drop,
    seed_hash,
    shard_of_packet,
    split,
    step,
    verify_record,
)
from livecommerce.wallet import ledger_delta

SEED = "ab" * 32


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 300), st.integers(0, 5000), st.text("0123456789abcdef", min_size=16, max_size=64))
def test_the_split_sums_exactly_with_no_share_zero(count: int, extra: int, seed: str) -> None:
    amount = count + extra
    shares = split(seed, "7-abc", amount, count)
    assert len(shares) == count and sum(shares) == amount and min(shares) >= 1


@given(st.integers(1, 50), st.integers(0, 500))
def test_the_split_is_a_function_of_seed_packet_amount_and_count(count: int, extra: int) -> None:
    amount = count + extra
    assert split(SEED, "1-x", amount, count) == split(SEED, "1-x", amount, count)


def test_another_seed_or_packet_gives_another_split() -> None:
    base = split(SEED, "1-x", 1000, 10)
    assert split("cd" * 32, "1-x", 1000, 10) != base
    assert split(SEED, "1-y", 1000, 10) != base
    assert split(SEED, "1-x", 1000, 1) == [1000] and split(SEED, "1-x", 10, 10) == [1] * 10


def test_the_split_is_not_biased_toward_the_first_grabs() -> None:
    """Every position's mean share is the packet's mean (a uniform composition is
    exchangeable): over 400 seeds, each position's average of 100 coins in 5 shares is 20 +- 3."""
    sums = [0] * 5
    for i in range(400):
        for j, s in enumerate(split(f"{i:032x}", "3-q", 100, 5)):
            sums[j] += s
    assert all(abs(s / 400 - 20) < 3 for s in sums), sums


def test_a_split_needs_one_coin_per_share() -> None:
    with pytest.raises(ValueError):
        split(SEED, "1-x", 4, 5)
    with pytest.raises(ValueError):
        split(SEED, "1-x", 4, 0)


def test_packet_ids_name_their_wallet_shard() -> None:
    assert shard_of_packet(packet_id(17, "9f2c")) == 17
    for bad in ("", "x-1", "64-ab", "1", "1-", "1-a b", "100-ab", "-ab", "3-a:b"):
        assert shard_of_packet(bad) is None, bad
    assert credit_id("3-ab", 0) == "rp:3-ab:0"


def test_a_drop_body_is_validated_with_reasons() -> None:
    r = parse_drop({"amount": 100, "count": 10, "request_id": "d-1", "password": " 发财 ", "followers_only": True})
    assert (r.amount, r.count, r.duration_s, r.password, r.followers_only) == (100, 10, 300, "发财", True)
    bad: list[dict[str, Any]] = [
        {"amount": 5, "count": 10, "request_id": "a"},  # a share would be zero
        {"amount": 10, "count": 0, "request_id": "a"},
        {"amount": 10, "count": 501, "request_id": "a"},
        {"amount": True, "count": 1, "request_id": "a"},
        {"amount": 10, "count": 1},
        {"amount": 10, "count": 1, "request_id": "a b"},
        {"amount": 10, "count": 1, "request_id": "a", "duration_s": 1},
        {"amount": 10, "count": 1, "request_id": "a", "password": "   "},
        {"amount": 10, "count": 1, "request_id": "a", "password": "x" * 33},
        {"amount": 10, "count": 1, "request_id": "a", "followers_only": "yes"},
        {"amount": 10, "count": 1, "request_id": "a", "greeting": "x" * 61},
    ]
    for body in bad:
        with pytest.raises(BadFrame) as e:
            parse_drop(body)
        assert e.value.code == "invalid" and "'" in e.value.message


def _packet(**kw: Any) -> RedPacket:
    req = parse_drop({"amount": 100, "count": 3, "request_id": "r", **kw})
    return new_packet(req, id="5-abc", room="r1", by="host", host="host", now_ms=1000, seed=SEED)


def test_who_may_grab() -> None:
    p = _packet()
    assert grab_reject(None, user="v", now_ms=0, following=False) == "not_found"
    assert grab_reject(p, user="v", now_ms=1000, following=False) is None
    assert grab_reject(p, user="v", now_ms=p.expires_ms, following=False) == "expired"
    assert grab_reject(p, user="host", now_ms=1000, following=True) == "own_packet"
    fo = _packet(followers_only=True)
    assert grab_reject(fo, user="v", now_ms=1000, following=False) == "followers_only"
    assert grab_reject(fo, user="v", now_ms=1000, following=True) is None
    pw = _packet(password="Lucky Day")
    assert grab_reject(pw, user="v", now_ms=1000, following=False) == "password_required"
    assert grab_reject(pw, user="v", now_ms=1000, following=False, password="nope") == "password_required"
    assert grab_reject(pw, user="v", now_ms=1000, following=False, password=" lucky day") is None
    assert grab_reject(pw, user="v", now_ms=1000, following=False, text="so, LUCKY DAY!!") is None
    assert grab_reject(pw, user="v", now_ms=1000, following=False, text="lucky") == "password_required"


def test_the_life_cycle_is_a_table() -> None:
    assert step("open", "end") == ("ended", True)
    assert step("ended", "end") == ("ended", False)
    assert step("ended", "announce") == ("announced", True)
    assert step("announced", "announce") == ("announced", False)
    with pytest.raises(Conflict):
        step("open", "announce")


def test_the_ledger_debits_the_drop_and_credits_shares_and_refunds() -> None:
    assert ledger_delta("redpacket.debit", {"user": "h", "amount": 100}) == ("h", -100, "redpacket.debit")
    assert ledger_delta("redpacket.credit", {"user": "v", "amount": 7}) == ("v", 7, "redpacket.credit")
    assert ledger_delta("redpacket.refund", {"user": "h", "amount": 3}) == ("h", 3, "redpacket.refund")


def _ended_record(grabbed: int = 2) -> dict[str, Any]:
    p = _packet()
    shares = split(SEED, p.id, p.amount, p.count)
    grabs = [Grab(f"u{i}", shares[i], i, 2000 + i) for i in range(grabbed)]
    return build_record(p, state="ended", grabs=grabs, seed=SEED, refunded=p.amount - sum(shares[:grabbed]), ended_ms=9000)


def test_a_published_record_verifies_and_names_the_best_luck() -> None:
    rec = _ended_record()
    assert rec["seed_hash"] == seed_hash(SEED) == hashlib.sha256(SEED.encode()).hexdigest()
    v = verify_record(rec)
    assert v.ok, v.reasons
    assert rec["best"]["amount"] == max(g["amount"] for g in rec["grabs"])
    assert best_luck([Grab("a", 5, 0, 1), Grab("b", 5, 1, 2)]) == Grab("a", 5, 0, 1)  # the earlier among equals


def test_an_open_packets_record_shows_no_seed_and_does_not_verify() -> None:
    p = _packet()
    rec = build_record(p, state="open", grabs=[], seed=None, refunded=None, ended_ms=None)
    assert "seed" not in rec and "shares" not in rec
    v = verify_record(rec)
    assert not v.ok and "not ended" in v.reasons[0]


@pytest.mark.parametrize("tamper", ["seed", "share", "swap", "twice", "refund", "algorithm", "shares"])
def test_the_verifier_catches_each_kind_of_tampering(tamper: str) -> None:
    rec = copy.deepcopy(_ended_record(3))
    g = rec["grabs"]
    if tamper == "seed":
        rec["seed"] = "cd" * 32
    elif tamper == "share":
        g[1]["amount"] += 1
        rec["refunded"] -= 1  # the sum still adds up: the share itself is wrong
    elif tamper == "swap":
        g[0]["user"], g[1]["user"] = g[1]["user"], g[0]["user"]
        g[0]["amount"], g[1]["amount"] = g[1]["amount"], g[0]["amount"]
    elif tamper == "twice":
        g[2]["user"] = g[0]["user"]
    elif tamper == "refund":
        rec["refunded"] += 1
    elif tamper == "algorithm":
        rec["algorithm"] = "lc-redpacket-v0"
    else:
        rec["shares"] = list(reversed(rec["shares"]))
    v = verify_record(rec)
    if tamper == "swap" and g[0]["amount"] == g[1]["amount"]:
        pytest.skip("equal shares: a swap changes nothing")
    assert not v.ok and v.reasons


def test_the_verifier_never_raises_on_garbage() -> None:
    for junk in (None, [], "x", {"seed": 5}, {"seed": "ab", "id": 1}, {"seed": "ab", "id": "1-a", "amount": 1, "count": 5},
                 {"seed": "ab", "id": "1-a", "amount": 5, "count": 1, "grabs": "x"}):
        assert not verify_record(junk).ok


def test_the_verify_command_line_prints_match_or_mismatch_with_exit_codes(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from livecommerce import cli

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    rec = _ended_record(3)
    good.write_text(json.dumps(rec))
    rec["grabs"][0]["amount"] += 1
    bad.write_text(json.dumps(rec))
    assert cli.main(["redpacket", "verify", str(good)]) == 0
    assert "MATCH: red packet 5-abc" in capsys.readouterr().out
    assert cli.main(["redpacket", "verify", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "grab 0" in out
    assert cli.main(["redpacket", "verify", str(tmp_path / "missing.json")]) == 1
    assert "cannot read a red packet record" in capsys.readouterr().err
