"""The :class:`~livecommerce.payments.PaymentProvider` adapter over HTTP (aiohttp client).

Speaks the simulator's API (:mod:`livecommerce.payments_sim`), which has the shape of real
providers' (intents, confirm, refunds, idempotency keys). A provider that does not answer,
or answers 5xx, is :class:`~livecommerce.errors.Unavailable` (retry with the same key); a
4xx is :class:`~livecommerce.errors.BadFrame` with the provider's code.
"""

from __future__ import annotations

from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout

from .errors import BadFrame, Unavailable
from .payments import Intent, ProviderRefund


class HttpPaymentProvider:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = ClientTimeout(total=timeout_s)
        self._http: ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _post(self, path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        if self._http is None:
            self._http = ClientSession(timeout=self._timeout)
        try:
            async with self._http.post(self.base_url + path, json=body, headers={"Idempotency-Key": key}) as r:
                data = await r.json(content_type=None)
                status = r.status
        except (TimeoutError, ClientError, OSError, ValueError) as exc:
            raise Unavailable(f"payment provider unreachable: {type(exc).__name__}") from None
        if status >= 500:
            raise Unavailable(f"payment provider answered {status}")
        if status >= 400 or not isinstance(data, dict):
            err = data.get("error", {}) if isinstance(data, dict) else {}
            raise BadFrame(f"payment provider refused: {err.get('message', status)}", code=str(err.get("code") or "provider_refused"))
        return data

    async def create_intent(self, *, order_id: str, amount: int, currency: str, idempotency_key: str) -> Intent:
        d = await self._post("/v1/payment_intents", {"order_id": order_id, "amount": amount, "currency": currency}, idempotency_key)
        return Intent(id=str(d["id"]), order_id=str(d["order_id"]), amount=int(d["amount"]), currency=str(d["currency"]),
                      status=str(d["status"]), client_secret=str(d["client_secret"]), confirm_url=str(d["confirm_url"]))

    async def refund(self, *, intent_id: str, amount: int, reason: str, idempotency_key: str) -> ProviderRefund:
        d = await self._post("/v1/refunds", {"intent_id": intent_id, "amount": amount, "reason": reason}, idempotency_key)
        return ProviderRefund(id=str(d["id"]), intent_id=str(d["intent_id"]), amount=int(d["amount"]), status=str(d["status"]))
