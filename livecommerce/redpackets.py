"""Red packets (红包): a host or viewer drops N coins split among K grabbers. No I/O.

The clock, ids and the secret seed are arguments. The Redis adapter
(:mod:`livecommerce.redpackets_redis`) keeps a packet, its shares and its grabs in one hash
slot and moves the coins; the gateway (``gateway/redpackets.py``) drops and grabs; the keeper
worker (``workers/redpackets.py``) ends packets at expiry, refunds what nobody grabbed and
announces the result.

Life-cycle (all transition logic lives in :data:`PACKET_TRANSITIONS`)::

    open --end--> ended --announce--> announced

* ``open``: grabs accepted until ``expires_ms`` or until every share is taken.
* ``ended``: one atomic step (the keeper's) froze the grabs and wrote the refund of the
  coins nobody grabbed as a pending credit to the dropper (exactly once: the step is a
  compare-and-set in the packet's slot).
* ``announced``: ``redpacket.ended`` was published (at least once; the leased announcer
  republishes the same summary after a crash, never a new one).

Money. The drop debits the dropper's wallet by ``amount`` in the same script that stores
the packet (the packet lives in the dropper's wallet shard, ``{wallet:N}``), with the
``redpacket.debit`` ledger event in that shard's outbox. Each grab takes the next share in
one script of the packet's slot and records a *pending credit*; the credit is then applied
to the grabber's wallet (another shard) by a script that credits each credit id once and
writes the ``redpacket.credit`` ledger event to the grabber's outbox. A process killed
between the two leaves the pending credit behind; the keeper applies it (the credit id
makes a second application a no-op). The refund is a pending credit of the dropper, applied
the same way (``redpacket.refund``). So, once everything has drained::

    amount == sum(shares grabbed) + refunded        (per packet)
    every Redis balance == the sum of its SQL ledger rows

Verifiable split, algorithm ``lc-redpacket-v1``. At the drop a secret ``seed`` (64 hex
characters) is drawn and only ``seed_hash = sha256(seed as ASCII).hexdigest()`` is published
(``redpacket.dropped``). The shares are :func:`split` ``(seed, packet_id, amount, count)``,
fixed at the drop, and the i-th grab (0-based, in the order the packet's script took them)
gets share i. At the end the seed and the shares are published with the grabs:

1. ``key = HMAC-SHA256(key=seed.encode("ascii"),
   msg=f"lc-redpacket-v1|{packet_id}|{amount}|{count}".encode("ascii"))``.
2. A stream: block ``c`` (c = 0, 1, ...) is ``HMAC-SHA256(key, c as 8-byte big endian)``;
   ``below(m)`` takes the next block as a 256-bit big-endian integer ``x``, rejects it while
   ``x >= (2**256 // m) * m`` (no modulo bias) and returns ``x % m``.
3. Cut points (Floyd's sampling of ``count - 1`` distinct integers of ``1 .. amount - 1``):
   ``S = {}``; for ``j`` in ``amount - count + 1 .. amount - 1``: ``t = 1 + below(j)``; add
   ``j`` to S if ``t`` is in S, else add ``t``.
4. Sort S; the shares are the gaps ``c1 - 0, c2 - c1, ..., amount - c_last``: every
   composition of ``amount`` into ``count`` positive parts is equally likely, the shares sum
   to ``amount`` exactly and none is zero.

Because the seed was committed before any grab and the share order is fixed by it, neither
the dropper nor a grabber can choose a bigger share by timing; anyone can re-run it with
:func:`verify_record` (``livecommerce redpacket verify FILE|URL``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import BadFrame, Conflict
from .lottery import HmacStream
from .lottery import new_seed as new_seed  # the same commitment as the lottery draw (re-exported)
from .lottery import seed_hash as seed_hash
from .wallet import RP_CREDIT, RP_DEBIT, RP_REFUND, WALLET_SHARDS

ALGORITHM = "lc-redpacket-v1"

PacketState = Literal["open", "ended", "announced"]
PacketStep = Literal["end", "announce"]
# Expected grab outcomes are values; each string is the wire error code.
GrabReject = Literal["not_found", "expired", "own_packet", "followers_only", "password_required"]
GrabCode = Literal["ok", "already_grabbed", "not_found", "ended", "expired", "empty"]

PACKET_TRANSITIONS: dict[tuple[PacketState, PacketStep], PacketState] = {
    ("open", "end"): "ended",
    ("ended", "announce"): "announced",
}
_ALREADY: dict[tuple[PacketState, PacketStep], PacketState] = {
    ("ended", "end"): "ended",
    ("announced", "end"): "announced",
    ("announced", "announce"): "announced",
}

MAX_COUNT = 500
MAX_AMOUNT = 1_000_000
MIN_DURATION_S = 5
MAX_DURATION_S = 24 * 3600
DEFAULT_DURATION_S = 300
MAX_PASSWORD_LEN = 32
MAX_GREETING_LEN = 60

# the wallet ledger's events (topic ``gifts``, applied by the wallet worker)
DEBIT, CREDIT, REFUND = RP_DEBIT, RP_CREDIT, RP_REFUND

GRAB_MESSAGES: dict[str, str] = {
    "not_found": "no such red packet",
    "expired": "the red packet has expired",
    "ended": "the red packet has ended",
    "empty": "every share of this red packet has been grabbed",
    "own_packet": "you cannot grab your own red packet",
    "followers_only": "this red packet is for the host's followers: follow the host to grab it",
    "password_required": "comment the red packet's password to grab it",
}


def step(state: PacketState, s: PacketStep) -> tuple[PacketState, bool]:
    """Apply one life-cycle step: ``(new state, changed)``.

    Raises:
        Conflict: the step is illegal from ``state`` (``announce`` on an open packet).
    """
    nxt = PACKET_TRANSITIONS.get((state, s))
    if nxt is not None:
        return nxt, True
    same = _ALREADY.get((state, s))
    if same is not None:
        return same, False
    raise Conflict(f"red packet is {state}; cannot {s}", code="conflict")


# ---------------------------------------------------------------- ids
def packet_id(shard: int, token: str) -> str:
    """A packet's id names its slot: ``<shard>-<token>`` (the dropper's wallet shard), so a
    grab finds the packet's keys without a lookup."""
    return f"{shard}-{token}"


