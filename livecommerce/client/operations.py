"""The gateway's HTTP operations, named by their OpenAPI ``operationId`` (``gateway/openapi.py``),
and the :class:`Call` a client sends for one: no I/O, so the asyncio client
(:mod:`livecommerce.client.http`) and locust's requests session (``loadtests/locustfile.py``)
build the same requests.

:data:`OPERATIONS` is the document's ``(operationId, method, path)`` list plus where each
operation takes its idempotency key; ``tests/test_client.py`` fails when it and the document
the gateway serves drift apart, and prints the table to paste.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

KeyIn = Literal["header", "body"]


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: ``key`` says whether it takes an ``Idempotency-Key`` header
    (``"header"``), binds a key in its body (``"body"``: ``request_id``), or neither."""

    method: str
    path: str
    key: KeyIn | None = None

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{(\w+)\}", self.path))


# generated from the served document (tests/test_client.py prints it again when it drifts)
OPERATIONS: dict[str, Op] = {
    "aftersalesApprove": Op("POST", "/api/v1/refunds/{refund}/approve"),
    "aftersalesListRefunds": Op("GET", "/api/v1/refunds"),
    "aftersalesOrderHistory": Op("GET", "/api/v1/orders/{order}/history"),
    "aftersalesOrderRefunds": Op("GET", "/api/v1/orders/{order}/refunds"),
    "aftersalesPostRefund": Op("POST", "/api/v1/orders/{order}/refunds", key="header"),
    "aftersalesReject": Op("POST", "/api/v1/refunds/{refund}/reject"),
    "bagsAdd": Op("POST", "/api/v1/rooms/{room}/bag/items"),
    "bagsExplain": Op("PUT", "/api/v1/rooms/{room}/bag/explaining"),
    "bagsGet": Op("GET", "/api/v1/rooms/{room}/bag"),
    "bagsOrder": Op("PUT", "/api/v1/rooms/{room}/bag/order"),
    "bagsPut": Op("PUT", "/api/v1/rooms/{room}/bag"),
    "bagsRemove": Op("DELETE", "/api/v1/rooms/{room}/bag/items/{product}"),
    "cartsAdd": Op("POST", "/api/v1/rooms/{room}/cart/items"),
    "cartsCheckout": Op("POST", "/api/v1/rooms/{room}/cart/checkout"),
    "cartsClear": Op("DELETE", "/api/v1/rooms/{room}/cart"),
    "cartsGet": Op("GET", "/api/v1/rooms/{room}/cart"),
    "cartsRemove": Op("DELETE", "/api/v1/rooms/{room}/cart/items/{product}/{sku}"),
    "cartsSet": Op("PUT", "/api/v1/rooms/{room}/cart/items/{product}/{sku}"),
    "catalogAddSku": Op("POST", "/api/v1/products/{product}/skus"),
    "catalogArchive": Op("DELETE", "/api/v1/products/{product}"),
    "catalogArchiveSku": Op("DELETE", "/api/v1/products/{product}/skus/{sku}"),
    "catalogCreate": Op("POST", "/api/v1/products"),
    "catalogGet": Op("GET", "/api/v1/products/{product}"),
    "catalogList": Op("GET", "/api/v1/products"),
    "catalogPatch": Op("PATCH", "/api/v1/products/{product}"),
    "catalogPatchSku": Op("PATCH", "/api/v1/products/{product}/skus/{sku}"),
    "commentsAnnounce": Op("POST", "/api/v1/rooms/{room}/announce"),
    "couponsClaim": Op("POST", "/api/v1/coupons/{drop}/claim", key="header"),
    "couponsDrop": Op("POST", "/api/v1/rooms/{room}/coupons"),
    "couponsRoom": Op("GET", "/api/v1/rooms/{room}/coupons"),
    "couponsState": Op("GET", "/api/v1/coupons/{drop}"),
    "couponsUser": Op("GET", "/api/v1/users/{user}/coupons"),
    "earningsReverse": Op("POST", "/api/v1/ops/gifts/{event}/reversal"),
    "earningsStatement": Op("GET", "/api/v1/hosts/{host}/earnings"),
    "experimentsCreate": Op("POST", "/api/v1/experiments"),
    "experimentsGetOne": Op("GET", "/api/v1/experiments/{id}"),
    "experimentsGetResults": Op("GET", "/api/v1/experiments/{id}/results"),
    "experimentsListAll": Op("GET", "/api/v1/experiments"),
    "experimentsMyFlags": Op("GET", "/api/v1/me/flags"),
    "experimentsStartOne": Op("POST", "/api/v1/experiments/{id}/start"),
    "experimentsStopOne": Op("POST", "/api/v1/experiments/{id}/stop"),
    "fanclubClubDelete": Op("DELETE", "/api/v1/hosts/{host}/fanclub"),
    "fanclubClubPost": Op("POST", "/api/v1/hosts/{host}/fanclub"),
    "fanclubFansBoard": Op("GET", "/api/v1/hosts/{host}/fans"),
    "fanclubFollowDelete": Op("DELETE", "/api/v1/hosts/{host}/follow"),
    "fanclubFollowPost": Op("POST", "/api/v1/hosts/{host}/follow"),
    "fanclubMine": Op("GET", "/api/v1/me/fanclubs"),
    "feedGetFeed": Op("GET", "/api/v1/feed"),
    "feedListRooms": Op("GET", "/api/v1/feed/rooms"),
    "feedPutCategory": Op("PUT", "/api/v1/rooms/{room}/category"),
    "fulfilmentAddressAdd": Op("POST", "/api/v1/me/addresses"),
    "fulfilmentAddressDelete": Op("DELETE", "/api/v1/me/addresses/{address}"),
    "fulfilmentAddressPatch": Op("PATCH", "/api/v1/me/addresses/{address}"),
    "fulfilmentAddresses": Op("GET", "/api/v1/me/addresses"),
    "fulfilmentConfirm": Op("POST", "/api/v1/orders/{order}/confirm"),
    "fulfilmentDelivered": Op("POST", "/api/v1/shipments/{shipment}/delivered"),
    "fulfilmentReturn": Op("POST", "/api/v1/refunds/{refund}/return"),
    "fulfilmentShip": Op("POST", "/api/v1/orders/{order}/shipments"),
    "fulfilmentToShip": Op("GET", "/api/v1/fulfilment/orders"),
    "funnelDropFunnel": Op("GET", "/api/v1/coupons/{drop}/funnel"),
    "funnelSaleFunnel": Op("GET", "/api/v1/sales/{sale}/funnel"),
    "giftsGetCatalogue": Op("GET", "/api/v1/gifts"),
    "giftsHostBoard": Op("GET", "/api/v1/hosts/{host}/leaderboard"),
    "giftsHostsBoard": Op("GET", "/api/v1/leaderboards/hosts"),
    "giftsRoomBoard": Op("GET", "/api/v1/rooms/{room}/leaderboard"),
    "growthDaily": Op("GET", "/api/v1/growth/daily"),
    "growthFunnel": Op("GET", "/api/v1/growth/funnel"),
    "growthPostAcquire": Op("POST", "/api/v1/growth/acquire"),
    "growthRetention": Op("GET", "/api/v1/growth/retention"),
    "growthUser": Op("GET", "/api/v1/growth/users/{user}"),
    "healthHealthz": Op("GET", "/healthz"),
    "healthMetrics": Op("GET", "/metrics"),
    "healthReadyz": Op("GET", "/readyz"),
    "healthRoomStats": Op("GET", "/api/v1/rooms/{room}/online"),
    "likesGetLikes": Op("GET", "/api/v1/rooms/{room}/likes"),
    "lotteriesGet": Op("GET", "/api/v1/lotteries/{id}"),
    "lotteriesMine": Op("GET", "/api/v1/rooms/{room}/lotteries/mine"),
    "lotteriesRoom": Op("GET", "/api/v1/rooms/{room}/lotteries"),
    "lotteriesStart": Op("POST", "/api/v1/rooms/{room}/lotteries", key="header"),
    "moderationAudit": Op("GET", "/api/v1/moderation/audit"),
    "moderationBan": Op("POST", "/api/v1/rooms/{room}/bans"),
    "moderationChat": Op("PUT", "/api/v1/rooms/{room}/chat"),
    "moderationDeleteComment": Op("DELETE", "/api/v1/rooms/{room}/comments/{seq}"),
    "moderationKick": Op("POST", "/api/v1/rooms/{room}/kicks"),
    "moderationModeratorAdd": Op("PUT", "/api/v1/rooms/{room}/moderators/{user}"),
    "moderationModeratorRemove": Op("DELETE", "/api/v1/rooms/{room}/moderators/{user}"),
    "moderationMute": Op("POST", "/api/v1/rooms/{room}/mutes"),
    "moderationPlatformBan": Op("POST", "/api/v1/platform/bans"),
    "moderationPlatformBans": Op("GET", "/api/v1/platform/bans"),
    "moderationPlatformUnban": Op("DELETE", "/api/v1/platform/bans/{user}"),
    "moderationReport": Op("POST", "/api/v1/rooms/{room}/reports"),
    "moderationReports": Op("GET", "/api/v1/rooms/{room}/reports"),
    "moderationResolve": Op("POST", "/api/v1/reports/{report}/resolve"),
    "moderationState": Op("GET", "/api/v1/rooms/{room}/moderation"),
    "moderationUnban": Op("DELETE", "/api/v1/rooms/{room}/bans/{user}"),
    "moderationUnmute": Op("DELETE", "/api/v1/rooms/{room}/mutes/{user}"),
    "openapiDocs": Op("GET", "/api/v1/docs"),
    "openapiOpenapiJson": Op("GET", "/api/v1/openapi.json"),
    "opsGetAlerts": Op("GET", "/api/v1/ops/alerts"),
    "opsGetInventory": Op("GET", "/api/v1/ops/inventory/{sale}"),
    "opsGetOverview": Op("GET", "/api/v1/ops/overview"),
    "opsGetSeries": Op("GET", "/api/v1/ops/series"),
    "ordersCancelOrder": Op("POST", "/api/v1/orders/{order}/cancel"),
    "ordersGetOrder": Op("GET", "/api/v1/orders/{order}"),
    "ordersListOrders": Op("GET", "/api/v1/orders"),
    "ordersPayOrder": Op("POST", "/api/v1/orders/{order}/pay", key="header"),
    "paymentsCallbacks": Op("GET", "/api/v1/payments/callbacks"),
    "paymentsCreate": Op("POST", "/api/v1/orders/{order}/payments"),
    "paymentsOrder": Op("GET", "/api/v1/orders/{order}/payments"),
    "paymentsRefunds": Op("GET", "/api/v1/payments/refunds"),
    "paymentsWebhook": Op("POST", "/api/v1/payments/webhook"),
    "pointsBalance": Op("GET", "/api/v1/points/{user}"),
    "pointsLedger": Op("GET", "/api/v1/points/{user}/ledger"),
    "pointsRedeem": Op("POST", "/api/v1/points/{user}/redeem", key="body"),
    "profilesMyDataDelete": Op("DELETE", "/api/v1/me/data"),
    "profilesMyDataGet": Op("GET", "/api/v1/me/data"),
    "profilesMyProfile": Op("GET", "/api/v1/me/profile"),
    "profilesProfile": Op("GET", "/api/v1/users/{user}/profile"),
    "reachInbox": Op("GET", "/api/v1/me/notifications"),
    "reachRead": Op("POST", "/api/v1/me/notifications/read"),
    "reachScheduleCancel": Op("DELETE", "/api/v1/schedules/{schedule}"),
    "reachScheduleCreate": Op("POST", "/api/v1/hosts/{host}/schedule"),
    "reachScheduleGet": Op("GET", "/api/v1/schedules/{schedule}"),
    "reachScheduleList": Op("GET", "/api/v1/hosts/{host}/schedule"),
    "reachSubscribeDelete": Op("DELETE", "/api/v1/schedules/{schedule}/subscribe"),
    "reachSubscribePost": Op("POST", "/api/v1/schedules/{schedule}/subscribe"),
    "redpacketsDrop": Op("POST", "/api/v1/rooms/{room}/redpackets", key="body"),
    "redpacketsGet": Op("GET", "/api/v1/redpackets/{id}"),
    "redpacketsGrab": Op("POST", "/api/v1/redpackets/{id}/grab"),
    "redpacketsRoom": Op("GET", "/api/v1/rooms/{room}/redpackets"),
    "referralsInvite": Op("POST", "/api/v1/invites"),
    "referralsStatus": Op("GET", "/api/v1/referrals/{user}"),
    "reportsReport": Op("GET", "/api/v1/rooms/{room}/report"),
    "roomsCreate": Op("POST", "/api/v1/rooms"),
    "roomsEnd": Op("POST", "/api/v1/rooms/{room}/end"),
    "roomsGet": Op("GET", "/api/v1/rooms/{room}"),
    "roomsLive": Op("POST", "/api/v1/rooms/{room}/live"),
    "roomsPin": Op("POST", "/api/v1/rooms/{room}/pin"),
    "roomsUnpin": Op("DELETE", "/api/v1/rooms/{room}/pin"),
    "salesBuy": Op("POST", "/api/v1/sales/{sale}/buy", key="body"),
    "salesCreateCampaigns": Op("POST", "/api/v1/campaigns", key="header"),
    "salesListCampaigns": Op("GET", "/api/v1/campaigns"),
    "salesSaleStart": Op("POST", "/api/v1/sales/{sale}/start"),
    "salesSaleStats": Op("GET", "/api/v1/sales/{sale}/stats"),
    "salesSaleStop": Op("POST", "/api/v1/sales/{sale}/stop"),
    "segmentsCoupon": Op("POST", "/api/v1/segments/{segment}/coupons"),
    "segmentsGet": Op("GET", "/api/v1/segments/{segment}"),
    "segmentsGetTargets": Op("GET", "/api/v1/segments/{segment}/targets"),
    "segmentsListing": Op("GET", "/api/v1/segments"),
    "segmentsPreviewGet": Op("GET", "/api/v1/segments/{segment}/preview"),
    "segmentsPreviewPost": Op("POST", "/api/v1/segments/preview"),
    "segmentsPushNotice": Op("POST", "/api/v1/segments/{segment}/push"),
    "segmentsPutPost": Op("POST", "/api/v1/segments"),
    "segmentsPutPut": Op("PUT", "/api/v1/segments/{segment}"),
    "ticketsGetTicket": Op("GET", "/api/v1/tickets/{ticket}"),
    "ticketsListTickets": Op("GET", "/api/v1/tickets"),
    "ticketsMoveTicket": Op("POST", "/api/v1/tickets/{ticket}/status"),
    "ticketsPostTicket": Op("POST", "/api/v1/tickets"),
    "walletsBalance": Op("GET", "/api/v1/wallets/{user}"),
    "walletsLedger": Op("GET", "/api/v1/wallets/{user}/ledger"),
    "walletsTopup": Op("POST", "/api/v1/wallets/{user}/topup", key="header"),
}


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to send: ``path`` with its parameters filled in, ``name`` the path
    as documented (``/api/v1/sales/{sale}/buy``: one statistics row per operation)."""

    operation_id: str
    method: str
    path: str
    name: str
    body: Any = None
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def safe_to_retry(self) -> bool:
        """A retry cannot do the effect twice: a read, or a write bound to a key (the
        retry gets the first answer)."""
        if self.method in ("GET", "HEAD"):
            return True
        op = OPERATIONS.get(self.operation_id)
        return "Idempotency-Key" in self.headers or (op is not None and op.key == "body")


def call(operation_id: str, *, body: Any = None, query: Mapping[str, Any] | None = None,
         idempotency_key: str | None = None, **params: str) -> Call:
    """The :class:`Call` of ``operation_id`` with its path ``params`` (``room="demo"``).

    Raises:
        ValueError: an unknown operation, a path parameter missing or extra, or an
            ``idempotency_key`` for an operation that takes none in a header.
    """
    op = OPERATIONS.get(operation_id)
    if op is None:
        raise ValueError(f"no operation {operation_id!r} (see /api/v1/openapi.json)")
    want = set(op.params)
    if set(params) != want:
        raise ValueError(f"{operation_id} takes the path parameters {sorted(want)}, got {sorted(params)}")
    path = op.path
    for name, value in params.items():
        path = path.replace("{" + name + "}", quote(str(value), safe=""))
    headers: dict[str, str] = {}
    if idempotency_key is not None:
        if op.key != "header":
            raise ValueError(f"{operation_id} takes no Idempotency-Key header"
                             + (": its key is the body's request_id" if op.key == "body" else ""))
        headers["Idempotency-Key"] = idempotency_key
    q = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (query or {}).items() if v is not None}
    return Call(operation_id, op.method, path, op.path, body, q, headers)
