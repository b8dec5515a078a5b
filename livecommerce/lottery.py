"""Lotteries ("lucky bags"): definition, entry rules, life-cycle and the verifiable draw.

No I/O here: the clock, ids and the secret seed are arguments. The Redis adapter
(:mod:`livecommerce.lottery_redis`) keeps entrants and state atomically; the gateway
(``gateway/lottery.py``) starts lotteries and feeds entries; the draw worker
(``workers/lottery.py``) closes, draws, commits and announces.

Life-cycle (all transition logic lives in :data:`LOTTERY_TRANSITIONS`)::

    open --close--> closed --commit--> drawn --announce--> announced
      |
      +--cancel--> cancelled      (the host ended the show with {"lotteries": "cancel"})

* ``open``: entries accepted until ``deadline_ms``.
* ``closed``: the deadline passed and a worker froze the entrant list (no entry after).
* ``drawn``: one worker committed the record (seed, entrants, winners); only that worker
  (or, after its lease expired, a restarted one) publishes ``lottery.ended``.
* ``announced``: published and prize hooks done.
* ``cancelled``: closed without a draw when the room's show ended; no winners, no record.

A lottery closed (or cancelled) because its room's show ended carries the show's stamp
(``closed_by``, see :func:`livecommerce.rooms.close_marker`); entries then answer
``room_ended`` instead of ``closed``.

Verifiable fairness. At start a secret ``seed`` (64 hex characters) is drawn and only
``seed_hash = sha256(seed as ASCII).hexdigest()`` is published (``lottery.started``). At the
end the seed and the ordered entrant list are published, and the winners are
:func:`draw` ``(seed, entrants, k)``, algorithm ``lc-draw-v1``:

1. ``digest = sha256(json.dumps(entrants, separators=(",", ":"), ensure_ascii=False)
   .encode("utf-8")).hexdigest()`` (the canonical entrant list).
2. ``key = HMAC-SHA256(key=seed.encode("ascii"), msg=b"lc-draw-v1|" + digest.encode("ascii"))``.
3. A byte stream: block ``c`` (c = 0, 1, 2, ...) is ``HMAC-SHA256(key, c as 8-byte big
   endian)``; ``below(m)`` takes the next block as a 256-bit big-endian integer ``x``,
   rejects it while ``x >= (2**256 // m) * m`` (no modulo bias) and returns ``x % m``.
4. Partial Fisher-Yates over a copy of the list: for ``i`` in ``0 .. min(k, n) - 1``:
   ``j = i + below(n - i)``; swap items ``i`` and ``j``. The winners are the first
   ``min(k, n)`` items, in that order.

Because the key depends on the whole list, changing, adding or removing any entrant
reshuffles the outcome; because the seed was committed before any entry, nobody (the host
included) can steer the draw by choosing when to enter. Anyone can re-run it:
``livecommerce lottery verify FILE|URL`` (:func:`verify_record`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import BadFrame, Conflict

ALGORITHM = "lc-draw-v1"

LotteryState = Literal["open", "closed", "drawn", "announced", "cancelled"]
LotteryStep = Literal["close", "commit", "announce", "cancel"]
Rule = Literal["keyword", "gift", "enter"]
PrizeKind = Literal["product", "coupon", "coins"]
Via = Literal["enter", "comment", "gift"]
# Expected entry outcomes are values; each string is the wire error code.
EntryReject = Literal["not_found", "closed", "rule_not_met", "host_may_not_enter"]
EnterResult = Literal["ok", "already_entered", "not_found", "closed", "rule_not_met", "room_ended"]

RULES: frozenset[str] = frozenset(get_args(Rule))
PRIZE_KINDS: frozenset[str] = frozenset(get_args(PrizeKind))

LOTTERY_TRANSITIONS: dict[tuple[LotteryState, LotteryStep], LotteryState] = {
    ("open", "close"): "closed",
    ("closed", "commit"): "drawn",
    ("drawn", "announce"): "announced",
    ("open", "cancel"): "cancelled",
}

# A step whose effect already holds: re-applying it changes nothing (a racing worker).
_ALREADY: dict[tuple[LotteryState, LotteryStep], LotteryState] = {
    ("closed", "close"): "closed",
    ("drawn", "close"): "drawn",
    ("announced", "close"): "announced",
    ("drawn", "commit"): "drawn",
    ("announced", "commit"): "announced",
    ("announced", "announce"): "announced",
    ("cancelled", "cancel"): "cancelled",
}

MAX_WINNERS = 1000
MIN_DURATION_S = 1
MAX_DURATION_S = 7 * 24 * 3600
MAX_KEYWORD_LEN = 32
# lottery.ended carries the entrant list inline up to this many entrants; beyond it the
# event carries the count and digest and the full list is in GET /api/v1/lotteries/{id}.
PROOF_INLINE_MAX = 1000


def step(state: LotteryState, s: LotteryStep) -> tuple[LotteryState, bool]:
    """Apply one life-cycle step: ``(new state, changed)``.

    Raises:
        Conflict: the step is illegal from ``state`` (e.g. ``commit`` on an open lottery).
    """
    nxt = LOTTERY_TRANSITIONS.get((state, s))
    if nxt is not None:
        return nxt, True
    same = _ALREADY.get((state, s))
    if same is not None:
        return same, False
    raise Conflict(f"lottery is {state}; cannot {s}", code="conflict")


#: the most coins one winner of a ``coins`` prize gets
MAX_COIN_PRIZE = 1_000_000
#: how long a coupon won in a lottery stays valid (from the draw)
PRIZE_COUPON_TTL_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Prize:
    """What each winner gets: ``product`` (a product id: a zero-price paid order of one unit
    per winner, :func:`prize_order_id`, which the host ships like any order), ``coupon`` (``id``: one of the room's coupon drops; each winner gets a coupon on
    its terms) or ``coins`` (``amount`` coins each, paid by the platform: only ops start
    those). Coupon and coin prizes are paid out by the draw worker exactly once per winner
    (:func:`award_key`)."""

    kind: PrizeKind
    id: str
    amount: int = 0  # coins per winner (kind coins)
    # a coupon prize's terms, copied from its drop at start: {kind, threshold, value}
    coupon: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "coins":
            return {"kind": self.kind, "amount": self.amount}
        if self.coupon is not None:
            return {"kind": self.kind, "id": self.id, "coupon": dict(self.coupon)}
        return {"kind": self.kind, "id": self.id}


def coupon_terms(kind: str, threshold: int, value: int) -> dict[str, Any]:
    """A coupon prize's terms as the lottery keeps them (copied from the named drop)."""
    return {"kind": kind, "threshold": threshold, "value": value}