def shard_of_packet(pid: str) -> int | None:
    """The wallet shard a packet id names, or None for an id that is no packet's."""
    head, sep, tail = pid.partition("-")
    if not sep or not head.isdigit() or len(head) > 2 or not tail or len(pid) > 64:
        return None
    if not all(c.isalnum() for c in tail):
        return None
    n = int(head)
    return n if n < WALLET_SHARDS else None


def debit_event_id(pid: str) -> str:
    return f"rp:{pid}:debit"


def credit_id(pid: str, index: int) -> str:
    """The credit of the ``index``-th grab (0-based); also its ledger event id."""
    return f"rp:{pid}:{index}"


def refund_id(pid: str) -> str:
    return f"rp:{pid}:refund"


# ---------------------------------------------------------------- definition
@dataclass(frozen=True, slots=True)
class RedPacket:
    """A packet as defined at the drop. ``host`` is the room's host (followers-only packets
    are for the host's followers); ``seed_hash`` is public, the seed is the adapter's."""

    id: str
    room: str
    by: str
    host: str
    amount: int
    count: int
    created_ms: int
    expires_ms: int
    seed_hash: str
    password: str = ""
    followers_only: bool = False
    greeting: str = ""

    def public(self) -> dict[str, Any]:
        """What ``redpacket.dropped``, ``welcome`` and the HTTP API show (no seed, no shares).
        The password is shown: a password packet is grabbed by commenting it (口令红包)."""
        return {
            "id": self.id,
            "room": self.room,
            "by": self.by,
            "amount": self.amount,
            "count": self.count,
            "created_ms": self.created_ms,
            "expires_ms": self.expires_ms,
            "password": self.password or None,
            "followers_only": self.followers_only,
            "greeting": self.greeting,
            "seed_hash": self.seed_hash,
            "algorithm": ALGORITHM,
        }


