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
* ``gift.sent`` ``{user, room, host, gift_id, count, price, value, combo_id, balance}``;
  a fresh uuid per send. ``value = price * count`` coins is debited from ``user``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import BadFrame, Conflict

WALLET_SHARDS = 64  # all wallet keys of a user live in one of these hash slots
TOPIC = "gifts"
TOPUP = "wallet.topup"
GIFT_SENT = "gift.sent"
MAX_TOPUP = 10_000_000
OUTBOX_GRACE_MS = 5_000  # the sweeper leaves younger outbox entries to their gateway

DebitReject = Literal["insufficient_funds"]


class InsufficientFunds(Conflict):
    """The wallet holds fewer coins than the gift costs (HTTP 409, error frame)."""

    code = "insufficient_funds"


def shard_of(user: str) -> int:
    """The wallet shard of ``user`` (stable: crc32, the same in every process)."""
    return zlib.crc32(user.encode()) % WALLET_SHARDS


def decide_debit(balance: int, cost: int) -> DebitReject | None:
    """None means debit: a wallet never goes below zero."""
    return "insufficient_funds" if cost > balance else None


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
    return None
