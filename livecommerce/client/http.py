"""The asyncio HTTP client of the gateway's API (aiohttp): one method per operation the
callers use, named after its OpenAPI ``operationId`` (``salesBuy`` -> :meth:`Client.sales_buy`),
and :meth:`Client.invoke` for any other operation of :data:`~.operations.OPERATIONS`.

An error answer raises the :mod:`~livecommerce.client.errors` class of its status, carrying
the wire's ``code`` and ``message``; calls that are safe to repeat (reads, and writes bound
to an ``Idempotency-Key`` or a ``request_id``) are retried on the answers the retry
contract names (:mod:`~livecommerce.client.retry`), with the same key.

::

    async with Client("http://127.0.0.1:8080", token=host_token) as api:
        await api.rooms_create({"id": "demo", "title": "Tea night"})
        await api.comments_announce("demo", "20% off for ten minutes")
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import aiohttp

from .errors import ClientError, TransportError, error_from
from .operations import Call, call
from .retry import CONTRACT, NO_RETRY, RetryPolicy


class Room(TypedDict, total=False):
    id: str
    title: str
    host: str
    state: str
    created_ms: int
    live_ms: int
    summary: dict[str, Any]
    closed: dict[str, Any]


class Reserved(TypedDict, total=False):
    order_id: str
    sale_id: str
    qty: int
    unit_price: int
    amount: int
    pay_by_ms: int
    duplicate: bool


class PayResult(TypedDict, total=False):
    order_id: str
    outcome: str
    amount: int
    discount: int


class SaleStats(TypedDict, total=False):
    sale_id: str
    room: str
    state: str
    stock: int
    remaining: int
    reserved: int
    paid: int
    buyers: int
    conserved: bool
    gmv: int
    sql: dict[str, Any]


class TopupResult(TypedDict, total=False):
    user: str
    balance: int
    event_id: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer: its status, its body (JSON decoded, else text), whether the gateway
    replayed a stored first answer (``Idempotent-Replayed``), and how many attempts it took."""

    status: int
    body: Any
    replayed: bool = False
    attempts: int = 1