@dataclass(frozen=True, slots=True)
class DropRequest:
    """A validated drop body (the packet's id and seed are the caller's to add)."""

    amount: int
    count: int
    duration_s: int
    request_id: str
    password: str = ""
    followers_only: bool = False
    greeting: str = ""


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadFrame(f"'{name}' must be an integer in {lo}..{hi}", code="invalid")
    return v


def parse_drop(body: Mapping[str, Any]) -> DropRequest:
    """Validate a drop body: ``amount`` (coins, ``count``..1,000,000), ``count`` (shares,
    1..500), ``request_id`` (1..48 letters, digits, ``- _ .``: a retry with it is the same
    drop), optional ``duration_s`` (5 s .. 1 day, default 300), ``password`` (1..32
    characters: grabbed by commenting it), ``followers_only`` (the host's followers only),
    ``greeting`` (up to 60 characters).

    Raises:
        BadFrame: (``invalid``) a missing or malformed field, or fewer coins than shares.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object", code="invalid")
    count = _int(body.get("count"), "count", 1, MAX_COUNT)
    amount = _int(body.get("amount"), "amount", 1, MAX_AMOUNT)
    if amount < count:
        raise BadFrame(f"'amount' ({amount}) must be at least 'count' ({count}): no share may be zero", code="invalid")
    rid = body.get("request_id")
    if not isinstance(rid, str) or not 0 < len(rid) <= 48 or not all(c.isalnum() or c in "-_." for c in rid):
        raise BadFrame("'request_id' must be 1..48 letters, digits, - _ . (a retry with it is the same drop)", code="invalid")
    duration = _int(body.get("duration_s", DEFAULT_DURATION_S), "duration_s", MIN_DURATION_S, MAX_DURATION_S)
    password = body.get("password") or ""
    if not isinstance(password, str) or len(password.strip()) > MAX_PASSWORD_LEN or (password and not password.strip()):
        raise BadFrame(f"'password' must be 1..{MAX_PASSWORD_LEN} characters", code="invalid")
    fo = body.get("followers_only", False)
    if not isinstance(fo, bool):
        raise BadFrame("'followers_only' must be true or false", code="invalid")
    greeting = body.get("greeting", "")
    if not isinstance(greeting, str) or len(greeting) > MAX_GREETING_LEN:
        raise BadFrame(f"'greeting' must be a string of at most {MAX_GREETING_LEN} characters", code="invalid")
    return DropRequest(amount, count, duration, rid, password.strip(), fo, greeting)


def new_packet(req: DropRequest, *, id: str, room: str, by: str, host: str, now_ms: int, seed: str) -> RedPacket:
    """The packet a validated drop defines."""
    return RedPacket(id=id, room=room, by=by, host=host, amount=req.amount, count=req.count, created_ms=now_ms,
                     expires_ms=now_ms + req.duration_s * 1000, seed_hash=seed_hash(seed), password=req.password,
                     followers_only=req.followers_only, greeting=req.greeting)


def drop_fingerprint(room: str, req: DropRequest) -> str:
    """What a drop request asks for; a retry with the same ``request_id`` must ask the same."""
    return f"{room}|{req.amount}|{req.count}|{req.duration_s}|{req.password}|{int(req.followers_only)}|{req.greeting}"


# ---------------------------------------------------------------- grabbing
def matches_password(password: str, text: str) -> bool:
    """A comment grabs a password packet when it contains the password (case-folded)."""
    return bool(password) and password.casefold() in text.casefold()


def grab_reject(packet: RedPacket | None, *, user: str, now_ms: int, following: bool, password: str | None = None,
                text: str | None = None) -> GrabReject | None:
    """None means: try to grab (the packet's script still judges state, shares left and a
    second grab atomically). Time is judged first, so a late grabber hears ``expired``.

    A password packet is grabbed by a comment containing the password (``text``) or by a
    grab that gives it (``password``); a followers-only packet by the room host's followers
    (``following``). Nobody grabs their own packet.
    """
    if packet is None:
        return "not_found"
    if now_ms >= packet.expires_ms:
        return "expired"
    if user == packet.by:
        return "own_packet"
    if packet.password:
        given = password is not None and password.strip().casefold() == packet.password.casefold()
        if not given and not (text is not None and matches_password(packet.password, text)):
            return "password_required"
    if packet.followers_only and not following:
        return "followers_only"
    return None


@dataclass(frozen=True, slots=True)
class PacketView:
    """What the grab and end scripts read of a packet: its state (None: no such packet), its
    expiry, shares and the shares taken (``grabbed``, ``taken`` coins), and the grabbing
    user's earlier share ``(index, amount)`` if any."""

    state: PacketState | None
    expires_ms: int = 0
    amount: int = 0
    count: int = 0
    grabbed: int = 0
    taken: int = 0
    prior: tuple[int, int] | None = None


