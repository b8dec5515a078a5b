"""The HTTP API as an OpenAPI 3.1 document: ``GET /api/v1/openapi.json``, ``GET /api/v1/docs``.

The document is data built here, next to nothing else, so one file shows the whole API.
``tests/test_openapi.py`` holds it to the routes the gateway really registers (every
``/api/v1`` route documented, every documented path served, methods equal) and validates
real responses against the schemas, so a new route without its entry fails CI.

Conventions of the API: JSON bodies; money in integer cents (flash-sale prices, order
amounts, coupon values of ``full_reduction`` drops); coins (gifts, wallets) are whole
coins; times are epoch milliseconds (``*_ms``); errors are ``{"error": {"code",
"message", ...}}`` (an error's ``details`` beside them) with the status from the one error
table (``livecommerce/errors.py``).
The WebSocket protocol (``/ws``) is described in ``README.md``, not here: OpenAPI has no
words for it.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any, cast

from aiohttp import web

from livecommerce.alerts import ALERTS
from livecommerce.orders import ORDER_STATES

from .capabilities import CAPABILITIES
from .pages import STATIC_DIR

J = dict[str, Any]

INT: J = {"type": "integer"}
NUM: J = {"type": "number"}
STR: J = {"type": "string"}
BOOL: J = {"type": "boolean"}
MS: J = {"type": "integer", "description": "epoch milliseconds"}
CENTS: J = {"type": "integer", "minimum": 0, "description": "integer cents"}
ID: J = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}
USER: J = {"type": "string", "pattern": "^[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]{0,63}$",
           "description": "a user id: 1..64 letters, digits and `_ @ : - .` (not starting with a dot)"}
REF: J = {"type": "string", "pattern": "^[A-Za-z0-9_.:@|-]{1,200}$", "description": "a composite id (order, drop, refund ...)"}


def obj(props: J, required: list[str] | None = None, *, extra: bool = True, desc: str | None = None) -> J:
    out: J = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if not extra:
        out["additionalProperties"] = False
    if desc:
        out["description"] = desc
    return out


def arr(items: J) -> J:
    return {"type": "array", "items": items}


def ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(s: J) -> J:
    return {"oneOf": [s, {"type": "null"}]}


COUNTS: J = {"type": "object", "additionalProperties": {"type": "integer"}}

SCHEMAS: dict[str, J] = {
    "Error": obj({"error": obj({"code": STR, "message": STR,
                                "product_id": {**STR, "description": "a cart refusal's line (when known)"},
                                "sku": {**STR, "description": "a cart refusal's line (when known)"}},
                               ["code", "message"],
                               desc="An error may carry fields beside code and message: a refused cart line's "
                                    "`product_id`/`sku`, a moderation refusal's `until_ms`/`retry_after_s` ...")},
                 ["error"],
                 desc="Every error: `code` is the wire code (`invalid`, `forbidden`, `not_found`, `sold_out` ...)."),
    "ShowSummary": obj({"live_ms": MS, "ended_ms": MS, "duration_s": NUM, "peak_online": INT, "comments": INT, "likes": INT,
                        "avg_online": NUM},
                       ["live_ms", "ended_ms", "duration_s", "peak_online", "comments", "likes"]),
    "Room": obj({
        "id": ID, "title": STR, "host": STR, "state": {"enum": ["created", "live", "ended"]}, "created_ms": MS,
        "live_ms": MS, "summary": ref("ShowSummary"),
    }, ["id", "title", "host", "state", "created_ms"]),
    "RoomCreate": obj({"id": ID, "title": {"type": "string", "maxLength": 200}, "host": {**STR, "description": "ops only: the host user"}}, ["id"]),
    # Product, ProductCreate: gateway/catalog.py (the catalogue with SKUs)
    "Pin": obj({
        "product_id": ID, "name": STR, "price": CENTS, "image": STR, "sale": nullable({"type": "object"}),
        "stock_left": nullable(INT), "pinned_by": STR, "pinned_ms": MS, "seq": INT,
    }, ["product_id", "name", "price", "pinned_by", "pinned_ms"]),
    "Sale": obj({
        "id": ID, "room": ID, "product_id": ID, "price": CENTS, "stock": INT, "per_user_limit": INT,
        "starts_ms": MS, "ends_ms": MS, "payment_window_s": INT, "restock_on_refund": BOOL,
    }, ["id", "room", "product_id", "price", "stock", "per_user_limit", "starts_ms", "ends_ms"]),
    "CampaignCreate": obj({
        "id": ID, "room": ID, "product_id": ID, "product_name": STR, "price": CENTS, "stock": {"type": "integer", "minimum": 1},
        "per_user_limit": {"type": "integer", "minimum": 1}, "starts_ms": MS, "starts_at": {**STR, "format": "date-time"},
        "ends_ms": MS, "ends_at": {**STR, "format": "date-time"}, "duration_s": INT, "payment_window_s": INT,
        "restock_on_refund": BOOL,
    }, ["room", "product_id", "price", "stock"], extra=False,
        desc="Give the start as `starts_ms` or `starts_at`, the end as `ends_ms`, `ends_at` or `duration_s`. "
             "A campaign whose window has begun opens at once."),
    "SaleState": obj({"sale_id": ID, "state": {"enum": ["scheduled", "live", "sold_out", "ended"]}}, ["sale_id", "state"]),
    "SaleStats": obj({
        "sale_id": ID, "room": ID, "state": STR, "stock": INT, "remaining": INT, "reserved": INT, "paid": INT,
        "buyers": INT, "conserved": BOOL, "gmv": CENTS,
        "sql": obj({"orders": COUNTS, "units": COUNTS, "buyers": INT, "refunded": INT}, ["orders", "units", "buyers", "refunded"]),
    }, ["sale_id", "room", "state", "stock", "remaining", "reserved", "paid", "conserved", "gmv", "sql"]),
    "BuyRequest": obj({"qty": {"type": "integer", "minimum": 1, "maximum": 1000}, "request_id": ID}, ["request_id"]),
    "Reserved": obj({
        "order_id": STR, "sale_id": ID, "qty": INT, "unit_price": CENTS, "amount": CENTS, "pay_by_ms": MS, "duplicate": BOOL,
    }, ["order_id", "sale_id", "qty", "unit_price", "amount", "pay_by_ms", "duplicate"]),
    "Order": obj({
        "id": STR, "sale_id": ID, "room_id": ID, "user_id": STR, "qty": INT, "unit_price": CENTS, "amount": CENTS,
        "state": {"enum": list(ORDER_STATES)}, "pay_by_ms": MS,
        "created_ms": MS, "updated_ms": MS, "coupon_id": nullable(STR), "discount": INT, "refunded_qty": INT,
        "refunded_amount": INT, "request_id": nullable(STR),
    }, ["id", "sale_id", "room_id", "user_id", "qty", "unit_price", "amount", "state", "pay_by_ms"]),
    "Hold": obj({"sale_id": ID, "order_id": STR, "user": STR, "qty": INT, "state": STR, "pay_by_ms": MS, "request_id": STR},
                ["sale_id", "order_id", "user", "qty", "state", "pay_by_ms"]),
    "OrderEvent": obj({
        "order_id": STR, "event_id": STR, "from_state": nullable(STR), "to_state": STR, "ts_ms": MS,
        "refund_qty": INT, "refund_amount": INT, "reason": nullable(STR),
    }, ["order_id", "event_id", "to_state", "ts_ms"]),
    "PayResult": obj({"order_id": STR, "outcome": {"enum": ["paid", "already_paid"]}, "amount": CENTS, "discount": CENTS},
                     ["order_id", "outcome", "amount", "discount"]),
    "Prize": {"anyOf": [
        obj({"kind": {"enum": ["product", "coupon"]}, "id": ID}, ["kind", "id"],
            desc="a product (announced; fulfilment is the host's) or one of the room's coupon drops (each winner gets a coupon on its terms)"),
        obj({"kind": {"const": "coins"}, "amount": {"type": "integer", "minimum": 1, "maximum": 1_000_000}}, ["kind", "amount"],
            desc="coins credited to each winner's wallet, paid by the platform (only ops start these)"),
    ]},
    "LotteryPublic": obj({
        "id": ID, "room": ID, "title": STR, "prize": ref("Prize"),
        "winners_k": INT, "rule": obj({"kind": {"enum": ["enter", "keyword", "gift"]}, "keyword": STR, "min_gift_value": INT}, ["kind"]),
        "started_ms": MS, "deadline_ms": MS, "seed_hash": {**STR, "description": "sha256 of the secret seed, published at start"},
        "algorithm": STR, "state": STR, "entrant_count": INT, "seq": INT,
    }, ["id", "room", "prize", "winners_k", "rule", "started_ms", "deadline_ms", "seed_hash", "algorithm"]),
    "LotteryRecord": {
        "allOf": [ref("LotteryPublic")],
        "type": "object",
        "properties": {
            "state": STR, "drawn_ms": MS, "seed": STR, "winners": arr(STR),
            "proof": obj({"algorithm": STR, "entrants": nullable(arr(STR)), "entrant_count": INT, "entrants_sha256": STR},
                         ["algorithm", "entrant_count", "entrants_sha256"]),
        },
        "description": "Before the draw: the definition, `seed_hash`, `state` and `entrant_count`. After it: the full "
                       "record (`seed`, ordered entrants, `winners`) that `livecommerce lottery verify URL` recomputes.",
    },
    "LotteryStart": obj({
        "prize": ref("Prize"),
        "winners": {"type": "integer", "minimum": 1, "maximum": 1000}, "duration_s": {"type": "integer", "minimum": 1},
        "rule": {"enum": ["enter", "keyword", "gift"]}, "keyword": STR, "min_gift_value": INT, "title": STR,
    }, ["prize", "duration_s"]),
    "Wallet": obj({"user": STR, "balance": INT}, ["user", "balance"]),
    "Topup": obj({"amount": {"type": "integer", "minimum": 1}, "idempotency_key": STR}, ["amount"],
                 desc="The key may come in the `Idempotency-Key` header instead."),
    "TopupResult": obj({"user": STR, "balance": INT, "event_id": STR, "duplicate": BOOL}, ["user", "balance", "event_id", "duplicate"]),
    "LedgerEntry": obj({"id": INT, "delta": INT, "reason": STR, "ref_event_id": STR, "ts": MS}, ["id", "delta", "reason", "ref_event_id", "ts"]),
    "WalletLedger": obj({"user": STR, "balance": INT, "ledger_balance": INT, "entries": arr(ref("LedgerEntry"))},
                        ["user", "balance", "ledger_balance", "entries"]),
    "Gift": obj({"id": ID, "name": STR, "price": INT, "tier": {"type": "integer", "minimum": 1, "maximum": 4}}, ["id", "name", "price", "tier"]),
    "Leaderboard": obj({"room": STR, "host": STR, "top": arr(obj({"rank": INT, "id": STR, "score": INT}, ["rank", "id", "score"]))}, ["top"]),
    "CouponDropCreate": obj({
        "id": STR, "kind": {"enum": ["full_reduction", "percent"]}, "threshold": CENTS,
        "value": {"type": "integer", "minimum": 1, "description": "cents off (full_reduction) or percent (percent)"},
        "quantity": {"type": "integer", "minimum": 1}, "expires_in_s": INT, "expires_ms": MS,
    }, ["kind", "value", "quantity"]),
    "CouponDrop": obj({
        "drop_id": STR, "room": STR, "kind": {"enum": ["full_reduction", "percent"]}, "threshold": INT, "value": INT,
        "quantity": INT, "remaining": INT, "claimed": INT, "used": INT, "expires_ms": MS, "by": STR, "seq": INT,
    }, ["drop_id", "kind", "threshold", "value", "quantity", "expires_ms"]),
    "Coupon": obj({
        "coupon_id": STR, "drop_id": STR, "room": STR, "kind": STR, "threshold": INT, "value": INT, "expires_ms": MS,
        "state": {"enum": ["claimed", "locked", "used", "expired"]}, "claimed_ms": MS, "order_id": STR, "discount": INT,
        "used_ms": MS, "remaining": INT,
    }, ["coupon_id", "drop_id", "kind", "value", "expires_ms", "state"]),
    "Points": obj({"user": STR, "viewer": INT, "host": INT, "level": INT, "host_level": INT}, ["user", "viewer", "host", "level", "host_level"]),
    "PointsLedger": obj({"user": STR, "entries": arr(obj({
        "id": INT, "role": {"enum": ["viewer", "host"]}, "delta": INT, "reason": STR, "ref_event_id": STR, "ts": MS,
    }, ["id", "role", "delta", "reason", "ref_event_id", "ts"]))}, ["user", "entries"]),
    "Redeem": obj({"value": {"type": "integer", "minimum": 1}, "request_id": ID}, ["value", "request_id"]),
    "RedeemAccepted": obj({"event_id": STR, "coupon_id": STR, "cost": INT, "value": INT}, ["event_id", "coupon_id", "cost", "value"]),
    "Alert": obj({
        "alert": {"enum": sorted(ALERTS)}, "help": STR, "active": BOOL,
        "since_ms": nullable(MS), "value": NUM, "threshold": NUM, "message": STR,
    }, ["alert", "active", "value", "threshold", "message"]),
    "Funnel": obj({"viewers": INT, "buyers": INT, "paid": INT}, ["viewers", "buyers", "paid"]),
    "OpsRoom": obj({
        "room": STR, "title": STR, "host": STR, "state": STR, "online": INT,
        "peak_online": {**INT, "description": "the show's peak online (never below `online` while live); a room not live: "
                                              "its last show's peak (0: never live), which viewers now may exceed"},
        "comments_per_s": NUM,
        "gifts_per_s": NUM, "gift_coins_per_s": NUM, "gmv": CENTS, "orders": COUNTS, "funnel": ref("Funnel"),
    }, ["room", "state", "online", "comments_per_s", "gifts_per_s", "gmv", "orders", "funnel"]),
    "OpsCampaign": obj({
        "sale_id": STR, "room": STR, "product_id": STR, "product_name": nullable(STR), "price": CENTS, "stock": INT,
        "state": STR, "remaining": nullable(INT), "reserved": INT, "paid": INT, "conserved": BOOL, "gmv": CENTS,
        "buyers": INT, "orders": COUNTS, "sql": obj({"reserved": INT, "paid": INT}), "drift_units": INT,
        "starts_ms": MS, "ends_ms": MS,
    }, ["sale_id", "room", "stock", "state", "reserved", "paid", "gmv", "drift_units"]),
    "OpsOverview": obj({
        "ts": MS, "node": STR, "sampling": BOOL, "nodes": INT,
        "totals": obj({
            "online": INT, "comments_per_s": NUM, "gifts_per_s": NUM, "gift_coins_per_s": NUM, "errors_per_s": NUM,
            "requests_per_s": NUM, "gmv": CENTS, "orders": COUNTS, "funnel": ref("Funnel"), "timeouts_last_min": INT,
        }, ["online", "comments_per_s", "gifts_per_s", "errors_per_s", "gmv", "orders", "funnel", "timeouts_last_min"]),
        "rooms": arr(ref("OpsRoom")), "campaigns": arr(ref("OpsCampaign")), "commerce_ts": nullable(MS),
        "alerts": arr(ref("Alert")),
    }, ["ts", "node", "totals", "rooms", "campaigns", "alerts"]),
    "OpsSeries": obj({
        "range_s": INT, "step_ms": INT,
        "fast": arr(obj({
            "ts": MS, "online": INT, "comments_per_s": NUM, "gifts_per_s": NUM, "gift_coins_per_s": NUM,
            "errors_per_s": NUM, "requests_per_s": NUM, "nodes": INT, "rooms": {"type": "object"},
        }, ["ts", "online", "comments_per_s", "gifts_per_s", "errors_per_s"])),
        "commerce": arr(obj({
            "ts": MS, "gmv": CENTS, "orders": COUNTS, "paid": INT, "buyers": INT, "timeouts_last_min": INT,
            "remaining": COUNTS,
        }, ["ts", "gmv", "orders", "paid", "timeouts_last_min", "remaining"])),
    }, ["fast", "commerce"]),
    "InventoryReport": obj({
        "sale_id": STR, "conserved": BOOL, "redis": COUNTS, "sql": COUNTS,
        "drift": arr(obj({"order_id": STR, "redis": STR, "sql": nullable(STR)})), "repaired": INT,
    }, ["sale_id", "conserved", "redis", "sql", "drift", "repaired"]),
}

# ------------------------------------------------------------------------------ operations
P_ROOM = {"name": "room", "in": "path", "required": True, "schema": ID}
P_SALE = {"name": "sale", "in": "path", "required": True, "schema": ID}
P_ORDER = {"name": "order", "in": "path", "required": True, "schema": REF}
P_USER = {"name": "user", "in": "path", "required": True, "schema": USER}
P_DROP = {"name": "drop", "in": "path", "required": True, "schema": REF}
Q_LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}}
Q_OFFSET = {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}}
Q_N = {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1}, "description": "how many (top N)"}
H_IDEM = {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"},
          "description": "one answer per key and caller: a retry with the same request returns the first answer; "
                         "the key reused for another route, target or body is 422 `idempotency_conflict`"}

ERRORS = {
    "400": "invalid body or parameters (`invalid` names the parameter; `bad_json`; `bad_request`: nested deeper than 32)",
    "401": "missing or bad token (`unauthorized`)",
    "403": "the token's role or room does not allow this (`forbidden`)",
    "404": "no such resource (`not_found`)",
    "409": "conflicts with the current state (the code says which)",
    "413": "request body over 64 KiB (`frame_too_big`)",
    "422": "an idempotency key reused for another request (`idempotency_conflict`)",
}


def op(summary: str, *, tag: str, auth: str | None, ok: tuple[str, J | None, str] = ("200", None, "OK"),
       body: J | None = None, params: list[J] | None = None, errors: tuple[int, ...] = (), desc: str = "") -> J:
    """One operation. ``auth`` is None for public endpoints, else who may call it;
    ``errors`` adds error statuses beyond 400 (and 401/403 for signed-in calls)."""
    status, schema, what = ok
    out: J = {"summary": summary, "tags": [tag], "responses": {}}
    if desc or auth:
        out["description"] = " ".join(x for x in (desc, f"Who: {auth}." if auth else "") if x)
    out["security"] = [{"bearer": []}] if auth else []
    if auth == OPS:  # checked before the input (gateway/validation.py): 401, then 403, then 400
        out["x-roles"] = ["ops"]
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    resp: J = {"description": what}
    if schema is not None:
        resp["content"] = {"application/json": {"schema": schema}}
    out["responses"][status] = resp
    if status in ("201", "202") and "200 with" in what:  # a repeated request answers 200 with the same shape
        out["responses"]["200"] = {**resp, "description": "repeated: " + what}
    codes = {"400"} | ({"401", "403"} if auth else set()) | {str(c) for c in errors}
    for code in sorted(codes):
        out["responses"][code] = {"description": ERRORS[code], "content": {"application/json": {"schema": ref("Error")}}}
    return out


HOST = "the room's host (token role `host` listing the room) or ops"
SELF = "the user themself or ops"
OPS = "ops"
ANYONE_SIGNED = "any signed-in user"
NOTICE = obj({"text": {"type": "string", "minLength": 1, "maxLength": 1000}, "data": {"type": "object"}}, ["text"])

# Each capability module's paths, merged into the document when the module is served
# (``gateway.capabilities.CAPABILITIES``); a module may also export ``OPENAPI_PATHS`` (and
# ``OPENAPI_SCHEMAS``) itself, which take precedence.
PATHS_BY_MODULE: dict[str, dict[str, dict[str, J]]] = {
    "gateway.http": {
        "/healthz": {"get": op("Liveness", tag="ops", auth=None, ok=("200", obj({"ok": BOOL, "node": STR, "now_ms": INT}, ["ok"]),
                                                                                 "the process answers (now_ms: its clock)"))},
        "/readyz": {"get": op("Readiness (Redis reachable, not draining)", tag="ops", auth=None,
                              ok=("200", obj({"ok": BOOL}, ["ok"]), "ready; 503 while Redis is unreachable or the node drains on SIGTERM"))},
        "/metrics": {"get": {**op("Prometheus metrics", tag="ops", auth=None, ok=("200", None, "text exposition format")),
                             "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": STR}}}}}},
        "/api/v1/rooms/{room}/online": {"get": op("Viewers online now (all nodes)", tag="rooms", auth=None, params=[P_ROOM],
                                                  ok=("200", obj({"room": STR, "online": INT, "seq": INT}, ["room", "online", "seq"]), "count"))},
    },
    "gateway.comments": {
        "/api/v1/rooms/{room}/announce": {"post": op("Announce to the room (`notice` event)", tag="rooms", auth=HOST, params=[P_ROOM],
                                                     body={"anyOf": [NOTICE, obj({"items": {**arr(NOTICE), "minItems": 1, "maxItems": 100}}, ["items"])]},
                                                     ok=("200", {"anyOf": [obj({"seq": INT}, ["seq"]), obj({"seqs": arr(INT)}, ["seqs"])]},
                                                         "published (`seqs` for a batch of `items`)"))},
    },
    "gateway.commerce": {
        "/api/v1/campaigns": {
            "post": op("Create flash-sale campaigns (one object, a list, or {campaigns: [...]})", tag="sales", auth=HOST,
                       body={"oneOf": [ref("CampaignCreate"), arr(ref("CampaignCreate")), obj({"campaigns": arr(ref("CampaignCreate"))}, ["campaigns"])]},
                       ok=("201", obj({"campaigns": arr({"allOf": [ref("Sale")], "type": "object",
                                                          "properties": {"sale_id": ID, "created": BOOL, "state": STR}, "required": ["sale_id", "created", "state"]})}, ["campaigns"]), "created")),
            "get": op("List campaigns with live stock figures", tag="sales", auth="ops (all rooms) or a host with ?room=",
                      params=[{"name": "room", "in": "query", "schema": ID}, Q_LIMIT],
                      ok=("200", obj({"campaigns": arr({"allOf": [ref("Sale")], "type": "object",
                                                         "properties": {"product_name": nullable(STR), "state": STR, "remaining": INT, "reserved": INT, "paid": INT}})}, ["campaigns"]), "campaigns")),
        },
        "/api/v1/sales/{sale}/start": {"post": op("Open a prepared sale now (`sale.started`)", tag="sales", auth=HOST, params=[P_SALE],
                                                  ok=("200", ref("SaleState"), "live (or sold_out)"), errors=(404, 409))},
        "/api/v1/sales/{sale}/stop": {"post": op("End a sale now (`sale.ended`)", tag="sales", auth=HOST, params=[P_SALE],
                                                 ok=("200", ref("SaleState"), "ended"), errors=(404,))},
        "/api/v1/sales/{sale}/stats": {"get": op("Stock conservation and SQL order totals of a sale", tag="sales", auth=HOST, params=[P_SALE],
                                                 ok=("200", ref("SaleStats"), "figures"), errors=(404,))},
        "/api/v1/sales/{sale}/buy": {"post": op("Reserve units (HTTP twin of the `buy` command)", tag="sales", auth=ANYONE_SIGNED, params=[P_SALE],
                                                body=ref("BuyRequest"), ok=("201", ref("Reserved"), "reserved (200 with duplicate=true for a repeated request_id)"),
                                                errors=(409,), desc="409 codes: `sold_out`, `limit_reached`, `not_started`, `ended`, `room_ended`; 422 `idempotency_conflict`: the request_id was used for another quantity.")},
        "/api/v1/orders": {"get": op("List orders (your own; ops: anyone's)", tag="orders", auth="signed-in users (own orders) or ops",
                                     params=[{"name": "user", "in": "query", "schema": STR}, {"name": "sale", "in": "query", "schema": ID},
                                             {"name": "room", "in": "query", "schema": ID},
                                             {"name": "state", "in": "query", "schema": {"enum": list(ORDER_STATES)}},
                                             Q_LIMIT, Q_OFFSET],
                                     ok=("200", obj({"orders": arr(ref("Order"))}, ["orders"]), "orders, newest first"))},
        "/api/v1/orders/{order}": {"get": op("One order: SQL row, Redis hold, history, parcels and fulfilment progress", tag="orders",
                                             auth="the buyer or ops", params=[P_ORDER],
                                             ok=("200", obj({"order": nullable(ref("Order")), "hold": nullable(ref("Hold")), "history": arr(ref("OrderEvent")),
                                                             "shipments": arr(obj({"shipment_id": STR, "kind": {"enum": ["outbound", "return"]},
                                                                                   "carrier": STR, "tracking_number": STR, "state": {"enum": ["shipped", "delivered"]},
                                                                                   "lines": {"type": "object", "additionalProperties": INT}})),
                                                             "fulfilment": obj({"progress": {"enum": ["unshipped", "shipped", "delivered", "completed"]},
                                                                                "owed_units": nullable(INT), "completed_ms": nullable(MS),
                                                                                "completed_by": nullable(STR)})},
                                                            ["order", "hold", "history"]), "the order"), errors=(404,),
                                             desc="`shipments`: the order's parcels (docs/commerce.md, Fulfilment); `fulfilment.progress`: how far "
                                                  "it travelled, as the fulfilment record knows it (ahead of `order.state` until the orders worker "
                                                  "applied the step).")},
        "/api/v1/orders/{order}/pay": {"post": op("Pay a reserved order (simulated payment provider)", tag="orders", auth="the buyer or ops",
                                                  params=[P_ORDER, H_IDEM], body=obj({"coupon_id": STR}),
                                                  ok=("200", ref("PayResult"), "paid"), errors=(404, 409),
                                                  desc="409 `expired` / `already_cancelled`: no payment taken. The body is optional.")},
        "/api/v1/orders/{order}/cancel": {"post": op("Cancel a reserved order (stock released)", tag="orders", auth="the buyer or ops", params=[P_ORDER],
                                                     ok=("200", obj({"order_id": STR, "outcome": {"enum": ["released", "already_released", "already_paid"]}},
                                                                    ["order_id", "outcome"]), "outcome"), errors=(404, 409))},
    },
    "gateway.rooms": {
        "/api/v1/rooms": {"post": op("Create a room", tag="rooms", auth="a host (for a room its token lists) or ops", body=ref("RoomCreate"),
                                     ok=("201", ref("Room"), "created"), errors=(409,))},
        "/api/v1/rooms/{room}": {"get": op("A room, its state and the last show's summary", tag="rooms", auth=None, params=[P_ROOM],
                                           ok=("200", ref("Room"), "the room"), errors=(404,))},
        "/api/v1/rooms/{room}/live": {"post": op("Go live (`room.live` to viewers)", tag="rooms", auth=HOST, params=[P_ROOM],
                                                 ok=("200", ref("Room"), "live"), errors=(404, 409))},
        "/api/v1/rooms/{room}/end": {"post": op("End the show (`room.ended` with the summary)", tag="rooms", auth=HOST, params=[P_ROOM],
                                                ok=("200", ref("Room"), "ended"), errors=(404, 409))},
        "/api/v1/rooms/{room}/pin": {
            "post": op("Pin a product (`product.pinned`)", tag="rooms", auth=HOST, params=[P_ROOM], body=obj({"product_id": ID}, ["product_id"]),
                       ok=("200", ref("Pin"), "pinned"), errors=(404,)),
            "delete": op("Unpin (`product.unpinned`)", tag="rooms", auth=HOST, params=[P_ROOM],
                         ok=("200", obj({"unpinned": BOOL}, ["unpinned"]), "whether a pin was removed")),
        },
    },
    "gateway.likes": {
        "/api/v1/rooms/{room}/likes": {"get": op("Likes total", tag="rooms", auth=None, params=[P_ROOM],
                                                 ok=("200", obj({"room": STR, "likes": INT}, ["room", "likes"]), "total"))},
    },
    "gateway.lottery": {
        "/api/v1/rooms/{room}/lotteries": {
            "post": op("Start a lottery (`lottery.started` with the seed hash)", tag="lotteries", auth=HOST, params=[P_ROOM],
                       body=ref("LotteryStart"), ok=("201", ref("LotteryPublic"), "started")),
            "get": op("The room's open lotteries", tag="lotteries", auth=None, params=[P_ROOM],
                      ok=("200", obj({"lotteries": arr(ref("LotteryPublic"))}, ["lotteries"]), "open lotteries")),
        },
        "/api/v1/rooms/{room}/lotteries/mine": {
            "get": op("The room's open lotteries the caller has entered (a page reloaded mid-show shows them as entered)",
                      tag="lotteries", auth=ANYONE_SIGNED, params=[P_ROOM],
                      ok=("200", obj({"entered": arr(ID)}, ["entered"]), "ids of the open lotteries the caller is in")),
        },
        "/api/v1/lotteries/{id}": {"get": op("A lottery's public, verifiable record", tag="lotteries", auth=None,
                                             params=[{"name": "id", "in": "path", "required": True, "schema": ID}],
                                             ok=("200", ref("LotteryRecord"), "record"), errors=(404,))},
    },
    "gateway.wallet": {
        "/api/v1/wallets/{user}": {"get": op("Wallet balance (coins)", tag="wallets", auth=SELF, params=[P_USER],
                                             ok=("200", ref("Wallet"), "balance"))},
        "/api/v1/wallets/{user}/topup": {"post": op("Top up test coins (idempotent on the key)", tag="wallets", auth=SELF, params=[P_USER, H_IDEM],
                                                    body=ref("Topup"), ok=("201", ref("TopupResult"), "credited (200 with duplicate=true for a repeated key)"),
                                                    errors=(409,))},
        "/api/v1/wallets/{user}/ledger": {"get": op("Wallet ledger (SQL), newest first", tag="wallets", auth=SELF, params=[P_USER, Q_LIMIT, Q_OFFSET],
                                                    ok=("200", ref("WalletLedger"), "entries"))},
    },
    "gateway.gifts": {
        "/api/v1/gifts": {"get": op("The gift catalogue, cheapest first", tag="gifts", auth=None,
                                    ok=("200", obj({"gifts": arr(ref("Gift"))}, ["gifts"]), "catalogue"))},
        "/api/v1/rooms/{room}/leaderboard": {"get": op("Top gifters of a room", tag="gifts", auth=None, params=[P_ROOM, Q_N],
                                                       ok=("200", ref("Leaderboard"), "board"))},
        "/api/v1/hosts/{host}/leaderboard": {"get": op("A host's top fans", tag="gifts", auth=None,
                                                       params=[{"name": "host", "in": "path", "required": True, "schema": USER}, Q_N],
                                                       ok=("200", ref("Leaderboard"), "board"))},
        "/api/v1/leaderboards/hosts": {"get": op("Hosts by gifts received", tag="gifts", auth=None, params=[Q_N],
                                                 ok=("200", ref("Leaderboard"), "board"))},
    },
    "gateway.coupons": {
        "/api/v1/rooms/{room}/coupons": {
            "post": op("Drop coupons in a room (`coupon.dropped`)", tag="coupons", auth=HOST, params=[P_ROOM], body=ref("CouponDropCreate"),
                       ok=("201", ref("CouponDrop"), "dropped"), errors=(409,)),
            "get": op("The room's live coupon drops", tag="coupons", auth=None, params=[P_ROOM],
                      ok=("200", obj({"room": STR, "drops": arr(ref("CouponDrop"))}, ["room", "drops"]), "drops")),
        },
        "/api/v1/coupons/{drop}": {"get": op("A coupon drop and its counts", tag="coupons", auth=None, params=[P_DROP],
                                             ok=("200", ref("CouponDrop"), "drop"), errors=(404,))},
        "/api/v1/coupons/{drop}/claim": {"post": op("Claim one coupon of a drop", tag="coupons", auth=ANYONE_SIGNED, params=[P_DROP],
                                                    ok=("201", ref("Coupon"), "claimed"), errors=(404, 409),
                                                    desc="409 codes: `sold_out`, `already_claimed`, `expired`.")},
        "/api/v1/users/{user}/coupons": {"get": op("A user's coupons", tag="coupons", auth=SELF, params=[P_USER],
                                                   ok=("200", obj({"user": STR, "coupons": arr(ref("Coupon"))}, ["user", "coupons"]), "coupons"))},
    },
    "gateway.points": {
        "/api/v1/points/{user}": {"get": op("Points balances and levels", tag="points", auth=SELF, params=[P_USER],
                                            ok=("200", ref("Points"), "balances"))},
        "/api/v1/points/{user}/ledger": {"get": op("Points ledger, newest first", tag="points", auth=SELF,
                                                   params=[P_USER, {"name": "role", "in": "query", "schema": {"enum": ["viewer", "host"]}}, Q_LIMIT, Q_OFFSET],
                                                   ok=("200", ref("PointsLedger"), "entries"))},
        "/api/v1/points/{user}/redeem": {"post": op("Redeem points for a coupon", tag="points", auth="the user themself", params=[P_USER],
                                                    body=ref("Redeem"), ok=("202", ref("RedeemAccepted"), "accepted: the points worker decides"), errors=(409,))},
    },
    "gateway.ops": {
        "/api/v1/ops/overview": {"get": op("Live rooms, rates, orders, funnel, campaigns and alerts (whole cluster)", tag="ops", auth=OPS,
                                           ok=("200", ref("OpsOverview"), "snapshot"))},
        "/api/v1/ops/series": {"get": op("Time series the dashboard charts draw", tag="ops", auth=OPS,
                                         params=[{"name": "since", "in": "query", "schema": MS, "description": "only samples after this time"},
                                                 {"name": "range_s", "in": "query",
                                                  "schema": {"type": "integer", "enum": [600, 3600, 21600, 86400]},
                                                  "description": "how far back (default 600: one-second samples; longer ranges "
                                                                 "come in steps of 10 s, 1 min, 4 min)"}],
                                         ok=("200", ref("OpsSeries"), "samples"))},
        "/api/v1/ops/alerts": {"get": op("Alert states (also Prometheus `lc_alert_active{alert}`)", tag="ops", auth=OPS,
                                         ok=("200", obj({"alerts": arr(ref("Alert"))}, ["alerts"]), "alerts"))},
        "/api/v1/ops/inventory/{sale}": {"get": op("Per-order Redis vs SQL check of a sale (report only)", tag="ops", auth=OPS, params=[P_SALE],
                                                   ok=("200", ref("InventoryReport"), "report"), errors=(404,))},
    },
    "gateway.openapi": {
        "/api/v1/openapi.json": {"get": op("This document", tag="docs", auth=None, ok=("200", {"type": "object"}, "OpenAPI 3.1"))},
        "/api/v1/docs": {"get": {**op("Human-readable API docs", tag="docs", auth=None),
                                 "responses": {"200": {"description": "HTML page", "content": {"text/html": {"schema": STR}}}}}},
    },
}

# Capabilities added after the first document; their schemas stay loose (``object`` with
# the fields clients rely on) until their owners tighten them.
P_REFUND = {"name": "refund", "in": "path", "required": True, "schema": REF}
P_TICKET = {"name": "ticket", "in": "path", "required": True, "schema": REF}
P_HOST = {"name": "host", "in": "path", "required": True, "schema": USER}
P_SEGMENT = {"name": "segment", "in": "path", "required": True, "schema": REF}
ANY_OBJ: J = {"type": "object"}
REFUND: J = obj({"refund_id": STR, "order_id": STR, "qty": INT, "amount": CENTS, "state": STR, "reason": STR}, ["refund_id"])
TICKET: J = obj({"id": STR, "user_id": STR, "kind": STR, "priority": STR, "subject": STR, "status": STR,
                 "created_ms": MS, "sla": {"type": "object"}}, ["id", "status"])
SEGMENT_RULE: J = {"type": "object", "description": "the rule language of livecommerce/segments.py"}
TARGET: J = obj({"target_id": STR, "drop_id": STR, "members": INT, "delivered": INT}, ["target_id"])
FUNNEL: J = obj({"kind": STR, "id": STR, "room": nullable(STR), "gmv": CENTS, "orders": COUNTS}, ["kind", "id"])

PATHS_BY_MODULE.update({
    "gateway.refunds": {
        "/api/v1/orders/{order}/refunds": {
            "post": op("Ask for a refund of a paid order", tag="after-sales", auth="the buyer", params=[P_ORDER],
                       body=obj({"qty": INT, "reason": STR, "note": STR}, ["reason"]),
                       ok=("202", REFUND, "requested (200 with duplicate=true when repeated while open)"), errors=(404, 409)),
            "get": op("The order's refunds", tag="after-sales", auth="the buyer, ops or the room's host", params=[P_ORDER],
                      ok=("200", obj({"order_id": STR, "refunds": arr(REFUND)}, ["order_id", "refunds"]), "refunds"), errors=(404,)),
        },
        "/api/v1/orders/{order}/history": {"get": op("The order's whole history (states and refunds), oldest first", tag="after-sales",
                                                     auth="the buyer, ops or the room's host", params=[P_ORDER],
                                                     ok=("200", obj({"order_id": STR, "state": STR, "history": arr(ANY_OBJ)}, ["order_id", "history"]), "history"),
                                                     errors=(404,))},
        "/api/v1/refunds": {"get": op("List refunds", tag="after-sales", auth="ops (all), a host (?room=), a viewer (own)",
                                      params=[{"name": "state", "in": "query", "schema": {"enum": ["requested", "approved", "rejected", "refunded"]}},
                                              {"name": "room", "in": "query", "schema": ID}, {"name": "user", "in": "query", "schema": STR}, Q_LIMIT, Q_OFFSET],
                                      ok=("200", obj({"refunds": arr(REFUND)}, ["refunds"]), "refunds"))},
        "/api/v1/refunds/{refund}/approve": {"post": op("Approve a refund", tag="after-sales", auth=HOST, params=[P_REFUND],
                                                        body=obj({"note": STR}), ok=("200", REFUND, "decided"), errors=(404, 409))},
        "/api/v1/refunds/{refund}/reject": {"post": op("Reject a refund", tag="after-sales", auth=HOST, params=[P_REFUND],
                                                       body=obj({"note": STR}), ok=("200", REFUND, "decided"), errors=(404, 409))},
    },
    "gateway.tickets": {
        "/api/v1/tickets": {
            "post": op("Open a support ticket", tag="after-sales", auth=ANYONE_SIGNED,
                       body=obj({"subject": STR, "text": STR, "kind": STR, "priority": STR, "order_id": STR, "room_id": STR}, ["subject", "text"]),
                       ok=("201", TICKET, "opened with its SLA"), errors=(404,)),
            "get": op("List tickets, most urgent SLA first", tag="after-sales", auth="ops (all) or the owner (own)",
                      params=[{"name": "status", "in": "query", "schema": {"enum": ["open", "in_progress", "resolved", "closed"]}},
                              {"name": "breached", "in": "query", "schema": STR}, Q_LIMIT, Q_OFFSET],
                      ok=("200", obj({"tickets": arr(TICKET), "now_ms": MS}, ["tickets"]), "tickets")),
        },
        "/api/v1/tickets/{ticket}": {"get": op("A ticket, its SLA timer and history", tag="after-sales", auth="the owner or ops",
                                               params=[P_TICKET], ok=("200", TICKET, "ticket"), errors=(404,))},
        "/api/v1/tickets/{ticket}/status": {"post": op("Move a ticket", tag="after-sales", auth="ops; the owner may close or reopen",
                                                       params=[P_TICKET], body=obj({"status": STR, "note": STR, "assignee": STR}, ["status"]),
                                                       ok=("200", TICKET, "moved"), errors=(404, 409))},
    },
    "gateway.fanclub": {
        "/api/v1/hosts/{host}/follow": {
            "post": op("Follow a host", tag="fans", auth=ANYONE_SIGNED, params=[P_HOST],
                       ok=("202", obj({"host": STR, "following": BOOL, "v": INT}, ["host", "following"]), "accepted")),
            "delete": op("Unfollow a host", tag="fans", auth=ANYONE_SIGNED, params=[P_HOST],
                         ok=("202", obj({"host": STR, "following": BOOL, "v": INT}, ["host", "following"]), "accepted")),
        },
        "/api/v1/hosts/{host}/fanclub": {
            "post": op("Join a host's fan club (also follows)", tag="fans", auth=ANYONE_SIGNED, params=[P_HOST],
                       ok=("202", obj({"host": STR, "member": BOOL, "v": INT}, ["host", "member"]), "accepted")),
            "delete": op("Leave a host's fan club", tag="fans", auth=ANYONE_SIGNED, params=[P_HOST],
                         ok=("202", obj({"host": STR, "member": BOOL, "v": INT}, ["host", "member"]), "accepted")),
        },
        "/api/v1/hosts/{host}/fans": {"get": op("A host's fan leaderboard by intimacy", tag="fans", auth=None, params=[P_HOST, Q_N],
                                                ok=("200", obj({"host": STR, "members": INT, "followers": INT, "top": arr(ANY_OBJ)}, ["host", "top"]), "board"))},
        "/api/v1/me/fanclubs": {"get": op("My follows and fan-club memberships", tag="fans", auth=ANYONE_SIGNED,
                                          ok=("200", obj({"user": STR, "fanclubs": arr(ANY_OBJ)}, ["user", "fanclubs"]), "memberships"))},
    },
    "gateway.profiles": {
        "/api/v1/users/{user}/profile": {"get": op("A viewer's profile (RFM, lifecycle, interests)", tag="profiles", auth=OPS, params=[P_USER],
                                                   ok=("200", ANY_OBJ, "profile"), errors=(404,))},
        "/api/v1/me/profile": {"get": op("My profile", tag="profiles", auth=ANYONE_SIGNED, ok=("200", ANY_OBJ, "profile"), errors=(404,))},
        "/api/v1/me/data": {
            "get": op("Export everything kept about me", tag="profiles", auth=ANYONE_SIGNED, ok=("200", ANY_OBJ, "export")),
            "delete": op("Erase my personal data (ledgers stay balanced under a pseudonym)", tag="profiles", auth=ANYONE_SIGNED,
                         ok=("200", obj({"erased": BOOL, "pseudonym": STR}, ["erased"]), "erased"), errors=(409,)),
        },
    },
    "gateway.segments": {
        "/api/v1/segments": {
            "post": op("Define a segment", tag="segments", auth=OPS, body=obj({"id": STR, "name": STR, "rule": SEGMENT_RULE}, ["name", "rule"]),
                       ok=("201", obj({"segment": ANY_OBJ, "size": INT}, ["segment", "size"]), "created")),
            "get": op("List segments", tag="segments", auth=OPS, ok=("200", obj({"segments": arr(ANY_OBJ)}, ["segments"]), "segments")),
        },
        "/api/v1/segments/preview": {"post": op("Preview a rule's members", tag="segments", auth=OPS, body=obj({"rule": SEGMENT_RULE}, ["rule"]),
                                                ok=("200", obj({"size": INT, "sample": arr(STR)}, ["size", "sample"]), "preview"))},
        "/api/v1/segments/{segment}": {
            "get": op("A segment and its targets", tag="segments", auth=OPS, params=[P_SEGMENT],
                      ok=("200", obj({"segment": ANY_OBJ, "targets": arr(ANY_OBJ)}, ["segment"]), "segment"), errors=(404,)),
            "put": op("Replace a segment's name and rule", tag="segments", auth=OPS, params=[P_SEGMENT],
                      body=obj({"name": STR, "rule": SEGMENT_RULE}, ["rule"]),
                      ok=("200", obj({"segment": ANY_OBJ, "size": INT}, ["segment", "size"]), "replaced"), errors=(404,)),
        },
        "/api/v1/segments/{segment}/preview": {"get": op("Preview a segment's members", tag="segments", auth=OPS, params=[P_SEGMENT],
                                                         ok=("200", obj({"size": INT, "sample": arr(STR)}, ["size", "sample"]), "preview"), errors=(404,))},
        "/api/v1/segments/{segment}/coupons": {"post": op("A coupon drop only the segment's members can claim", tag="segments", auth=OPS,
                                                          params=[P_SEGMENT], body=ANY_OBJ, ok=("201", TARGET, "targeted"), errors=(404,))},
        "/api/v1/segments/{segment}/push": {"post": op("A notice to the segment's online members", tag="segments", auth=OPS, params=[P_SEGMENT],
                                                       body=obj({"text": STR, "drop_id": STR, "sale_id": STR}, ["text"]),
                                                       ok=("201", TARGET, "pushed"), errors=(404,))},
        "/api/v1/segments/{segment}/targets": {"get": op("Each target's members, delivered and redeemed", tag="segments", auth=OPS,
                                                         params=[P_SEGMENT], ok=("200", obj({"segment_id": STR, "targets": arr(ANY_OBJ)}, ["targets"]), "targets"))},
    },
    "gateway.funnel": {
        "/api/v1/sales/{sale}/funnel": {"get": op("A flash sale's funnel (viewers, saw, tried, reserved, paid) and GMV", tag="sales", auth=HOST,
                                                  params=[P_SALE], ok=("200", FUNNEL, "funnel"), errors=(404,))},
        "/api/v1/coupons/{drop}/funnel": {"get": op("A coupon drop's funnel", tag="coupons", auth=HOST, params=[P_DROP],
                                                    ok=("200", FUNNEL, "funnel"), errors=(404,))},
    },
})


# Operations that take an ``Idempotency-Key`` header (gateway/idempotency.py), and those
# whose body carries a key of its own (``request_id``, ``idempotency_key``, a campaign id):
# both answer 422 ``idempotency_conflict`` for a key reused with another request.
IDEMPOTENT_BY_HEADER = {
    ("post", "/api/v1/orders/{order}/pay"), ("post", "/api/v1/wallets/{user}/topup"),
    ("post", "/api/v1/orders/{order}/refunds"), ("post", "/api/v1/coupons/{drop}/claim"),
    ("post", "/api/v1/rooms/{room}/lotteries"), ("post", "/api/v1/campaigns"),
}
IDEMPOTENT_BY_BODY = {("post", "/api/v1/points/{user}/redeem"), ("post", "/api/v1/sales/{sale}/buy"),
                      ("post", "/api/v1/rooms/{room}/redpackets")}


def _error(code: str) -> J:
    return {"description": ERRORS[code], "content": {"application/json": {"schema": ref("Error")}}}


def _mark_common_errors(paths: dict[str, dict[str, J]]) -> None:
    """What every operation of a kind may answer: 404 where a path names a resource that may
    not exist, 413 where a body may be too large, 409 where a change meets a state that
    refuses it (e.g. `room_ended` in a room whose show is over)."""
    for path, methods in paths.items():
        for method, spec in methods.items():
            if not isinstance(spec, dict) or "responses" not in spec:
                continue
            if "{" in path and path.startswith("/api/"):
                spec["responses"].setdefault("404", _error("404"))
            if "requestBody" in spec:
                spec["responses"].setdefault("413", _error("413"))
            if method in ("post", "put", "delete") and path.startswith("/api/"):
                spec["responses"].setdefault("409", _error("409"))


def _mark_idempotent(paths: dict[str, dict[str, J]]) -> None:
    err = _error("422")
    for method, path in IDEMPOTENT_BY_HEADER | IDEMPOTENT_BY_BODY:
        spec = paths.get(path, {}).get(method)
        if spec is None:
            continue
        spec["responses"].setdefault("422", err)
        params = spec.setdefault("parameters", [])
        if (method, path) in IDEMPOTENT_BY_HEADER and not any(p.get("name") == "Idempotency-Key" for p in params):
            params.append(copy.deepcopy(H_IDEM))


# ---------------------------------------------------------------- examples and operation ids
# What an example value of a field looks like, by the field's name (the schema gives the
# type and bounds; these make an example read like a real request or answer).
_STRING_BY_NAME = {
    "room": "demo", "room_id": "demo", "user": "viewer1", "user_id": "viewer1", "host": "host1", "by": "host1",
    "owner": "host1", "actor": "ops1", "reporter": "viewer2", "viewer": "viewer1", "winner": "viewer1",
    "sale_id": "s-tea-1", "order_id": "o-3f9a2c", "product_id": "tea-set", "drop_id": "d-88", "coupon_id": "d-88|viewer1",
    "packet_id": "rp-7c1e", "report_id": "rep-12", "audit_id": "a-31", "event_id": "e-5b2d", "request_id": "r-1",
    "idempotency_key": "k-2f7", "title": "Spring tea show", "text": "tea please", "keyword": "tea please",
    "name": "Tea set", "product_name": "Tea set", "reason": "spam", "message": "what went wrong, and what to do next",
    "code": "invalid", "password": "8888", "seed_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "seed": "5f2b6d0c8e1a4b3f9d7c6e5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", "algorithm": "lc-draw-v1",
    "image": "https://cdn.example.com/tea.jpg", "record_url": "/api/v1/lotteries/l-1", "greeting": "Welcome!",
    "description": "A porcelain tea set", "category": "tea", "node": "gw1", "state": "live", "status": "ok",
    "role": "viewer", "experiment": "exp-feed", "arm": "control",
}
_INT_BY_NAME = {"price": 9900, "unit_price": 9900, "amount": 9900, "discount": 1000, "balance": 1000, "stock": 100,
                "qty": 1, "quantity": 100, "per_user_limit": 2, "limit": 2, "winners_k": 3, "winners": 3, "duration_s": 600,
                "seq": 42, "count": 12, "value": 1000, "threshold": 9900, "rank": 1, "level": 3, "v": 1, "index": 0}
_EXAMPLE_MS = 1_764_849_600_000  # 2025-12-04 12:00 UTC


def example_of(schema: J, schemas: J, name: str = "", depth: int = 0) -> Any:
    """A value of ``schema`` for the document's ``example`` fields: names give it meaning
    (``_STRING_BY_NAME``), the schema its type and bounds. ``tests/test_openapi.py`` checks
    each example against its schema."""
    if "$ref" in schema:
        return example_of(schemas[schema["$ref"].removeprefix("#/components/schemas/")], schemas, name, depth)
    if "example" in schema:
        return schema["example"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return example_of(schema[key][0], schemas, name, depth)
    if "allOf" in schema:
        out: J = {}
        for sub in schema["allOf"]:
            got = example_of(sub, schemas, name, depth)
            if isinstance(got, dict):
                out.update(got)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        if rest.get("properties"):
            out.update(example_of({**rest, "type": "object"}, schemas, name, depth))
        return out
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t == "object" or (t is None and "properties" in schema):
        if depth > 5:
            return {}
        props = schema.get("properties", {})
        return {k: example_of(v, schemas, k, depth + 1) for k, v in props.items()}
    if t == "array":
        if depth > 5:
            return []
        return [example_of(schema.get("items", {}), schemas, name.rstrip("s"), depth + 1)]
    if t == "string":
        v = _STRING_BY_NAME.get(name, "abc123" if "pattern" in schema else "text")
        if "pattern" in schema and not re.search(schema["pattern"], v):
            v = next((c for c in ("abc123", "demo", "a") if re.search(schema["pattern"], c)), v)
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        v = v.ljust(lo, "x")
        return v[:hi] if hi is not None else v
    if t in ("integer", "number"):
        n: int
        if name.endswith("_ms") or name in ("ts", "at"):
            n = _EXAMPLE_MS
        elif name.endswith("_s"):
            n = 60
        else:
            n = _INT_BY_NAME.get(name, 1)
        n = max(n, schema.get("minimum", n))
        return min(n, schema.get("maximum", n))
    if t == "boolean":
        return True
    if t == "null":
        return None
    return {}


def _camel(dotted: str) -> str:
    """``lotteries.http_start`` -> ``lotteriesStart`` (an operation id)."""
    words = [w for part in dotted.split(".") for w in part.split("_") if w and w != "http"]
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


class _Named:
    """Stands in for the capabilities when the route table is read for names only: each
    attribute is the dotted path that reached it (``s.lotteries.http_start``)."""

    def __init__(self, path: str = "") -> None:
        self.path = path

    def __getattr__(self, name: str) -> _Named:
        return _Named(f"{self.path}.{name}" if self.path else name)


def operation_ids() -> dict[tuple[str, str], str]:
    """``(method, path) -> operationId`` from the route table (``gateway/routes.py``): the
    capability and the method that serves the route, e.g. ``lotteriesStart``."""
    from . import routes  # the table imports every capability, and they import this module

    named: dict[tuple[str, str], str] = {}
    for route in routes.http_routes(cast(Any, _Named())):
        handler = route.handler
        if isinstance(handler, _Named):
            named[(route.method.lower(), route.path)] = _camel(handler.path)
    # one method serving several routes (PUT and DELETE of a follow, two paths of one
    # export): the HTTP method, then the path's last literal segment, tell them apart
    uses: dict[str, int] = {}
    for name in named.values():
        uses[name] = uses.get(name, 0) + 1
    out: dict[tuple[str, str], str] = {}
    for (method, path), name in named.items():
        if uses[name] > 1:
            name += method.capitalize()
            if sum(1 for (m, _), n in named.items() if n == named[(method, path)] and m == method) > 1:
                last = next((seg for seg in reversed(path.split("/")) if seg and not seg.startswith("{")), "")
                name += _camel(last.replace("-", "_")).capitalize()
        out[(method, path)] = name
    return out


def _add_ids_and_examples(paths: dict[str, dict[str, J]], schemas: J) -> None:
    ids = operation_ids()
    for path, methods in paths.items():
        for method, spec in methods.items():
            if not isinstance(spec, dict) or "responses" not in spec:
                continue
            op_id = ids.get((method, path))
            if op_id is not None:
                spec.setdefault("operationId", op_id)
            body = spec.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and "schema" in body:
                body.setdefault("example", example_of(body["schema"], schemas))
            for status, resp in spec["responses"].items():
                media = resp.get("content", {}).get("application/json") if isinstance(resp, dict) else None
                if media is None or "schema" not in media:
                    continue
                if status.startswith("2"):
                    media.setdefault("example", example_of(media["schema"], schemas))
                elif status in ERROR_EXAMPLES:
                    media.setdefault("example", {"error": ERROR_EXAMPLES[status]})


#: an example per error status (the codes of livecommerce/errors.py's table)
ERROR_EXAMPLES: dict[str, J] = {
    "400": {"code": "bad_request", "message": "body is not JSON: send an object"},
    "401": {"code": "unauthorized", "message": "missing or invalid token: sign in again"},
    "403": {"code": "forbidden", "message": "only the room's host or ops may do this"},
    "404": {"code": "not_found", "message": "no such order"},
    "409": {"code": "room_ended", "message": "the show in room 'demo' has ended"},
    "413": {"code": "too_large", "message": "body over 64 KiB"},
    "422": {"code": "idempotency_conflict", "message": "this Idempotency-Key was used for another request: use a new key"},
    "429": {"code": "rate_limited", "message": "too many requests: retry in 1 s"},
    "503": {"code": "unavailable", "message": "Redis is unreachable: retry with the same key"},
}


def document(modules: list[str] | None = None, server_url: str | None = None) -> J:
    """The OpenAPI 3.1 document of the capability ``modules`` (default: what
    ``gateway.capabilities.CAPABILITIES`` serves), a fresh copy each call."""
    import importlib

    paths: dict[str, dict[str, J]] = {}
    schemas = copy.deepcopy(SCHEMAS)
    for name in modules if modules is not None else CAPABILITIES:
        own = PATHS_BY_MODULE.get(name, {})
        try:
            mod = importlib.import_module(name)
        except ImportError:
            mod = None
        own = {**own, **getattr(mod, "OPENAPI_PATHS", {})}
        schemas.update(getattr(mod, "OPENAPI_SCHEMAS", {}))
        for path, ops in own.items():
            paths.setdefault(path, {}).update(copy.deepcopy(ops))
    _mark_idempotent(paths)
    _mark_common_errors(paths)
    _add_ids_and_examples(paths, schemas)
    doc: J = {
        "openapi": "3.1.0",
        "info": {
            "title": "livecommerce HTTP API",
            "version": "1",
            "description": (
                "Host, ops and viewer endpoints of the livecommerce gateway. Amounts are integer cents, coins are "
                "whole coins, times are epoch ms. Errors are `{\"error\": {\"code\", \"message\"}}`. Tokens are HS256 "
                "JWTs (`livecommerce token`), sent as `Authorization: Bearer <jwt>`. The WebSocket protocol "
                "(`GET /ws?room=&token=&format=json`) is described in README.md."
            ),
        },
        "servers": [{"url": server_url or "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas,
        },
        "paths": paths,
    }
    return doc


class OpenApi:
    """``GET /api/v1/openapi.json`` (the document of ``modules``, built once) and
    ``GET /api/v1/docs`` (the page that renders it)."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = list(modules)
        self._body: bytes | None = None

    async def openapi_json(self, request: web.Request) -> web.Response:
        if self._body is None:
            self._body = json.dumps(document(self.modules)).encode()
        return web.Response(body=self._body, content_type="application/json", headers={"Access-Control-Allow-Origin": "*"})

    async def docs(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "docs.html", headers={"Cache-Control": "no-cache"})
