"""The payment boundary's rules (issue 19, part 4): intents, signed callbacks, what a callback
may change, and the ``PaymentProvider`` port. No I/O.

A buyer pays a reserved order through a **payment intent** held by a provider: the gateway
creates the intent for the order's amount (after its coupon, as ``/pay`` computes it), the
buyer confirms it at the provider, and the provider calls the gateway back
(``POST /api/v1/payments/webhook``). Only a *verified* ``payment.succeeded`` callback marks
the order paid, through the same atomic step the dev ``/pay`` uses
(:meth:`livecommerce.checkout.Checkout.pay`).

Intent life-cycle at the provider (:data:`INTENT_TRANSITIONS`)::

    requires_confirmation --succeed--> succeeded --refund--> refunded
          |      ^
          +-fail-+   (a declined attempt: payment.failed; the buyer may confirm again)

What a verified callback may change (:func:`decide_callback`):

* ``payment.succeeded`` for the intent recorded for its order, with the recorded amount:
  ``pay`` (idempotent: a duplicate answers ``already_paid`` and changes nothing); when the
  order's pay window had closed, the caller refunds the intent through the provider;
* ``payment.failed``: nothing (the order stays reserved until it is paid or times out; a
  failure after a success, delivered out of order, is ignored);
* ``refund.succeeded`` and any other type: nothing (recorded for ops only).

Signature scheme (Stripe's, in substance): the header is ``X-LC-Signature: t=<unix
seconds>,v1=<hex>`` where ``hex = HMAC-SHA256(secret, f"{t}." + body)``; several ``v1`` values
may be given (secret rotation) and one matching is enough. A callback is accepted only when a
``v1`` matches (``hmac.compare_digest``) and ``|now - t| <= window`` (default 300 s), so a
captured callback cannot be replayed later and a tampered body or timestamp fails.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .errors import BadFrame, Conflict

SIGNATURE_HEADER = "X-LC-Signature"
DEFAULT_REPLAY_WINDOW_S = 300
MIN_WEBHOOK_SECRET_BYTES = 32
MAX_HEADER_LEN = 1024

IntentState = Literal["requires_confirmation", "succeeded", "refunded"]
IntentStep = Literal["succeed", "fail", "refund"]

INTENT_TRANSITIONS: dict[tuple[IntentState, IntentStep], IntentState] = {
    ("requires_confirmation", "succeed"): "succeeded",
    ("requires_confirmation", "fail"): "requires_confirmation",
    ("succeeded", "refund"): "refunded",
}

PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
REFUND_SUCCEEDED = "refund.succeeded"
EVENT_TYPES = frozenset({PAYMENT_SUCCEEDED, PAYMENT_FAILED, REFUND_SUCCEEDED})

#: why a callback was refused before anything was read from it (answered 400/401)
Refusal = Literal["missing_signature", "malformed_signature", "stale_timestamp", "bad_signature"]
REFUSAL_STATUS: dict[str, int] = {"missing_signature": 401, "malformed_signature": 401, "stale_timestamp": 401,
                                  "bad_signature": 401}

#: what a verified callback does to the order
Action = Literal["pay", "ignore"]

#: the ledger event of an automatic refund (topic ``orders``, key the order id)
PAYMENT_REFUNDED = "payment.refunded"


def intent_step(state: IntentState, step: IntentStep) -> IntentState:
    """The intent's state after ``step``.

    Raises:
        Conflict: (``illegal_transition``) e.g. a failure after a success.
    """
    nxt = INTENT_TRANSITIONS.get((state, step))
    if nxt is None:
        raise Conflict(f"a {state} payment intent cannot {step}", code="illegal_transition")
    return nxt


def signed_payload(timestamp: int, body: bytes) -> bytes:
    return str(timestamp).encode() + b"." + body


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}." + body`` under ``secret``."""
    return hmac.new(secret.encode(), signed_payload(timestamp, body), hashlib.sha256).hexdigest()