def decide_grab(view: PacketView, *, now_ms: int) -> GrabCode:
    """The grab script's answer (``redpackets_grab.lua`` is its atomic twin, parity-tested):
    an earlier grab by the user answers first (``already_grabbed``, its first share), so a
    retry after the end still hears its share; then the state, the expiry (the caller's
    clock) and the shares left. ``ok`` takes share number ``grabbed``."""
    if view.state is None:
        return "not_found"
    if view.prior is not None:
        return "already_grabbed"
    if view.state != "open":
        return "ended"
    if now_ms >= view.expires_ms:
        return "expired"
    if view.grabbed >= view.count:
        return "empty"
    return "ok"


def decide_end(view: PacketView, *, now_ms: int) -> int | None:
    """The keeper's end step (``redpackets_step.lua``'s first half): None while the packet is
    not open or not due (expiry ahead and shares left); else the refund, ``amount - taken``
    coins back to the dropper (0: every share was taken)."""
    if view.state != "open" or (now_ms < view.expires_ms and view.grabbed < view.count):
        return None
    return view.amount - view.taken


# ---------------------------------------------------------------- the split
def split(seed: str, pid: str, amount: int, count: int) -> list[int]:
    """The packet's shares in grab order, algorithm ``lc-redpacket-v1`` (module docstring):
    ``count`` positive integers summing to ``amount``.

    Raises:
        ValueError: ``count`` < 1 or ``amount`` < ``count``.
    """
    if count < 1 or amount < count:
        raise ValueError("a red packet needs 1 <= count <= amount")
    key = hmac.new(seed.encode("ascii"), f"{ALGORITHM}|{pid}|{amount}|{count}".encode("ascii"), hashlib.sha256).digest()
    stream = HmacStream(key)
    cuts: set[int] = set()
    for j in range(amount - count + 1, amount):
        t = 1 + stream.below(j)
        cuts.add(j if t in cuts else t)
    edges = [0, *sorted(cuts), amount]
    return [b - a for a, b in itertools.pairwise(edges)]


# ---------------------------------------------------------------- the record
@dataclass(frozen=True, slots=True)
class Grab:
    """One grab as the packet's script recorded it: the ``index``-th (0-based) share."""

    user: str
    amount: int
    index: int
    at_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "amount": self.amount, "index": self.index, "at_ms": self.at_ms}


def best_luck(grabs: Sequence[Grab]) -> Grab | None:
    """手气最佳: the biggest share; the earliest grab among equals."""
    return max(grabs, key=lambda g: (g.amount, -g.index), default=None)


def build_record(packet: RedPacket, *, state: PacketState, grabs: Sequence[Grab], seed: str | None,
                 refunded: int | None, ended_ms: int | None) -> dict[str, Any]:
    """The public record: the packet, its grabs in order, and once ended the seed, the
    shares and the refund (what :func:`verify_record` checks). JSON-serialisable."""
    ordered = sorted(grabs, key=lambda g: g.index)
    best = best_luck(ordered)
    rec: dict[str, Any] = {
        **packet.public(),
        "state": state,
        "grabs": [g.to_dict() for g in ordered],
        "grabbed": len(ordered),
        "grabbed_amount": sum(g.amount for g in ordered),
        "best": best.to_dict() if best is not None else None,
        "record_url": f"/api/v1/redpackets/{packet.id}",
    }
    if state != "open" and seed is not None:
        rec.update(seed=seed, shares=split(seed, packet.id, packet.amount, packet.count), refunded=refunded or 0,
                   ended_ms=ended_ms)
    return rec


