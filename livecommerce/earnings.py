"""Host earnings: the host's share of gift revenue, its reversals and the statement. No I/O.

* **The split.** ``LC_HOST_GIFT_SHARE`` (0..1, default 0.5) is the host's share of each
  gift's coins. The earnings worker turns it into basis points (:func:`share_bp`) and writes
  them on every accrual, so changing the setting changes future accruals only; the
  ledger's history never moves.
* **Accrual.** Each ``gift.sent`` event (topic ``gifts``) becomes one row for the room's
  host: ``amount = value * share_bp // 10000`` coins (:func:`accrual`; the platform keeps
  the rounding remainder, at most one coin per gift). The row's id is the gift's event id,
  claimed once per batch transaction, so a redelivered batch accrues nothing twice.
* **Reversal.** Ops reverse a gift (``POST /api/v1/ops/gifts/{event}/reversal``) when its
  coins are refunded to the sender (``refund``: the coins go back to the sender's wallet)
  or its payment was charged back (``chargeback``: the bank took the money back; the coins
  stay spent). Either way one ``gift.reversed`` event (id :func:`reversal_id`) carries the
  accrual's recorded amount, and the worker writes the opposite row once: the reversal
  takes back exactly what was accrued, at the split of the day of the gift.
* **Statement.** For a period ``[from, to)``: the opening balance (every row before
  ``from``), the period's accruals and reversals, the closing balance (:func:`statement`).

The ledger is ``host_earnings`` (``livecommerce/earnings_sql.py``); docs/earnings.md.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from .errors import BadFrame, ConfigError

TOPIC = "gifts"
GIFT_SENT = "gift.sent"
GIFT_REVERSED = "gift.reversed"
BP = 10_000  # basis points in one whole
DAY_MS = 86_400_000
MAX_PERIOD_MS = 366 * DAY_MS
DEFAULT_PERIOD_MS = 30 * DAY_MS
MAX_ROWS = 5000  # rows a statement lists (the totals always cover the whole period)

RowKind = Literal["accrual", "reversal"]
ReversalKind = Literal["refund", "chargeback"]
REVERSAL_KINDS: frozenset[str] = frozenset(get_args(ReversalKind))
_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def share_bp(share: float) -> int:
    """The split as basis points (0.5 -> 5000).

    Raises:
        ConfigError: not a number in 0..1.
    """
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigError(f"LC_HOST_GIFT_SHARE={share!r} must be a number from 0 to 1 (the host's share of a gift, e.g. 0.5)")
    return round(share * BP)


def host_amount(value: int, bp: int) -> int:
    """The host's coins of a gift worth ``value`` coins at ``bp`` basis points (floored)."""
    return value * bp // BP


@dataclass(frozen=True, slots=True)
class EarningsRow:
    """One ledger row: ``amount`` coins (negative for a reversal) for ``host``."""

    event_id: str  # the log event's id (an accrual's is the gift's)
    gift_event_id: str
    kind: RowKind
    host: str
    room: str
    sender: str
    gift_id: str
    value: int  # the gift's coins
    share_bp: int
    amount: int
    ts_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "gift_event_id": self.gift_event_id, "kind": self.kind, "host": self.host,
                "room": self.room, "sender": self.sender, "gift_id": self.gift_id, "value": self.value,
                "share_bp": self.share_bp, "amount": self.amount, "ts_ms": self.ts_ms}


def room_owner(room: str) -> str:
    """Who earns in a room without a host: the room itself (as points do)."""
    return f"room:{room}"


def accrual(event_id: str, data: Mapping[str, Any], *, host: str | None, bp: int, ts_ms: int) -> EarningsRow:
    """The accrual row of a ``gift.sent`` event. ``host`` is the room's host as known now,
    used when the event names none; a room with neither earns to ``room:<id>``."""
    room = str(data["room"])
    value = int(data["value"])
    h = str(data.get("host") or host or room_owner(room))
    return EarningsRow(event_id, event_id, "accrual", h, room, str(data["user"]), str(data.get("gift_id") or ""), value, bp,
                       host_amount(value, bp), ts_ms)


def reversal_id(gift_event_id: str) -> str:
    """The one ``gift.reversed`` event id of a gift (what makes a reversal happen once)."""
    return f"gift-rev:{gift_event_id}"


def valid_event_id(v: str) -> bool:
    return bool(_EVENT_ID.match(v))


@dataclass(frozen=True, slots=True)
class ReversalRequest:
    kind: ReversalKind
    reason: str


def parse_reversal(body: Mapping[str, Any]) -> ReversalRequest:
    """``{kind: refund|chargeback, reason?}``.

    Raises:
        BadFrame: (``invalid``) not an object, unknown kind, reason not 0..200 characters.
    """
    if not isinstance(body, Mapping):
        raise BadFrame("body must be a JSON object", code="invalid")
    kind = body.get("kind")
    if kind not in REVERSAL_KINDS:
        raise BadFrame("'kind' must be 'refund' (coins back to the sender) or 'chargeback' (the payment was taken back)",
                       code="invalid")
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 200:
        raise BadFrame("'reason' must be text of at most 200 characters", code="invalid")
    return ReversalRequest(kind, reason)