def parse_prize(prize: Any) -> Prize:
    """A start request's ``prize``: ``{kind: product|coupon, id}`` or ``{kind: coins, amount}``.

    Raises:
        BadFrame: (code ``invalid``) anything else.
    """
    if not isinstance(prize, Mapping) or prize.get("kind") not in PRIZE_KINDS:
        raise BadFrame("'prize' must be {\"kind\": \"product\"|\"coupon\", \"id\": ...} or "
                       "{\"kind\": \"coins\", \"amount\": N}", code="invalid")
    if prize["kind"] == "coins":
        return Prize("coins", "", _int(prize.get("amount"), "prize.amount", 1, MAX_COIN_PRIZE))
    return Prize(prize["kind"], _ident(prize.get("id"), "prize.id"))


def award_key(lottery_id: str) -> str:
    """The idempotency key of a lottery's payout to each winner: a coin credit is keyed
    ``(winner, award_key)`` in the wallet, a coupon prize is the private drop
    :func:`prize_drop_id`; a payout repeated after a crash finds its first one."""
    return f"lottery:{lottery_id}"


def prize_order_id(lottery_id: str, user: str) -> str:
    """The zero-price order that ships one winner's product prize. Its "sale" is
    :func:`prize_sale_id` (the lottery names the product)."""
    return f"{prize_sale_id(lottery_id)}.{hashlib.sha256(user.encode()).hexdigest()[:16]}"


def prize_sale_id(lottery_id: str) -> str:
    """What a prize order names as its sale: the lottery it was won in."""
    return f"prize:{lottery_id}"


def prize_drop_id(lottery_id: str, user: str) -> str:
    """The private coupon drop that holds one winner's coupon prize."""
    return f"lp.{lottery_id}.{hashlib.sha256(user.encode()).hexdigest()[:16]}"


