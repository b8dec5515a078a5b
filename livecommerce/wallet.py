"""Wallets: coins bought by top-up and spent on gifts. No I/O.

Money flow (the invariant: a wallet's Redis balance equals the sum of its SQL ledger once
the wallet worker has drained the log):

1. A top-up (``POST /api/v1/wallets/{user}/topup``) or a gift (``gift`` command) changes
   the balance atomically in Redis (``wallet_redis``: one script per movement, never below
   zero: :func:`decide_debit` is the rule, ``wallet_gift.lua`` its atomic twin). The same
   script writes the movement's log event into the wallet shard's *outbox*.
2. The gateway appends that event to the durable log (topic ``gifts``, key the user) and
   then clears the outbox entry. If it crashes in between, the wallet worker's sweeper
   re-appends outbox entries older than a grace period (same event id, so a duplicate is
   absorbed downstream).
3. ``workers/wallet.py`` writes one ``wallet_ledger`` row per event, exactly once
   (``store.apply("wallet", event_id)``; the row's ``ref_event_id`` is the event id).

Events (topic ``gifts``, key = the wallet's user):

* ``wallet.topup`` ``{user, amount, balance, idempotency_key, by}``; id
  ``topup:<user>:<idempotency_key>``, so a retried top-up is one event.
* ``gift.sent`` ``{user, room, host, gift_id, count, price, value}``; a fresh uuid per
  send. ``value = price * count`` coins is debited from ``user``.
* Red packets (:mod:`livecommerce.redpackets`): ``redpacket.debit`` ``{user, amount,
  packet, room}`` (the drop, id ``rp:<packet>:debit``), ``redpacket.credit`` ``{user,
  amount, packet, room, by, index}`` (a grabbed share, id ``rp:<packet>:<index>``) and
  ``redpacket.refund`` ``{user, amount, packet, room}`` (what nobody grabbed, back to the
  dropper, id ``rp:<packet>:refund``).
* ``gift.reversed`` ``{gift_event, kind, user, host, room, value, share_bp, amount,
  refund_coins, reason, by}`` (:mod:`livecommerce.earnings`; id ``gift-rev:<gift event>``):
  ops reversed a gift; ``refund_coins`` (the gift's value for a ``refund``, 0 for a
  ``chargeback``) go back to the sender ``user``.

Gift batches (the gift storm): a gateway sends the gifts that arrived within one loop turn
to Redis as one script call per wallet shard (``wallet_gift_batch.lua``), which decides
each in arrival order exactly as :func:`decide_gift_batch` does: a gift that repeats a
``request_id`` already debited answers the first outcome (``dup``) and debits nothing, a
request id reused for another gift is ``idempotency_conflict``, then :func:`decide_debit`
and :func:`~livecommerce.gifts.next_combo`. Each debit writes its event to the outbox in
the same step, once.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import BadFrame, Conflict
from .gifts import Combo, next_combo

WALLET_SHARDS = 64  # all wallet keys of a user live in one of these hash slots
TOPIC = "gifts"
TOPUP = "wallet.topup"
GIFT_SENT = "gift.sent"
RP_DEBIT = "redpacket.debit"
RP_CREDIT = "redpacket.credit"
RP_REFUND = "redpacket.refund"
GIFT_REVERSED = "gift.reversed"
MAX_TOPUP = 10_000_000
OUTBOX_GRACE_MS = 5_000  # the sweeper leaves younger outbox entries to their gateway
GIFT_REQUEST_TTL_MS = 24 * 3600 * 1000  # how long a gift's request id answers its first outcome

DebitReject = Literal["insufficient_funds"]
GiftCode = Literal["ok", "dup", "insufficient_funds", "idempotency_conflict"]


class InsufficientFunds(Conflict):
    """The wallet holds fewer coins than the gift costs (HTTP 409, error frame)."""

    code = "insufficient_funds"


def shard_of(user: str) -> int:
    """The wallet shard of ``user`` (stable: crc32, the same in every process)."""
    return zlib.crc32(user.encode()) % WALLET_SHARDS


def decide_debit(balance: int, cost: int) -> DebitReject | None:
    """None means debit: a wallet never goes below zero."""
    return "insufficient_funds" if cost > balance else None


@dataclass(frozen=True, slots=True)
class GiftDebit:
    """One gift of a batch as the batch rule sees it. ``combo_key`` names the user's running
    combo of this gift in this room; ``request_key`` is the user-scoped request id
    (:func:`gift_request_key`, None without a request id) and ``fingerprint`` what the
    request asked for (:func:`gift_fingerprint`): a repeated request must ask the same."""

    user: str
    cost: int
    count: int
    combo_key: str
    requested: str | None
    new_combo_id: str
    event_id: str
    request_key: str | None = None
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class GiftDecision:
    """What :func:`decide_gift_batch` says of one gift: ``balance`` is the sender's coins
    right after it (for ``dup``: right after the first debit of the request), ``combo`` and
    ``event_id`` those of the debit (None when refused)."""

    code: GiftCode
    balance: int
    combo: Combo | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class GiftShard:
    """What a batch reads of one wallet shard: balances, running combos (by combo key,
    those within their window) and the request ids already debited (request key ->
    ``(fingerprint, first decision)``)."""

    balances: Mapping[str, int]
    combos: Mapping[str, Combo]
    requests: Mapping[str, tuple[str, GiftDecision]]


def gift_request_key(user: str, request_id: str) -> str:
    """A gift's request id scoped to its user (another user's equal id is another request)."""
    return f"{len(user)}:{user}:{request_id}"


def gift_fingerprint(room: str, gift_id: str, count: int, combo_id: str | None) -> str:
    """What a gift request asks for; a retry with the same request id must ask the same.
    (Room, gift and combo ids hold no newline: the script stores it newline-separated.)"""
    return f"{room}|{gift_id}|{count}|{combo_id or ''}"


def decide_gift_batch(shard: GiftShard, gifts: Sequence[GiftDebit]) -> tuple[list[GiftDecision], GiftShard]:
    """Decide a batch of gifts of one wallet shard in arrival order, each as a lone gift
    would be decided right after the ones before it (a group commit changes no answer).
    Returns the decisions and the shard after the batch.

    Per gift, in this order: a request key already debited (also earlier in this batch)
    answers ``dup`` with its first decision when the fingerprint matches, else
    ``idempotency_conflict``, and nothing moves; then :func:`decide_debit` on the sender's
    balance; a debit takes ``cost`` coins, grows the combo (:func:`next_combo`) and records
    the request. Refused gifts record nothing, so a retry after a top-up may succeed.

    The Lua twin is ``wallet_gift_batch.lua`` (``tests/test_wallet_batch.py``).
    """
    balances = dict(shard.balances)
    combos = dict(shard.combos)
    requests = dict(shard.requests)
    out: list[GiftDecision] = []
    for g in gifts:
        if g.request_key is not None:
            first = requests.get(g.request_key)
            if first is not None:
                fp, d = first
                out.append(GiftDecision("dup", d.balance, d.combo, d.event_id) if fp == g.fingerprint
                           else GiftDecision("idempotency_conflict", 0))
                continue
        balance = balances.get(g.user, 0)
        if decide_debit(balance, g.cost) is not None:
            out.append(GiftDecision("insufficient_funds", balance))
            continue
        balance -= g.cost
        balances[g.user] = balance
        combo = combos[g.combo_key] = next_combo(combos.get(g.combo_key), count=g.count, requested=g.requested,
                                                 new_id=g.new_combo_id)
        d = GiftDecision("ok", balance, combo, g.event_id)
        if g.request_key is not None:
            requests[g.request_key] = (g.fingerprint, d)
        out.append(d)
    return out, GiftShard(balances, combos, requests)


def topup_event_id(user: str, idempotency_key: str) -> str:
    """At most 6 + 64 + 1 + 48 = 119 characters: fits the ledgers' 128-character ids."""
    return f"topup:{user}:{idempotency_key}"