def ended_event(record: Mapping[str, Any]) -> dict[str, Any]:
    """``redpacket.ended``: the summary (how many grabbed how much, the best luck, the
    refund) with the seed, so anyone can check the split; the grabs are at ``record_url``."""
    return {k: record.get(k) for k in ("id", "room", "by", "amount", "count", "grabbed", "grabbed_amount", "refunded",
                                       "best", "seed", "seed_hash", "algorithm", "ended_ms", "record_url")}


@dataclass(frozen=True, slots=True)
class Verdict:
    """:func:`verify_record`'s outcome: ``ok`` when every check passed; ``reasons`` names
    each failed check; ``recomputed`` the shares the seed gives (None if it cannot be run)."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    recomputed: list[int] | None = None


def verify_record(record: Any) -> Verdict:
    """Re-run the split from a published record and compare. Checks: the seed hashes to
    ``seed_hash``; the algorithm is known; the recomputed shares equal the published ones;
    the i-th grab got share i; nobody grabbed twice; at most ``count`` grabs; the grabs and
    the refund add up to ``amount``. Never raises: a malformed record is a failed verdict."""
    if not isinstance(record, Mapping):
        return Verdict(False, ["the record is not a JSON object"])
    seed = record.get("seed")
    if seed is None:
        return Verdict(False, [f"the red packet has not ended yet (state {record.get('state', 'unknown')}): no seed published"])
    reasons: list[str] = []
    pid, amount, count = record.get("id"), record.get("amount"), record.get("count")
    grabs, shares, refunded = record.get("grabs"), record.get("shares"), record.get("refunded")
    if not isinstance(seed, str) or not seed.isascii():
        return Verdict(False, ["'seed' must be an ASCII string"])
    if record.get("algorithm") != ALGORITHM:
        reasons.append(f"unknown algorithm {record.get('algorithm')!r} (this verifier knows {ALGORITHM})")
    if not isinstance(pid, str) or not all(isinstance(x, int) and not isinstance(x, bool) for x in (amount, count)):
        return Verdict(False, [*reasons, "'id', 'amount' and 'count' must be a string and two integers"])
    assert isinstance(amount, int) and isinstance(count, int)
    if not 1 <= count <= amount:
        return Verdict(False, [*reasons, f"'count' ({count}) must be in 1..amount ({amount})"])
    if not isinstance(grabs, list) or not all(isinstance(g, Mapping) for g in grabs):
        return Verdict(False, [*reasons, "'grabs' must be a list of {user, amount, index}"])
    if seed_hash(seed) != record.get("seed_hash"):
        reasons.append(f"seed does not hash to the published seed_hash: sha256(seed) = {seed_hash(seed)}")
    recomputed = split(seed, pid, amount, count)
    if shares is not None and shares != recomputed:
        reasons.append("the published shares differ from the shares the seed gives")
    users = [g.get("user") for g in grabs]
    if len(set(users)) != len(users):
        reasons.append("a user grabbed more than once")
    if len(grabs) > count:
        reasons.append(f"{len(grabs)} grabs of a packet of {count} shares")
    for i, g in enumerate(grabs[:count]):
        if g.get("index") != i or g.get("amount") != recomputed[i]:
            reasons.append(f"grab {i} ({g.get('user')!r}) got {g.get('amount')!r} at index {g.get('index')!r}; "
                           f"share {i} is {recomputed[i]}")
            break
    total = sum(int(g.get("amount") or 0) for g in grabs)
    if not isinstance(refunded, int) or total + refunded != amount:
        reasons.append(f"grabbed {total} + refunded {refunded!r} != amount {amount}")
    return Verdict(not reasons, reasons, recomputed)