@dataclass(frozen=True, slots=True)
class Lottery:
    """One lottery as defined at start. ``seed_hash`` is public; the seed itself is kept
    by the adapter and published only with the result. Times are epoch ms."""

    id: str
    room: str
    prize: Prize
    winners_k: int
    rule: Rule
    started_ms: int
    deadline_ms: int
    seed_hash: str
    keyword: str = ""
    min_gift_value: int = 0
    title: str = ""
    host: str = ""

    def rule_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.rule}
        if self.rule == "keyword":
            d["keyword"] = self.keyword
        if self.rule == "gift":
            d["min_gift_value"] = self.min_gift_value
        return d

    def public(self) -> dict[str, Any]:
        """What ``lottery.started`` and the HTTP API show before the draw (no seed)."""
        return {
            "id": self.id,
            "room": self.room,
            "title": self.title,
            "prize": self.prize.to_dict(),
            "winners_k": self.winners_k,
            "rule": self.rule_dict(),
            "started_ms": self.started_ms,
            "deadline_ms": self.deadline_ms,
            "seed_hash": self.seed_hash,
            "algorithm": ALGORITHM,
        }


def _ident(v: Any, name: str) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not 0 < len(v) <= 64 or not all(c.isalnum() or c in "-_.:" for c in v):
        raise BadFrame(f"'{name}' must be 1..64 letters, digits or - _ . :", code="invalid")
    return v


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadFrame(f"'{name}' must be an integer in {lo}..{hi}", code="invalid")
    return v


