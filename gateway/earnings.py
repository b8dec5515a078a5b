"""Host earnings at the edge: the statement and the ops gift reversal.

The rules are :mod:`livecommerce.earnings`; the ledger is written by ``workers/earnings.py``
(docs/earnings.md).

HTTP:

* ``GET /api/v1/hosts/{host}/earnings?from=&to=&format=csv`` (the host themself or ops):
  the statement of ``[from, to)`` (epoch ms or ISO dates, UTC; default the last 30 days):
  opening balance, accruals, reversals, closing balance and the period's rows; CSV with
  ``format=csv`` or ``Accept: text/csv``.
* ``POST /api/v1/ops/gifts/{event}/reversal {kind: refund|chargeback, reason?}`` (ops): the
  gift's coins were refunded to the sender (``refund``: credited back to the wallet) or its
  payment was charged back (``chargeback``). One ``gift.reversed`` event, written with the
  wallet credit by one script in the sender's wallet shard (so it happens once whatever
  the retries), then appended to the log through the wallet outbox; the earnings worker
  writes the host's reversal row once. 201 the reversal; 200 ``duplicate: true`` for a
  repeat; 404 ``not_accrued`` while the gift is not in the ledger yet (the worker is
  seconds behind, or no such gift); 422 ``idempotency_conflict`` when the gift was
  reversed as the other kind.
"""

from __future__ import annotations

import logging

from aiohttp import web

from livecommerce import earnings_sql
from livecommerce.earnings import (
    CSV_FIELDS,
    MAX_ROWS,
    parse_period,
    parse_reversal,
    reversal_event,
    reversal_id,
    statement_csv,
    valid_event_id,
)
from livecommerce.errors import BadFrame, NotFound
from livecommerce.store_sql import SqlStore
from livecommerce.wallet_redis import RedisWallet

from .core import Gateway
from .openapi import INT, MS, OPS, STR, J, arr, obj, op, ref
from .validation import read_object
from .wallet import Outbox

log = logging.getLogger("livecommerce.gateway.earnings")