def sign_header(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-LC-Signature`` value a provider sends with ``body`` at ``timestamp``."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def parse_header(header: str) -> tuple[int, list[str]]:
    """``(t, [v1, ...])`` of a signature header.

    Raises:
        BadFrame: (``malformed_signature``) no ``t``, no ``v1``, or not ``k=v`` pairs.
    """
    if len(header) > MAX_HEADER_LEN:
        raise BadFrame("signature header too long", code="malformed_signature")
    ts: int | None = None
    sigs: list[str] = []
    for part in header.split(","):
        k, sep, v = part.strip().partition("=")
        if not sep:
            raise BadFrame("signature header must be t=<unix>,v1=<hex>", code="malformed_signature")
        if k == "t":
            if not (v.isascii() and v.isdigit()) or len(v) > 12:
                raise BadFrame("signature timestamp must be unix seconds", code="malformed_signature")
            ts = int(v)
        elif k == "v1":
            sigs.append(v)
    if ts is None or not sigs:
        raise BadFrame("signature header must carry t= and v1=", code="malformed_signature")
    return ts, sigs


def verify(secret: str, header: str | None, body: bytes, *, now_s: int, window_s: int = DEFAULT_REPLAY_WINDOW_S) -> Refusal | None:
    """None when ``header`` signs exactly ``body`` under ``secret`` within ``window_s`` of
    ``now_s``; else why not. Every candidate signature is compared in constant time."""
    if not header:
        return "missing_signature"
    try:
        ts, sigs = parse_header(header)
    except BadFrame:
        return "malformed_signature"
    if abs(now_s - ts) > window_s:
        return "stale_timestamp"
    want = signature(secret, ts, body).encode()
    ok = False
    for s in sigs:  # no early exit: each comparison costs the same
        ok |= hmac.compare_digest(want, s.encode("utf-8", "replace"))
    return None if ok else "bad_signature"


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """A provider's callback body: ``{id, type, created, data: {intent_id, order_id, amount,
    currency, refund_id?}}``."""

    id: str
    type: str
    created: int
    intent_id: str
    order_id: str
    amount: int
    currency: str
    refund_id: str | None = None

    def body(self) -> bytes:
        return json.dumps({"id": self.id, "type": self.type, "created": self.created,
                           "data": {"intent_id": self.intent_id, "order_id": self.order_id, "amount": self.amount,
                                    "currency": self.currency, "refund_id": self.refund_id}},
                          separators=(",", ":"), sort_keys=True).encode()


def _ident(v: Any, name: str) -> str:
    if not isinstance(v, str) or not 1 <= len(v) <= 200:
        raise BadFrame(f"{name} must be a string of 1..200 characters", code="invalid_event")
    return v


def parse_event(body: bytes) -> CallbackEvent:
    """The event a verified body carries.

    Raises:
        BadFrame: (``invalid_event``) not JSON, or a field missing or of the wrong type.
    """
    try:
        d = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadFrame("callback body is not JSON", code="invalid_event") from None
    if not isinstance(d, Mapping) or not isinstance(d.get("data"), Mapping):
        raise BadFrame("callback body must be {id, type, created, data: {...}}", code="invalid_event")
    data = d["data"]
    amount, created = data.get("amount"), d.get("created")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise BadFrame("data.amount must be integer cents", code="invalid_event")
    if isinstance(created, bool) or not isinstance(created, int):
        raise BadFrame("created must be unix seconds", code="invalid_event")
    rid = data.get("refund_id")
    return CallbackEvent(id=_ident(d.get("id"), "id"), type=_ident(d.get("type"), "type"), created=created,
                         intent_id=_ident(data.get("intent_id"), "data.intent_id"),
                         order_id=_ident(data.get("order_id"), "data.order_id"), amount=amount,
                         currency=_ident(data.get("currency"), "data.currency"),
                         refund_id=None if rid is None else _ident(rid, "data.refund_id"))


@dataclass(frozen=True, slots=True)
class IntentRecord:
    """What the gateway recorded when it created an order's intent."""

    order_id: str
    intent_id: str
    amount: int
    discount: int
    coupon_id: str | None
    user_id: str
    created_ms: int
    currency: str = "CNY"
    client_secret: str = field(default="", repr=False)  # the buyer's, to confirm at the provider
    confirm_url: str = ""


def decide_callback(rec: IntentRecord | None, ev: CallbackEvent) -> tuple[Action, str]:
    """What a *verified* callback does: ``("pay", "")`` or ``("ignore", why)``.

    Raises:
        BadFrame: (``unknown_intent``) no intent recorded for the order, or another one;
            (``amount_mismatch``) a success for another amount than the intent's.
    """
    if rec is None or rec.intent_id != ev.intent_id:
        raise BadFrame(f"no payment intent {ev.intent_id} for order {ev.order_id}", code="unknown_intent")
    if ev.type != PAYMENT_SUCCEEDED:
        return "ignore", "not_a_success" if ev.type in EVENT_TYPES else "unknown_type"
    if ev.amount != rec.amount:
        raise BadFrame(f"payment of {ev.amount} for an intent of {rec.amount}", code="amount_mismatch")
    return "pay", ""


def late_refund_key(intent_id: str) -> str:
    """The provider idempotency key of a late success's automatic refund (one per intent)."""
    return f"late-{intent_id}"


@dataclass(frozen=True, slots=True)
class Intent:
    """An intent as the provider answers it."""

    id: str
    order_id: str
    amount: int
    currency: str
    status: str
    client_secret: str
    confirm_url: str


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    id: str
    intent_id: str
    amount: int
    status: str


class PaymentProvider(Protocol):
    """A payment provider, reached over the network.

    Contract: every call is idempotent on its ``idempotency_key`` (the provider answers the
    first result again), so a caller retries after a lost answer with the same key. Results
    arrive by signed callbacks (:func:`verify`), delivered at least once, in any order.
    """

    async def create_intent(self, *, order_id: str, amount: int, currency: str, idempotency_key: str) -> Intent:
        """Raises: Unavailable (the provider did not answer), BadFrame (it refused)."""
        ...

    async def refund(self, *, intent_id: str, amount: int, reason: str, idempotency_key: str) -> ProviderRefund:
        """Refund ``amount`` of a succeeded intent to the original method.

        Raises: Unavailable, BadFrame.
        """
        ...