def new_lottery(
    body: Mapping[str, Any], *, id: str, room: str, host: str, now_ms: int, seed: str
) -> Lottery:
    """Validate a start request (HTTP body or ``lottery.start`` ``d``) into a :class:`Lottery`.

    Body: ``prize`` (:func:`parse_prize`), ``winners`` (k, 1..1000, default 1),
    ``duration_s`` (1 s .. 7 days), ``rule`` (``keyword`` with ``keyword``, ``gift`` with
    ``min_gift_value`` > 0, or ``enter``; default ``enter``), optional ``title``.

    Raises:
        BadFrame: (code ``invalid``) a missing or malformed field.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a map", code="invalid")
    prize = parse_prize(body.get("prize"))
    rule = body.get("rule", "enter")
    if rule not in RULES:
        raise BadFrame(f"'rule' must be one of {sorted(RULES)}", code="invalid")
    keyword = ""
    min_gift = 0
    if rule == "keyword":
        kw = body.get("keyword")
        if not isinstance(kw, str) or not 0 < len(kw.strip()) <= MAX_KEYWORD_LEN:
            raise BadFrame(f"'keyword' must be 1..{MAX_KEYWORD_LEN} characters", code="invalid")
        keyword = kw.strip()
    elif rule == "gift":
        min_gift = _int(body.get("min_gift_value"), "min_gift_value", 1, 10**12)
    title = body.get("title", "")
    if not isinstance(title, str) or len(title) > 200:
        raise BadFrame("'title' must be a string of at most 200 characters", code="invalid")
    duration = _int(body.get("duration_s"), "duration_s", MIN_DURATION_S, MAX_DURATION_S)
    return Lottery(
        id=id,
        room=room,
        prize=prize,
        winners_k=_int(body.get("winners", 1), "winners", 1, MAX_WINNERS),
        rule=rule,
        started_ms=now_ms,
        deadline_ms=now_ms + duration * 1000,
        seed_hash=seed_hash(seed),
        keyword=keyword,
        min_gift_value=min_gift,
        title=title,
        host=host,
    )


def matches_keyword(keyword: str, text: str) -> bool:
    """A comment enters a keyword lottery when it contains the keyword (case-folded)."""
    return bool(keyword) and keyword.casefold() in text.casefold()


def entry_reject(
    lottery: Lottery | None, *, via: Via, now_ms: int, is_host: bool, text: str = ""
) -> EntryReject | None:
    """None means: try to enter (the adapter still checks state, duplicates and gift totals
    atomically). Time is judged first so late entrants hear ``closed``.

    * ``enter`` (explicit ``lottery.enter``) is the way in for ``enter`` lotteries; for a
      ``gift`` lottery it enters once the user's gifts reached the minimum; a ``keyword``
      lottery is entered by commenting the keyword (``rule_not_met`` otherwise).
    * ``comment`` enters keyword lotteries whose keyword the text contains.
    * ``gift`` counts toward gift lotteries only.
    * The room's host and ops never enter their own room's lottery.
    """
    if lottery is None:
        return "not_found"
    if now_ms >= lottery.deadline_ms:
        return "closed"
    if is_host:
        return "host_may_not_enter"
    if via == "enter":
        return "rule_not_met" if lottery.rule == "keyword" else None
    if via == "comment":
        return None if lottery.rule == "keyword" and matches_keyword(lottery.keyword, text) else "rule_not_met"
    return None if lottery.rule == "gift" else "rule_not_met"


# ---------------------------------------------------------------- the draw
def seed_hash(seed: str) -> str:
    """The public commitment to ``seed``: sha256 of its ASCII bytes, hex."""
    return hashlib.sha256(seed.encode("ascii")).hexdigest()


def new_seed(random_bytes: bytes) -> str:
    """A seed from 32 bytes of the caller's randomness (``secrets.token_bytes(32)``).

    Raises:
        ValueError: fewer than 16 bytes.
    """
    if len(random_bytes) < 16:
        raise ValueError("a seed needs at least 16 random bytes")
    return random_bytes.hex()


def entrants_digest(entrants: Sequence[str]) -> str:
    """sha256 of the canonical JSON of the ordered entrant list, hex."""
    canon = json.dumps(list(entrants), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class HmacStream:
    """HMAC-SHA256 counter-mode stream with unbiased ``below`` (rejection sampling): the
    randomness of the lottery draw and of the red packet split (``livecommerce.redpackets``)."""

    __slots__ = ("_c", "_key")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._c = 0

    def _block(self) -> int:
        b = hmac.new(self._key, self._c.to_bytes(8, "big"), hashlib.sha256).digest()
        self._c += 1
        return int.from_bytes(b, "big")

    def below(self, m: int) -> int:
        limit = (1 << 256) // m * m
        while True:
            x = self._block()
            if x < limit:
                return x % m


def draw(seed: str, entrants: Sequence[str], k: int) -> list[str]:
    """The winners of a lottery: a deterministic function of (seed, ordered entrants, k),
    algorithm ``lc-draw-v1`` (see the module docstring). Returns ``min(k, n)`` distinct
    entrants, in draw order.

    Raises:
        ValueError: ``k`` < 0, or an entrant appears twice (each user enters once).
    """
    if k < 0:
        raise ValueError("k must not be negative")
    pool = list(entrants)
    if len(set(pool)) != len(pool):
        raise ValueError("an entrant appears more than once")
    n = len(pool)
    key = hmac.new(
        seed.encode("ascii"), f"{ALGORITHM}|{entrants_digest(pool)}".encode("ascii"), hashlib.sha256
    ).digest()
    stream = HmacStream(key)
    take = min(k, n)
    for i in range(take):
        j = i + stream.below(n - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:take]


def build_record(lottery: Lottery, *, seed: str, entrants: Sequence[str], drawn_ms: int) -> dict[str, Any]:
    """The published record: the lottery, the seed, the winners and the proof (algorithm,
    the full ordered entrant list, its count and digest). JSON-serialisable; it is what
    ``GET /api/v1/lotteries/{id}`` serves and what :func:`verify_record` checks.

    Raises:
        ValueError: the seed does not match the lottery's ``seed_hash``, or duplicates.
    """
    if seed_hash(seed) != lottery.seed_hash:
        raise ValueError("seed does not match the committed seed_hash")
    winners = draw(seed, entrants, lottery.winners_k)
    return {
        **lottery.public(),
        "state": "drawn",
        "drawn_ms": drawn_ms,
        "seed": seed,
        "winners": winners,
        "proof": {
            "algorithm": ALGORITHM,
            "entrants": list(entrants),
            "entrant_count": len(entrants),
            "entrants_sha256": entrants_digest(entrants),
        },
    }


def ended_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """``lottery.ended`` payload for a record: winners, seed and proof; the entrant list is
    inline up to :data:`PROOF_INLINE_MAX` entrants, else ``None`` with the record's URL."""
    proof = dict(record["proof"])
    if proof["entrant_count"] > PROOF_INLINE_MAX:
        proof["entrants"] = None
    return {
        "id": record["id"],
        "title": record.get("title", ""),
        "prize": record["prize"],
        "winners_k": record["winners_k"],
        "winners": record["winners"],
        "seed": record["seed"],
        "seed_hash": record["seed_hash"],
        "proof": proof,
        "record_url": f"/api/v1/lotteries/{record['id']}",
    }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of :func:`verify_record`: ``ok`` when every check passed; ``reasons``
    lists each failed check in words; ``recomputed`` the winners the draw gives (or None
    when the record is too broken to draw)."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    recomputed: list[str] | None = None