def reversal_event(acc: EarningsRow, req: ReversalRequest, *, by: str) -> dict[str, Any]:
    """The ``gift.reversed`` data: what the accrual recorded, and what to take back.
    ``refund_coins`` is what goes back to the sender's wallet (0 for a chargeback)."""
    return {"gift_event": acc.gift_event_id, "kind": req.kind, "reason": req.reason, "by": by, "user": acc.sender,
            "host": acc.host, "room": acc.room, "gift_id": acc.gift_id, "value": acc.value, "share_bp": acc.share_bp,
            "amount": acc.amount, "refund_coins": acc.value if req.kind == "refund" else 0}


def reversal(event_id: str, data: Mapping[str, Any], *, ts_ms: int) -> EarningsRow:
    """The reversal row of a ``gift.reversed`` event: the accrual's amount, negated."""
    return EarningsRow(event_id, str(data["gift_event"]), "reversal", str(data["host"]), str(data["room"]), str(data["user"]),
                       str(data.get("gift_id") or ""), int(data["value"]), int(data["share_bp"]), -int(data["amount"]), ts_ms)


def row_for(event_id: str, event_type: str, data: Mapping[str, Any], *, host: str | None, bp: int, ts_ms: int) -> EarningsRow | None:
    """The ledger row an event of topic ``gifts`` makes, or None (top-ups, red packets)."""
    if event_type == GIFT_SENT:
        return accrual(event_id, data, host=host, bp=bp, ts_ms=ts_ms)
    if event_type == GIFT_REVERSED:
        return reversal(event_id, data, ts_ms=ts_ms)
    return None


def needs_host(event_type: str, data: Mapping[str, Any]) -> str | None:
    """The room whose host an event's row needs looked up (None: the event names it)."""
    return str(data["room"]) if event_type == GIFT_SENT and not data.get("host") else None


# ---------------------------------------------------------------- the statement


@dataclass(frozen=True, slots=True)
class Period:
    from_ms: int
    to_ms: int


def _instant(name: str, raw: str) -> int:
    if raw.isdigit():
        return int(raw)
    try:
        d = datetime.fromisoformat(raw)
    except ValueError:
        raise BadFrame(f"'{name}' must be epoch milliseconds or an ISO date such as 2026-12-01 (UTC), not {raw[:40]!r}",
                       code="invalid") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return int(d.timestamp() * 1000)


def parse_period(q: Mapping[str, str], *, now_ms: int) -> Period:
    """``from`` / ``to`` query values (epoch ms or ISO dates, UTC); ``to`` defaults to now and
    ``from`` to 30 days before ``to``.

    Raises:
        BadFrame: (``invalid``) an unreadable instant, ``from`` not before ``to``, or a
            period longer than 366 days.
    """
    to = _instant("to", q["to"]) if q.get("to") else now_ms
    frm = _instant("from", q["from"]) if q.get("from") else to - DEFAULT_PERIOD_MS
    if not 0 <= frm < to:
        raise BadFrame("'from' must be before 'to'", code="invalid")
    if to - frm > MAX_PERIOD_MS:
        raise BadFrame("a statement covers at most 366 days: narrow 'from'..'to'", code="invalid")
    return Period(frm, to)


@dataclass(frozen=True, slots=True)
class Statement:
    host: str
    period: Period
    opening: int
    accruals: int  # coins accrued in the period (>= 0)
    accrual_count: int
    reversals: int  # coins reversed in the period (<= 0)
    reversal_count: int
    rows: tuple[EarningsRow, ...]
    truncated: bool

    @property
    def closing(self) -> int:
        return self.opening + self.accruals + self.reversals

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "from_ms": self.period.from_ms, "to_ms": self.period.to_ms, "currency": "coins",
                "opening": self.opening, "accruals": self.accruals, "accrual_count": self.accrual_count,
                "reversals": self.reversals, "reversal_count": self.reversal_count, "closing": self.closing,
                "rows": [r.to_dict() for r in self.rows], "truncated": self.truncated}


def statement(host: str, period: Period, *, opening: int, totals: Mapping[RowKind, tuple[int, int]],
              rows: Iterable[EarningsRow], limit: int = MAX_ROWS) -> Statement:
    """The statement from the sums SQL gives: ``opening`` (rows before the period) and per kind
    ``(coins, count)`` within it; ``rows`` the period's rows in time order (at most ``limit``
    listed; the totals cover all)."""
    listed = list(rows)
    acc = totals.get("accrual", (0, 0))
    rev = totals.get("reversal", (0, 0))
    return Statement(host, period, opening, acc[0], acc[1], rev[0], rev[1], tuple(listed[:limit]), len(listed) > limit)


CSV_FIELDS = ("ts_ms", "time_utc", "kind", "event_id", "gift_event_id", "room", "sender", "gift_id", "value", "share_bp", "amount",
              "balance")


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def statement_csv(st: Statement) -> str:
    """The statement as CSV: an ``opening`` line, one line per row with the running balance,
    a ``closing`` line (spreadsheets sum the ``amount`` column to the same closing)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    w.writerow([st.period.from_ms, _utc(st.period.from_ms), "opening", "", "", "", "", "", "", "", st.opening, st.opening])
    bal = st.opening
    for r in st.rows:
        bal += r.amount
        w.writerow([r.ts_ms, _utc(r.ts_ms), r.kind, r.event_id, r.gift_event_id, r.room, r.sender, r.gift_id, r.value, r.share_bp,
                    r.amount, bal])
    w.writerow([st.period.to_ms, _utc(st.period.to_ms), "closing", "", "", "", "", "", "", "",
                st.accruals + st.reversals, st.closing])
    return out.getvalue()
