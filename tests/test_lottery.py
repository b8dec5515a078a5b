"""The pure lottery core: the draw's invariants, verification, life-cycle and entry rules."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.errors import BadFrame, Conflict
from livecommerce.lottery import (
    ALGORITHM,
    PROOF_INLINE_MAX,
    build_record,
    draw,
    ended_event,
    entrants_digest,
    entry_reject,
    new_lottery,
    new_seed,
    seed_hash,
    step,
    verify_record,
)

SEED = "ab" * 32
users = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
entrant_lists = st.lists(users, max_size=60, unique=True)
seeds = st.binary(min_size=16, max_size=32).map(new_seed)


def lottery(k: int = 3, rule: str = "enter", **extra: object):  # type: ignore[no-untyped-def]
    body = {"prize": {"kind": "product", "id": "p1"}, "winners": k, "duration_s": 60, "rule": rule, **extra}
    return new_lottery(body, id="L1", room="r1", host="h", now_ms=1_000, seed=SEED)


@settings(max_examples=300, deadline=None)
@given(seeds, entrant_lists, st.integers(0, 80))
def test_only_entrants_win_each_at_most_once_and_min_k_n_of_them(seed: str, entrants: list[str], k: int) -> None:
    winners = draw(seed, entrants, k)
    assert set(winners) <= set(entrants)
    assert len(set(winners)) == len(winners)
    assert len(winners) == min(k, len(entrants))
    assert draw(seed, list(entrants), k) == winners  # deterministic


@settings(max_examples=200, deadline=None)
@given(seeds, entrant_lists, st.integers(1, 80))
def test_a_smaller_k_draws_a_prefix_of_a_larger_one(seed: str, entrants: list[str], k: int) -> None:
    assert draw(seed, entrants, k) == draw(seed, entrants, k + 5)[: min(k, len(entrants))]


@settings(max_examples=200, deadline=None)
@given(seeds, entrant_lists, st.integers(0, 80))
def test_every_real_record_verifies(seed: str, entrants: list[str], k: int) -> None:
    lot = new_lottery({"prize": {"kind": "coupon", "id": "c1"}, "winners": max(1, k), "duration_s": 5}, id="L", room="r", host="h", now_ms=0, seed=seed)
    rec = json.loads(json.dumps(build_record(lot, seed=seed, entrants=entrants, drawn_ms=9)))
    verdict = verify_record(rec)
    assert verdict.ok, verdict.reasons
    assert verdict.recomputed == rec["winners"]


def test_draw_follows_the_documented_algorithm() -> None:
    """An independent re-implementation of the docstring's steps agrees with draw()."""
    entrants = [f"user{i}" for i in range(25)]
    canon = json.dumps(entrants, separators=(",", ":"), ensure_ascii=False).encode()
    digest = hashlib.sha256(canon).hexdigest()
    key = hmac.new(SEED.encode(), b"lc-draw-v1|" + digest.encode(), hashlib.sha256).digest()
    counter = 0
    pool = list(entrants)
    for i in range(4):
        m = len(pool) - i
        while True:
            x = int.from_bytes(hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha256).digest(), "big")
            counter += 1
            if x < (2**256 // m) * m:
                break
        j = i + x % m
        pool[i], pool[j] = pool[j], pool[i]
    assert draw(SEED, entrants, 4) == pool[:4]
    assert ALGORITHM == "lc-draw-v1"


def test_draw_refuses_duplicate_entrants_and_negative_k() -> None:
    with pytest.raises(ValueError):
        draw(SEED, ["a", "b", "a"], 1)
    with pytest.raises(ValueError):
        draw(SEED, ["a"], -1)


def test_the_seed_commitment_is_sha256_of_the_seed_text() -> None:
    assert seed_hash(SEED) == hashlib.sha256(SEED.encode()).hexdigest()
    assert lottery().seed_hash == seed_hash(SEED)
    with pytest.raises(ValueError):
        build_record(lottery(), seed="cd" * 32, entrants=["a"], drawn_ms=1)


# ---------------------------------------------------------------- verify rejects tampering
def real_record(n: int = 30, k: int = 3) -> dict:  # type: ignore[type-arg]
    return build_record(lottery(k), seed=SEED, entrants=[f"u{i}" for i in range(n)], drawn_ms=5_000)


def test_verify_rejects_a_changed_seed() -> None:
    rec = real_record()
    rec["seed"] = "cd" * 32
    v = verify_record(rec)
    assert not v.ok and any("seed_hash" in r for r in v.reasons)


def test_verify_rejects_a_changed_seed_even_with_a_matching_new_hash() -> None:
    rec = real_record()
    rec["seed"] = "cd" * 32
    rec["seed_hash"] = seed_hash(rec["seed"])  # the forger recomputes the hash, not the draw
    v = verify_record(rec)
    assert not v.ok and any("recomputed winners" in r for r in v.reasons)


def test_verify_rejects_a_changed_winner() -> None:
    rec = real_record()
    outsider = next(e for e in rec["proof"]["entrants"] if e not in rec["winners"])
    rec["winners"][0] = outsider
    v = verify_record(rec)
    assert not v.ok and any("differ" in r for r in v.reasons)


def test_verify_rejects_a_changed_entrant() -> None:
    rec = real_record()
    loser = next(e for e in rec["proof"]["entrants"] if e not in rec["winners"])
    rec["proof"]["entrants"][rec["proof"]["entrants"].index(loser)] = "mallory"
    v = verify_record(rec)
    assert not v.ok and any("entrants_sha256" in r for r in v.reasons)


def test_verify_rejects_a_changed_entrant_with_a_recomputed_digest() -> None:
    """The draw key depends on the whole list, so swapping a loser reshuffles everything."""
    rec = real_record()
    loser = next(e for e in rec["proof"]["entrants"] if e not in rec["winners"])
    ents = rec["proof"]["entrants"]
    ents[ents.index(loser)] = "mallory"
    rec["proof"]["entrants_sha256"] = entrants_digest(ents)
    v = verify_record(rec)
    assert not v.ok and any("recomputed winners" in r for r in v.reasons)


def test_verify_rejects_a_removed_winner_entrant_and_duplicates() -> None:
    rec = real_record()
    rec["proof"]["entrants"].remove(rec["winners"][0])
    assert not verify_record(rec).ok
    rec = real_record()
    rec["proof"]["entrants"].append(rec["proof"]["entrants"][0])
    v = verify_record(rec)
    assert not v.ok and any("more than once" in r for r in v.reasons)


def test_verify_rejects_an_unknown_algorithm_and_an_undrawn_or_broken_record() -> None:
    rec = real_record()
    rec["proof"]["algorithm"] = "lc-draw-v0"
    assert not verify_record(rec).ok
    assert not verify_record({**lottery().public(), "state": "open"}).ok
    assert not verify_record([1, 2]).ok
    broken = copy.deepcopy(real_record())
    del broken["proof"]
    assert not verify_record(broken).ok


def test_the_ended_event_carries_the_proof_inline_up_to_the_limit() -> None:
    small = ended_event(real_record(5, 2))
    assert small["proof"]["entrants"] == [f"u{i}" for i in range(5)] and small["winners"]
    big = ended_event(real_record(PROOF_INLINE_MAX + 1, 2))
    assert big["proof"]["entrants"] is None and big["proof"]["entrant_count"] == PROOF_INLINE_MAX + 1
    assert big["record_url"] == "/api/v1/lotteries/L1"


# ---------------------------------------------------------------- life-cycle and rules
def test_life_cycle_table_allows_only_forward_steps() -> None:
    assert step("open", "close") == ("closed", True)
    assert step("closed", "commit") == ("drawn", True)
    assert step("drawn", "announce") == ("announced", True)
    assert step("drawn", "commit") == ("drawn", False)  # a racing worker: no-op
    with pytest.raises(Conflict):
        step("open", "commit")
    with pytest.raises(Conflict):
        step("open", "announce")


def test_entry_rules() -> None:
    kw = lottery(rule="keyword", keyword="Lucky")
    gift = lottery(rule="gift", min_gift_value=100)
    plain = lottery()
    now = 2_000
    assert entry_reject(kw, via="comment", now_ms=now, is_host=False, text="I feel lUCKY today") is None
    assert entry_reject(kw, via="comment", now_ms=now, is_host=False, text="hello") == "rule_not_met"
    assert entry_reject(kw, via="enter", now_ms=now, is_host=False) == "rule_not_met"
    assert entry_reject(plain, via="enter", now_ms=now, is_host=False) is None
    assert entry_reject(plain, via="comment", now_ms=now, is_host=False, text="x") == "rule_not_met"
    assert entry_reject(gift, via="gift", now_ms=now, is_host=False) is None
    assert entry_reject(plain, via="gift", now_ms=now, is_host=False) == "rule_not_met"
    assert entry_reject(plain, via="enter", now_ms=now, is_host=True) == "host_may_not_enter"
    assert entry_reject(plain, via="enter", now_ms=plain.deadline_ms, is_host=False) == "closed"
    assert entry_reject(None, via="enter", now_ms=now, is_host=False) == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"winners": 1, "duration_s": 5},
        {"prize": {"kind": "car", "id": "x"}, "duration_s": 5},
        {"prize": {"kind": "product", "id": "p"}, "duration_s": 0},
        {"prize": {"kind": "product", "id": "p"}, "duration_s": 5, "winners": 0},
        {"prize": {"kind": "product", "id": "p"}, "duration_s": 5, "rule": "keyword"},
        {"prize": {"kind": "product", "id": "p"}, "duration_s": 5, "rule": "gift", "min_gift_value": 0},
        {"prize": {"kind": "product", "id": "p"}, "duration_s": 5, "rule": "follow"},
    ],
)
def test_invalid_start_requests_are_refused(body: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(BadFrame):
        new_lottery(body, id="L", room="r", host="h", now_ms=0, seed=SEED)