class Earnings:
    """The statement and the reversal routes (module docstring)."""

    def __init__(self, gw: Gateway, store: SqlStore, wallet: RedisWallet, outbox: Outbox) -> None:
        self.gw = gw
        self.store = store
        self.wallet = wallet
        self.outbox = outbox

    async def http_statement(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        host = request.match_info["host"]
        ident.require_self_or_ops(host)
        q = request.query
        fmt = q.get("format") or ("csv" if "text/csv" in request.headers.get("Accept", "") else "json")
        if fmt not in ("json", "csv"):
            raise BadFrame("'format' must be json or csv", code="invalid")
        period = parse_period(q, now_ms=self.gw.now_ms())
        st = await earnings_sql.host_statement(self.store, host, period)
        if fmt == "csv":
            return web.Response(text=statement_csv(st), content_type="text/csv", headers={
                "Content-Disposition": f'attachment; filename="earnings-{host}-{period.from_ms}-{period.to_ms}.csv"'})
        return web.json_response(st.to_dict())

    async def http_reverse(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        ident.require_ops()
        gift = request.match_info["event"]
        if not valid_event_id(gift):
            raise BadFrame("the gift's event id is 1..100 letters, digits, _ . : -", code="invalid")
        req = parse_reversal(await read_object(request))
        rows = await earnings_sql.gift_rows(self.store, gift)
        acc = rows.get("accrual")
        if acc is None:
            raise NotFound(f"gift {gift!r} is not in the earnings ledger: check the id, or retry in a few seconds if it was just "
                           "sent (the earnings worker applies gifts within seconds)", code="not_accrued")
        data = reversal_event(acc, req, by=ident.user)
        event, balance, duplicate = await self.wallet.reverse_gift(user=acc.sender, gift_event_id=gift, event_id=reversal_id(gift),
                                                                   data=data, now_ms=self.gw.now_ms())
        if not duplicate:
            await self.outbox.emit(event)
            log.info("earnings.gift_reversed", extra={"gift": gift, "kind": req.kind, "host": acc.host, "amount": acc.amount,
                                                      "by": ident.user})
        body = {"gift_event": gift, "event_id": event.id, "kind": req.kind, "host": acc.host, "sender": acc.sender,
                "value": acc.value, "share_bp": acc.share_bp, "amount": -acc.amount, "refund_coins": data["refund_coins"],
                "sender_balance": balance, "duplicate": duplicate}
        return web.json_response(body, status=200 if duplicate else 201)


STATEMENT_ROW: J = obj({"event_id": STR, "gift_event_id": STR, "kind": {"enum": ["accrual", "reversal"]}, "host": STR, "room": STR,
                        "sender": STR, "gift_id": STR, "value": INT, "share_bp": INT, "amount": INT, "ts_ms": MS},
                       ["event_id", "kind", "amount", "ts_ms"], desc="one ledger row: a gift's accrual or its reversal")
OPENAPI_SCHEMAS: dict[str, J] = {
    "EarningsStatement": obj({
        "host": STR, "from_ms": MS, "to_ms": MS, "currency": {"const": "coins"}, "opening": INT, "accruals": INT,
        "accrual_count": INT, "reversals": INT, "reversal_count": INT, "closing": INT, "rows": arr(STATEMENT_ROW),
        "truncated": {"type": "boolean", "description": f"more than {MAX_ROWS} rows in the period (the totals cover all)"},
    }, ["host", "from_ms", "to_ms", "opening", "accruals", "reversals", "closing", "rows"],
        desc="closing = opening + accruals + reversals (reversals are negative)"),
}
_INSTANT: J = {"type": "string", "maxLength": 40, "description": "epoch milliseconds or an ISO date/time (UTC when no zone)"}
_EVENT: J = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,100}$"}
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/hosts/{host}/earnings": {"get": op(
        "A host's earnings statement for a period (opening, accruals, reversals, closing)", tag="earnings",
        auth="the host themself or ops",
        params=[{"name": "host", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]{0,63}$"}},
                {"name": "from", "in": "query", "schema": _INSTANT, "description": "start (included); default 30 days before `to`"},
                {"name": "to", "in": "query", "schema": _INSTANT, "description": "end (excluded); default now"},
                {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}, "description": "csv: a spreadsheet "
                 "(also with Accept: text/csv)"}],
        ok=("200", ref("EarningsStatement"), "the statement (text/csv with format=csv)"),
        desc="The host's share of each gift (`LC_HOST_GIFT_SHARE`, recorded per row as `share_bp`), minus reversed gifts. "
             "A period is at most 366 days.")},
    "/api/v1/ops/gifts/{event}/reversal": {"post": op(
        "Reverse a gift: its coins refunded to the sender, or its payment charged back", tag="earnings", auth=OPS,
        params=[{"name": "event", "in": "path", "required": True, "schema": _EVENT, "description": "the gift's event id"}],
        body=obj({"kind": {"enum": ["refund", "chargeback"]}, "reason": {"type": "string", "maxLength": 200}}, ["kind"]),
        ok=("201", obj({"gift_event": STR, "event_id": STR, "kind": STR, "host": STR, "sender": STR, "value": INT, "share_bp": INT,
                        "amount": INT, "refund_coins": INT, "sender_balance": INT, "duplicate": {"type": "boolean"}},
                       ["gift_event", "event_id", "kind", "amount", "duplicate"]), "reversed (200 with duplicate: true when repeated)"),
        errors=(404, 422),
        desc="Once per gift: the host's reversal row takes back exactly what the accrual gave. 404 `not_accrued`: the gift is "
             "not in the ledger (yet); 422 `idempotency_conflict`: reversed before as the other kind.")},
}
# format=csv (or Accept: text/csv) answers the same statement as a spreadsheet
OPENAPI_PATHS["/api/v1/hosts/{host}/earnings"]["get"]["responses"]["200"]["content"]["text/csv"] = {
    "schema": {"type": "string", "description": "CSV: " + ",".join(CSV_FIELDS) + "; an opening and a closing line"}}
