"""The payment boundary at the edge: payment intents, the provider's signed callbacks, and the
ops' view of both (the rules are :mod:`livecommerce.payments`; docs/commerce.md).

* ``POST /api/v1/orders/{order}/payments {coupon_id?}`` (the buyer): the order's payment
  intent at the provider, for the amount ``/pay`` would take (after the coupon, which is
  locked for the order now): ``{intent_id, client_secret, confirm_url, amount, discount,
  currency, pay_by_ms}``; 201 the first time, 200 with the same intent after (one intent per
  order). 409 ``already_paid`` / ``already_cancelled`` / ``expired``; 403
  ``payments_disabled`` when no provider is configured.
* ``POST /api/v1/payments/webhook`` (the provider; no token: the ``X-LC-Signature``
  header is the credential). Refused, nothing changed, logged and listed for ops: 401
  ``missing_signature`` / ``malformed_signature`` / ``stale_timestamp`` / ``bad_signature``,
  400 ``invalid_event`` / ``unknown_intent`` / ``amount_mismatch``. A verified
  ``payment.succeeded`` pays the order through :meth:`Checkout.pay` (the dev ``/pay``'s
  atomic step: stock, hold, coupon, log exactly as there); a repeat answers ``already_paid``.
  When the order's pay window had closed, the intent is refunded through the provider (one
  refund per intent: its idempotency key), recorded, and ledgered on the log
  (``payment.refunded``). Anything else verified is recorded and changes nothing. A
  failure of Redis, the log or the provider answers 503, and the provider's retry completes
  the step (every step above is idempotent).
* ``GET /api/v1/payments/callbacks`` and ``GET /api/v1/payments/refunds`` (ops, paged,
  newest first); ``GET /api/v1/orders/{order}/payments`` (the buyer or ops): the order's
  intent and provider refunds.
* ``welcome`` carries ``payments``: ``provider``, ``dev`` (no provider, the dev ``/pay`` on)
  or ``none``; the viewer page pays the way it says (docs/commerce.md, "Pages").
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from aiohttp import web

from livecommerce.auth import Identity
from livecommerce.cart import is_cart_order
from livecommerce.checkout import Checkout, sale_of
from livecommerce.errors import BadFrame, Conflict, Forbidden, NotFound, Unauthorized
from livecommerce.log import Log
from livecommerce.payments import (
    PAYMENT_REFUNDED,
    SIGNATURE_HEADER,
    IntentRecord,
    PaymentProvider,
    decide_callback,
    late_refund_key,
    parse_event,
    verify,
)
from livecommerce.payments_redis import PaymentsRedis

from .core import Gateway
from .validation import page, read_object

log = logging.getLogger("livecommerce.gateway.payments")


class Payments:
    """Payment intents, the webhook, and what ops see of them."""

    def __init__(self, gw: Gateway, checkout: Checkout, records: PaymentsRedis, log: Log,
                 provider: PaymentProvider | None) -> None:
        self.gw = gw
        self.checkout = checkout
        self.records = records
        self.log = log
        self.provider = provider
        self._secret = gw.s.payment_webhook_secret  # never logged

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        """Welcome hook: ``payments``, how this node takes payments (the viewer page's Pay
        follows it): ``provider`` (an intent, confirmed at the provider, paid on its signed
        callback), ``dev`` (the provider-less ``/pay`` of ``livecommerce dev``) or ``none``."""
        return {"payments": "provider" if self.provider is not None else "dev" if self.gw.s.dev_pay else "none"}

    # ---- the buyer
    async def create(self, user: str | None, order_id: str, coupon_id: str | None) -> tuple[dict[str, Any], bool]:
        """The order's intent, ``(body, created)``.

        Raises:
            Forbidden: (``payments_disabled``) no provider is configured.
            Unavailable: the provider or Redis down.
            NotFound: no such order of ``user``. Conflict: the order is not payable.
        """
        if self.provider is None:
            raise Forbidden("no payment provider is configured on this node (LC_PAYMENT_PROVIDER_URL): payments are off",
                            code="payments_disabled")
        if is_cart_order(order_id):
            if coupon_id:
                raise BadFrame("a cart order's coupons are chosen at checkout", code="coupon_at_checkout")
            return await self._create_cart(user, order_id)
        hold = await self.checkout.sales.hold(sale_of(order_id), order_id)
        if hold is None or (user is not None and hold.user != user):
            raise NotFound(f"no order {order_id}")
        rec = await self.records.intent(order_id)
        if rec is not None:
            return self._intent_body(rec, hold.pay_by_ms), False
        now = self.gw.now_ms()
        if hold.state != "reserved":
            raise Conflict(f"order {order_id} is {hold.state}", code="already_" + hold.state)
        if now >= hold.pay_by_ms:
            raise Conflict(f"order {order_id}'s pay window closed", code="expired")
        sale = await self.checkout.sale(sale_of(order_id))
        gross = hold.qty * sale.price
        discount = 0
        if coupon_id:
            if self.checkout.coupons is None:
                raise BadFrame("coupons are not enabled on this node", code="coupon_not_usable")
            discount = min(gross, await self.checkout.coupons.lock_for_order(hold.user, coupon_id, order_id, gross))
        amount = gross - discount
        if amount <= 0:
            return await self._settle_free(order_id, hold.user, coupon_id, hold.pay_by_ms, now), True
        intent = await self.provider.create_intent(order_id=order_id, amount=amount, currency=self.gw.s.payment_currency,
                                                   idempotency_key=f"order-{order_id}")
        rec = await self.records.put_intent(IntentRecord(
            order_id=order_id, intent_id=intent.id, amount=intent.amount, discount=discount, coupon_id=coupon_id or None,
            user_id=hold.user, created_ms=now, currency=intent.currency, client_secret=intent.client_secret,
            confirm_url=intent.confirm_url))
        log.info("payments.intent_created", extra={"order": order_id, "intent": rec.intent_id, "amount": rec.amount})
        return self._intent_body(rec, hold.pay_by_ms), True

    async def _create_cart(self, user: str | None, order_id: str) -> tuple[dict[str, Any], bool]:
        """A cart order's intent: its amount was fixed at checkout (coupons locked then)."""
        assert self.provider is not None
        o = await self.checkout.cart.order(order_id, user)
        rec = await self.records.intent(order_id)
        if rec is not None:
            return self._intent_body(rec, o.pay_by_ms), False
        now = self.gw.now_ms()
        if o.state != "reserved":
            raise Conflict(f"order {order_id} is {o.state}", code="already_" + o.state)
        if now >= o.pay_by_ms:
            raise Conflict(f"order {order_id}'s pay window closed", code="expired")
        if o.amount <= 0:
            return await self._settle_free(order_id, o.user, None, o.pay_by_ms, now), True
        intent = await self.provider.create_intent(order_id=order_id, amount=o.amount, currency=self.gw.s.payment_currency,
                                                   idempotency_key=f"order-{order_id}")
        rec = await self.records.put_intent(IntentRecord(
            order_id=order_id, intent_id=intent.id, amount=intent.amount, discount=o.discount, coupon_id=None,
            user_id=o.user, created_ms=now, currency=intent.currency, client_secret=intent.client_secret,
            confirm_url=intent.confirm_url))
        return self._intent_body(rec, o.pay_by_ms), True

    async def _settle_free(self, order_id: str, user: str, coupon_id: str | None, pay_by_ms: int, now_ms: int
                           ) -> dict[str, Any]:
        """An order its coupons cover entirely: nothing to charge, so no intent; it is paid
        now by the same step a verified callback runs (the coupon consumed, ``order.paid``
        on the log), exactly once (a repeat finds it paid: 409 ``already_paid``).

        Raises:
            Conflict: ``expired`` / ``already_cancelled``: the order ended before this.
        """
        res = await self.checkout.pay(order_id=order_id, user=user, now_ms=now_ms, coupon_id=coupon_id)
        if res.outcome in ("already_cancelled", "expired"):
            raise Conflict(f"order {order_id} is {res.outcome.replace('already_', '')}: no payment taken", code=res.outcome)
        log.info("payments.settled_without_provider", extra={"order": order_id, "discount": res.discount})
        return {"order_id": order_id, "intent_id": None, "amount": 0, "discount": res.discount, "coupon_id": coupon_id,
                "currency": self.gw.s.payment_currency, "pay_by_ms": pay_by_ms, "outcome": res.outcome}

    @staticmethod
    def _intent_body(rec: IntentRecord, pay_by_ms: int) -> dict[str, Any]:
        return {"order_id": rec.order_id, "intent_id": rec.intent_id, "client_secret": rec.client_secret,
                "confirm_url": rec.confirm_url, "amount": rec.amount, "discount": rec.discount, "coupon_id": rec.coupon_id,
                "currency": rec.currency, "pay_by_ms": pay_by_ms}

    # ---- the provider
    async def callback(self, raw: bytes, header: str | None) -> dict[str, Any]:
        """Verify and apply one callback; the answer's body.

        Raises:
            Unauthorized: the signature is missing, malformed, stale or wrong.
            BadFrame: ``invalid_event``, ``unknown_intent``, ``amount_mismatch``.
            Unavailable: Redis, the log or the provider down (the provider retries).
        """
        now_ms = self.gw.now_ms()
        entry: dict[str, Any] = {"ts": now_ms, "verified": False, "bytes": len(raw)}
        refusal = verify(self._secret, header, raw, now_s=int(time.time()), window_s=self.gw.s.payment_replay_window_s) \
            if self._secret else "bad_signature"
        if refusal is not None:
            entry |= {"outcome": "refused", "reason": refusal}
            await self._refuse(entry, Unauthorized(f"callback refused: {refusal.replace('_', ' ')}", code=refusal))
        entry["verified"] = True
        try:
            ev = parse_event(raw)
        except BadFrame as exc:
            entry |= {"outcome": "refused", "reason": exc.code}
            await self._refuse(entry, exc)
        entry |= {"event_id": ev.id, "type": ev.type, "intent_id": ev.intent_id, "order_id": ev.order_id, "amount": ev.amount}
        rec = await self.records.intent(ev.order_id)
        try:
            action, why = decide_callback(rec, ev)
        except BadFrame as exc:
            entry |= {"outcome": "refused", "reason": exc.code}
            await self._refuse(entry, exc)
        entry["duplicate"] = not await self.records.first_seen(ev.id)
        if action == "ignore":
            entry |= {"outcome": "ignored", "reason": why}
        else:
            assert rec is not None
            entry |= await self._pay(rec, now_ms)
        await self.records.log_callback(entry)
        log.info("payments.callback", extra={k: entry.get(k) for k in ("event_id", "type", "order_id", "outcome", "duplicate")})
        return {"received": True, "outcome": entry["outcome"]}

    async def _refuse(self, entry: dict[str, Any], exc: Exception) -> NoReturn:
        log.info("payments.callback_refused", extra={"reason": entry.get("reason"), "event_id": entry.get("event_id")})
        await self.records.log_callback(entry)
        raise exc

    async def _pay(self, rec: IntentRecord, now_ms: int) -> dict[str, Any]:
        """The order's pay step for a verified success; a late one is refunded."""
        try:
            res = await self.checkout.pay(order_id=rec.order_id, user=None, now_ms=now_ms, coupon_id=rec.coupon_id)
            outcome = res.outcome
        except NotFound:  # the hold is gone (its sale expired long ago): too late too
            outcome = "expired"
        if outcome in ("paid", "already_paid"):
            return {"outcome": outcome}
        refund = await self.refund_late(rec, now_ms, why=outcome)
        return {"outcome": "refunded_late", "reason": outcome, "refund_id": refund["id"]}

    async def refund_late(self, rec: IntentRecord, now_ms: int, *, why: str) -> dict[str, Any]:
        """Refund a success that came after the order's pay window, once per intent, and
        ledger it (``payment.refunded`` on the orders log, one id per intent)."""
        assert self.provider is not None
        r = await self.provider.refund(intent_id=rec.intent_id, amount=rec.amount, reason="late_success",
                                       idempotency_key=late_refund_key(rec.intent_id))
        refund = {"id": r.id, "intent_id": rec.intent_id, "amount": r.amount, "reason": "late_success", "status": r.status,
                  "order_state": why, "ts": now_ms}
        await self.records.record_refund(rec.order_id, refund)
        await self.log.append("orders", rec.order_id, PAYMENT_REFUNDED,
                              {"order_id": rec.order_id, "user_id": rec.user_id, "intent_id": rec.intent_id, "refund_id": r.id,
                               "amount": r.amount, "currency": rec.currency, "reason": "late_success", "order_state": why,
                               "refunded_ms": now_ms},
                              event_id=f"{rec.order_id}:payment:{rec.intent_id}:refunded", ts=now_ms)
        log.warning("payments.late_success_refunded", extra={"order": rec.order_id, "intent": rec.intent_id, "amount": r.amount})
        return refund

    # ---- handlers (gateway.routes)
    async def http_create(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        data = await read_object(request)
        coupon = data.get("coupon_id")
        if coupon is not None and not isinstance(coupon, str):
            raise BadFrame("'coupon_id' must be a string", code="invalid")
        body, created = await self.create(None if ident.is_ops else ident.user, request.match_info["order"], coupon)
        return web.json_response(body, status=201 if created else 200)

    async def http_webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        return web.json_response(await self.callback(raw, request.headers.get(SIGNATURE_HEADER)))

    async def http_callbacks(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        if not ident.is_ops:
            raise Forbidden("payment callbacks are for ops")
        limit, offset = page(request)
        return web.json_response({"callbacks": await self.records.callbacks(limit=limit, offset=offset)})

    async def http_refunds(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        if not ident.is_ops:
            raise Forbidden("provider refunds are for ops")
        limit, offset = page(request)
        return web.json_response({"refunds": await self.records.all_refunds(limit=limit, offset=offset)})

    async def http_order(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        oid = request.match_info["order"]
        rec = await self.records.intent(oid)
        if rec is None or not (ident.is_ops or rec.user_id == ident.user):
            raise NotFound(f"no payment of order {oid}")
        intent = self._intent_body(rec, 0)
        intent.pop("pay_by_ms")
        if rec.user_id != ident.user:
            intent.pop("client_secret")
        return web.json_response({"order_id": oid, "intent": intent, "refunds": await self.records.refunds(oid)})


_ERR = {"$ref": "#/components/schemas/Error"}


def _op(summary: str, desc: str, *, auth: bool, ok: dict[str, Any], errors: dict[str, str], params: list[Any] | None = None,
        body: dict[str, Any] | None = None, ops: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "description": desc, "tags": ["payments"],
                           "security": [{"bearer": []}] if auth else [],
                           "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}},
                                         **{c: {"description": d, "content": {"application/json": {"schema": _ERR}}}
                                            for c, d in errors.items()}}}
    if ops:
        out["x-roles"] = ["ops"]
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return out


_P_ORDER = {"name": "order", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
_Q_PAGE = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
           {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}]
_INTENT = {"type": "object", "required": ["order_id", "intent_id", "amount", "currency"],
           "properties": {"order_id": {"type": "string"}, "intent_id": {"type": ["string", "null"]},
                          "outcome": {"type": "string", "enum": ["paid", "already_paid"]}, "client_secret": {"type": "string"},
                          "confirm_url": {"type": "string"}, "amount": {"type": "integer"}, "discount": {"type": "integer"},
                          "coupon_id": {"type": ["string", "null"]}, "currency": {"type": "string"}, "pay_by_ms": {"type": "integer"}}}
_ROWS = {"type": "array", "items": {"type": "object"}}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/orders/{order}/payments": {
        "post": _op("Create (or get) the order's payment intent at the provider",
                    "The amount is the order's after its coupon (locked for the order now). 201 the first time, 200 with the "
                    "same intent after. Confirm it at `confirm_url` with `client_secret`; the order is paid when the provider's "
                    "signed callback arrives. An order its coupon covers entirely has nothing to charge: it is paid at once, "
                    "without the provider (201 with `intent_id: null`, `amount: 0`, `outcome: paid`). "
                    "409 `already_paid`, `already_cancelled`, `expired`; "
                    "403 `payments_disabled`: no provider is configured. Who: the buyer or ops.",
                    auth=True, ok=_INTENT, params=[_P_ORDER], body={"type": "object", "properties": {"coupon_id": {"type": "string"}}},
                    errors={"400": "bad input", "401": "no valid token", "403": "forbidden, or no provider (`payments_disabled`)",
                            "404": "no such order", "409": "the order is not payable", "503": "the provider is unreachable: retry"}),
        "get": _op("The order's payment intent and provider refunds", "Who: the buyer or ops.", auth=True,
                   ok={"type": "object", "properties": {"order_id": {"type": "string"}, "intent": {"type": "object"}, "refunds": _ROWS}},
                   params=[_P_ORDER], errors={"400": "bad input", "401": "no valid token", "403": "forbidden", "404": "no payment of this order"}),
    },
    "/api/v1/payments/webhook": {
        "post": _op("The payment provider's callback (signed)",
                    "No token: the `X-LC-Signature: t=<unix>,v1=<hex HMAC-SHA256 of '<t>.' + body>` header is the credential "
                    "(docs/commerce.md). 401 `missing_signature`, `malformed_signature`, `stale_timestamp`, `bad_signature`; "
                    "400 `invalid_event`, `unknown_intent`, `amount_mismatch`; 503: retry. Every callback is listed for ops.",
                    auth=False, ok={"type": "object", "properties": {"received": {"type": "boolean"}, "outcome": {"type": "string"}}},
                    errors={"400": "an event the gateway refuses", "401": "the signature does not verify",
                            "503": "a dependency is down: retry"},
                    params=[{"name": SIGNATURE_HEADER, "in": "header", "schema": {"type": "string"}}]),
    },
    "/api/v1/payments/callbacks": {
        "get": _op("Payment callbacks with their verification result, newest first", "Who: ops.", auth=True, ops=True,
                   ok={"type": "object", "properties": {"callbacks": _ROWS}}, params=_Q_PAGE,
                   errors={"400": "bad input", "401": "no valid token", "403": "ops only"}),
    },
    "/api/v1/payments/refunds": {
        "get": _op("Refunds asked of the payment provider (late successes), newest first", "Who: ops.", auth=True, ops=True,
                   ok={"type": "object", "properties": {"refunds": _ROWS}}, params=_Q_PAGE,
                   errors={"400": "bad input", "401": "no valid token", "403": "ops only"}),
    },
}
# the intent's first creation answers 201, a repeat 200 with the same intent
_post = OPENAPI_PATHS["/api/v1/orders/{order}/payments"]["post"]
_post["responses"]["201"] = {"description": "created", "content": {"application/json": {"schema": _INTENT}}}