def verify_record(record: Any) -> Verdict:
    """Re-run the draw from a published record and compare.

    Checks, each adding a reason when it fails: the record has the fields; the algorithm is
    known; ``sha256(seed) == seed_hash``; entrants are unique strings; ``entrant_count`` and
    ``entrants_sha256`` (when present) match the list; the winners are distinct entrants,
    ``min(k, n)`` of them; and the recomputed draw equals the published winners, in order.
    Never raises on bad input: a malformed record is a failed verdict.
    """
    reasons: list[str] = []
    if not isinstance(record, Mapping):
        return Verdict(False, ["the record is not a JSON object"])
    if record.get("seed") is None:
        state = record.get("state", "unknown")
        return Verdict(False, [f"the lottery has not been drawn yet (state {state}): no seed published"])
    seed = record.get("seed")
    sh = record.get("seed_hash")
    proof = record.get("proof")
    winners = record.get("winners")
    k = record.get("winners_k")
    if not isinstance(seed, str) or not seed.isascii():
        reasons.append("'seed' is missing or not an ASCII string")
    if not isinstance(sh, str):
        reasons.append("'seed_hash' is missing")
    if not isinstance(proof, Mapping):
        return Verdict(False, [*reasons, "'proof' is missing"])
    entrants = proof.get("entrants")
    if proof.get("algorithm") != ALGORITHM:
        reasons.append(f"unknown algorithm {proof.get('algorithm')!r} (this verifier knows {ALGORITHM})")
    if not isinstance(entrants, list) or not all(isinstance(e, str) for e in entrants):
        return Verdict(False, [*reasons, "'proof.entrants' must be the list of entrant ids (fetch the full record by URL)"])
    if not isinstance(winners, list) or not all(isinstance(w, str) for w in winners):
        return Verdict(False, [*reasons, "'winners' must be a list of entrant ids"])
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        return Verdict(False, [*reasons, "'winners_k' must be a non-negative integer"])
    if reasons:
        return Verdict(False, reasons)
    assert isinstance(seed, str) and isinstance(sh, str)
    if seed_hash(seed) != sh:
        reasons.append(f"seed does not hash to the published seed_hash: sha256(seed) = {seed_hash(seed)}, seed_hash = {sh}")
    dupes = sorted({e for e in entrants if entrants.count(e) > 1}) if len(set(entrants)) != len(entrants) else []
    if dupes:
        reasons.append(f"entrants appear more than once: {dupes[:10]}")
    count = proof.get("entrant_count")
    if count is not None and count != len(entrants):
        reasons.append(f"entrant_count is {count} but the list holds {len(entrants)} entrants")
    digest = proof.get("entrants_sha256")
    if digest is not None and digest != entrants_digest(entrants):
        reasons.append("entrants_sha256 does not match the entrant list (the list was changed)")
    outsiders = [w for w in winners if w not in set(entrants)]
    if outsiders:
        reasons.append(f"winners who are not entrants: {outsiders[:10]}")
    if len(set(winners)) != len(winners):
        reasons.append("a winner appears more than once")
    if len(winners) != min(k, len(entrants)):
        reasons.append(f"{len(winners)} winners published, expected min(k={k}, entrants={len(entrants)})")
    if dupes:
        return Verdict(False, reasons)
    recomputed = draw(seed, entrants, k)
    if recomputed != winners:
        reasons.append(f"recomputed winners {recomputed[:20]} differ from the published {winners[:20]}")
    return Verdict(not reasons, reasons, recomputed)