@dataclass(frozen=True, slots=True)
class Topup:
    amount: int
    idempotency_key: str


def parse_topup(body: Mapping[str, Any], header_key: str | None = None) -> Topup:
    """Validate a top-up body ``{amount, idempotency_key}`` (the key may come in the
    ``Idempotency-Key`` header instead).

    Raises:
        BadFrame: (``invalid``) amount not an integer in 1..MAX_TOPUP, or a missing or bad key.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object", code="invalid")
    amount = body.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= MAX_TOPUP:
        raise BadFrame(f"'amount' must be an integer number of coins in 1..{MAX_TOPUP}", code="invalid")
    key = body.get("idempotency_key", header_key)
    if not isinstance(key, str) or not 0 < len(key) <= 48 or not all(c.isalnum() or c in "-_." for c in key):
        raise BadFrame("'idempotency_key' (or the Idempotency-Key header) must be 1..48 letters, digits, - _ .", code="invalid")
    return Topup(amount, key)


def ledger_delta(event_type: str, data: Mapping[str, Any]) -> tuple[str, int, str] | None:
    """The wallet ledger row an event makes: ``(user, delta, reason)``, or None for events
    that move no coins."""
    if event_type == TOPUP:
        return str(data["user"]), int(data["amount"]), "topup"
    if event_type == GIFT_SENT:
        return str(data["user"]), -int(data["value"]), "gift.sent"
    if event_type == RP_DEBIT:
        return str(data["user"]), -int(data["amount"]), RP_DEBIT
    if event_type in (RP_CREDIT, RP_REFUND):
        return str(data["user"]), int(data["amount"]), event_type
    if event_type == GIFT_REVERSED and int(data.get("refund_coins") or 0) > 0:
        return str(data["user"]), int(data["refund_coins"]), "gift.refund"
    return None