class Client:
    """One gateway (``base_url``), one caller (``token``, sent as a bearer token).

    ``session``: an aiohttp session to share (many clients, one connection pool); without
    one the client makes its own and :meth:`close` closes it. ``retry``: the schedule of
    :mod:`~livecommerce.client.retry` (:data:`~.retry.NO_RETRY` to see every failure)."""

    def __init__(self, base_url: str, token: str | None = None, *, session: aiohttp.ClientSession | None = None,
                 timeout_s: float = 10.0, retry: RetryPolicy = CONTRACT, rng: random.Random | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.retry = retry
        self._rng = rng or random.Random()
        self._session = session
        self._own_session = session is None

    def as_user(self, token: str | None) -> Client:
        """The same gateway and connection pool, another caller."""
        c = Client(self.base_url, token, session=self.session, timeout_s=self.timeout_s, retry=self.retry, rng=self._rng)
        c._own_session = False
        return c

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ sending
    async def send(self, c: Call, *, check: bool = True, retry: bool = True) -> Answer:
        """Send ``c``; retried per the contract when ``retry`` and the call is safe to
        repeat. ``check``: raise for an error answer (else return it as an :class:`Answer`).

        Raises:
            ApiError: an error answer (its subclass by status), when ``check``.
            TransportError: no answer, after the retries.
        """
        policy = self.retry if retry and c.safe_to_retry else NO_RETRY
        start = time.monotonic()
        attempt = 0
        while True:
            answer: Answer | None = None
            try:
                answer, text = await self._once(c, attempt + 1)
                if answer.status < 400:
                    return answer
                failure: ClientError = error_from(answer.status, text)
            except TransportError as exc:
                failure = exc
            delay = policy.delay(attempt, self._rng)
            if failure.retryable and policy.allows(time.monotonic() - start, delay):
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if check or answer is None:
                raise failure
            return answer

    async def _once(self, c: Call, attempt: int) -> tuple[Answer, str]:
        headers = {"Accept": "application/json", **c.headers}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with self.session.request(c.method, self.base_url + c.path, params=dict(c.query) or None, json=c.body,
                                            headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as r:
                text = await r.text()
                body: Any = text
                if r.content_type == "application/json" and text:
                    try:
                        body = json.loads(text)
                    except ValueError:
                        pass
                return Answer(r.status, body, r.headers.get("Idempotent-Replayed") == "true", attempt), text
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransportError(f"{c.method} {c.path}: no answer ({exc.__class__.__name__}: {exc})") from exc

    async def invoke(self, operation_id: str, *, body: Any = None, query: Mapping[str, Any] | None = None,
                     idempotency_key: str | None = None, **params: str) -> Any:
        """Any operation of the document by its ``operationId``; the answer's body."""
        return (await self.send(call(operation_id, body=body, query=query, idempotency_key=idempotency_key, **params))).body

    # ------------------------------------------------------------------ health
    async def health_healthz(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("healthHealthz"))

    async def health_readyz(self) -> dict[str, Any]:
        """Raises Unavailable (503) while the node cannot reach Redis or drains."""
        return cast(dict[str, Any], (await self.send(call("healthReadyz"), retry=False)).body)

    async def health_metrics(self) -> str:
        return str(await self.invoke("healthMetrics"))

    async def health_room_stats(self, room: str) -> dict[str, Any]:
        """``{room, online, seq}``: viewers online on every node."""
        return cast(dict[str, Any], await self.invoke("healthRoomStats", room=room))

    # ------------------------------------------------------------------ rooms
    async def rooms_create(self, room: Mapping[str, Any]) -> Room:
        return cast(Room, await self.invoke("roomsCreate", body=dict(room)))

    async def rooms_get(self, room: str) -> Room:
        return cast(Room, await self.invoke("roomsGet", room=room))

    async def rooms_live(self, room: str) -> Room:
        return cast(Room, await self.invoke("roomsLive", room=room, body={}))

    async def rooms_end(self, room: str, *, lotteries: str | None = None) -> Room:
        return cast(Room, await self.invoke("roomsEnd", room=room, body={"lotteries": lotteries} if lotteries else {}))

    async def rooms_pin(self, room: str, product_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("roomsPin", room=room, body={"product_id": product_id}))

    async def rooms_unpin(self, room: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("roomsUnpin", room=room))

    async def comments_announce(self, room: str, text: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"text": text}
        if data is not None:
            body["data"] = dict(data)
        return cast(dict[str, Any], await self.invoke("commentsAnnounce", room=room, body=body))

    async def likes_get_likes(self, room: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("likesGetLikes", room=room))

    # ------------------------------------------------------------------ catalogue
    async def catalog_create(self, product: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("catalogCreate", body=dict(product)))

    async def catalog_get(self, product: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("catalogGet", product=product))

    # ------------------------------------------------------------------ sales and orders
    async def sales_create_campaigns(self, campaigns: Mapping[str, Any] | list[Mapping[str, Any]], *,
                                     idempotency_key: str | None = None) -> list[dict[str, Any]]:
        """One campaign or a list; the created (or existing) sales."""
        body = [dict(c) for c in campaigns] if isinstance(campaigns, list) else dict(campaigns)
        out = await self.invoke("salesCreateCampaigns", body=body, idempotency_key=idempotency_key)
        return cast(list[dict[str, Any]], out["campaigns"])

    async def sales_list_campaigns(self, room: str | None = None, *, limit: int | None = None) -> list[dict[str, Any]]:
        out = await self.invoke("salesListCampaigns", query={"room": room, "limit": limit})
        return cast(list[dict[str, Any]], out["campaigns"])

    async def sales_sale_start(self, sale: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("salesSaleStart", sale=sale, body={}))

    async def sales_sale_stop(self, sale: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("salesSaleStop", sale=sale, body={}))

    async def sales_sale_stats(self, sale: str) -> SaleStats:
        return cast(SaleStats, await self.invoke("salesSaleStats", sale=sale))

    async def sales_buy(self, sale: str, request_id: str, qty: int = 1) -> Reserved:
        """Reserve ``qty`` units; the same ``request_id`` again answers the same order
        (``duplicate: true``). Refusals raise Conflict with the code (``sold_out`` ...)."""
        return cast(Reserved, await self.invoke("salesBuy", sale=sale, body={"qty": qty, "request_id": request_id}))

    async def orders_list_orders(self, **query: Any) -> list[dict[str, Any]]:
        """``user``, ``sale``, ``room``, ``state``, ``limit``, ``offset``."""
        return cast(list[dict[str, Any]], (await self.invoke("ordersListOrders", query=query))["orders"])

    async def orders_get_order(self, order: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("ordersGetOrder", order=order))

    async def orders_pay_order(self, order: str, idempotency_key: str, *, coupon_id: str | None = None) -> PayResult:
        """Pay (the dev payment); retried with the key until the first attempt's answer."""
        body = {"coupon_id": coupon_id} if coupon_id else {}
        return cast(PayResult, await self.invoke("ordersPayOrder", order=order, body=body, idempotency_key=idempotency_key))

    async def orders_cancel_order(self, order: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("ordersCancelOrder", order=order, body={}))

    # ------------------------------------------------------------------ coupons
    async def coupons_drop(self, room: str, drop: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("couponsDrop", room=room, body=dict(drop)))

    async def coupons_claim(self, drop: str, idempotency_key: str | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("couponsClaim", drop=drop, body={}, idempotency_key=idempotency_key))

    async def coupons_state(self, drop: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("couponsState", drop=drop))

    async def coupons_user(self, user: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("couponsUser", user=user))

    # ------------------------------------------------------------------ wallets, gifts, points
    async def wallets_topup(self, user: str, amount: int, idempotency_key: str) -> TopupResult:
        """Credit ``amount`` coins once per key (test coins, or ops)."""
        return cast(TopupResult, await self.invoke("walletsTopup", user=user, body={"amount": amount},
                                                   idempotency_key=idempotency_key))

    async def wallets_balance(self, user: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("walletsBalance", user=user))

    async def wallets_ledger(self, user: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("walletsLedger", user=user))

    async def gifts_get_catalogue(self) -> Any:
        return await self.invoke("giftsGetCatalogue")

    async def gifts_room_board(self, room: str, n: int | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("giftsRoomBoard", room=room, query={"n": n}))

    async def points_balance(self, user: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("pointsBalance", user=user))

    # ------------------------------------------------------------------ lotteries, red packets
    async def lotteries_start(self, room: str, lottery: Mapping[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("lotteriesStart", room=room, body=dict(lottery),
                                                      idempotency_key=idempotency_key))

    async def lotteries_get(self, id: str) -> dict[str, Any]:
        """A lottery's public, verifiable record (``livecommerce lottery verify``)."""
        return cast(dict[str, Any], await self.invoke("lotteriesGet", id=id))

    async def lotteries_room(self, room: str) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], (await self.invoke("lotteriesRoom", room=room))["lotteries"])

    async def lotteries_mine(self, room: str) -> list[str]:
        return cast(list[str], (await self.invoke("lotteriesMine", room=room))["entered"])

    async def redpackets_drop(self, room: str, packet: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("redpacketsDrop", room=room, body=dict(packet)))

    async def redpackets_grab(self, id: str, password: str | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("redpacketsGrab", id=id, body={"password": password} if password else {}))

    # ------------------------------------------------------------------ ops
    async def ops_get_overview(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self.invoke("opsGetOverview"))
