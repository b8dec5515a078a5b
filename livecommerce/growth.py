"""Growth analytics from the durable log: facts per viewer, daily actives, retention cohorts
and the acquisition funnel. No I/O.

``workers/growth.py`` consumes ``orders``, ``gifts``, ``activity`` and ``growth`` (group
``growth``) and turns each event into *facts* (:func:`facts_for`): one row per event and
user, idempotent on the event id, stored in SQL (``livecommerce.growth_sql``) with the
viewer's active days, first activity, activation, first paid order and acquisition. The
HTTP endpoints aggregate those tables on demand; the functions below shape the rows.

Events this capability adds (topic ``growth``, key the user):

* ``growth.visit {user, room, day}``: a viewer opened a room (the gateway's ``welcome``;
  id ``visit:<user>:<day>``, so one a day however many rooms or nodes).
* ``growth.acquired {user, channel, invite_code?, referrer?}``: how a viewer came (the app
  reports it once, ``POST /api/v1/growth/acquire``; id ``acq:<user>``). A viewer never
  acquired is ``organic``.
* ``experiment.exposure`` (see :mod:`livecommerce.experiments`).

Definitions (UTC days, ``day = ts // 86,400,000``):

=================  =================================================================
active             a fact of kind ``visit``, ``watch``, ``comment``, ``gift``, ``buy`` or
                   ``pay`` that day (:data:`ACTIVE_KINDS`)
new / returning    active that day and first active that day / before
day-N retention    of the viewers first active on day D (the cohort), the share active
                   on day D + N exactly (N = 1, 7); ``None`` until day D + N has begun
activated          first comment or gift (:data:`ACTIVATION_KINDS`)
revenue            paid amounts minus settled refunds (cents)
funnel cohort      viewers by acquisition day (first activity day when never acquired)
=================  =================================================================
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadFrame

DAY_MS = 86_400_000
VISIT = "growth.visit"
ACQUIRED = "growth.acquired"
TOPIC = "growth"
TOPICS = ("orders", "gifts", "activity", TOPIC)

KINDS = ("visit", "watch", "comment", "gift", "buy", "pay", "refund")
ACTIVE_KINDS = frozenset({"visit", "watch", "comment", "gift", "buy", "pay"})
ACTIVATION_KINDS = frozenset({"comment", "gift"})
ORGANIC = "organic"
INVITE = "invite"
MAX_DAYS = 400

_CHANNEL = re.compile(r"^[a-z0-9_-]{1,32}$")


def day_of(ts_ms: int) -> int:
    return ts_ms // DAY_MS


def iso_day(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def parse_day(s: str) -> int:
    """``YYYY-MM-DD`` -> days since the epoch.

    Raises:
        BadFrame: (``invalid``) not a date.
    """
    try:
        return (dt.date.fromisoformat(s) - dt.date(1970, 1, 1)).days
    except ValueError:
        raise BadFrame(f"{s!r} is not a YYYY-MM-DD date", code="invalid") from None


def window(query: Mapping[str, str], *, today: int, default_days: int = 30) -> tuple[int, int]:
    """``?days=N`` (1..400, default 30) ending ``?until=YYYY-MM-DD`` (default today):
    the inclusive day range ``(first, last)``.

    Raises:
        BadFrame: (``invalid``) bad numbers or dates.
    """
    try:
        days = int(query.get("days", default_days))
    except ValueError:
        raise BadFrame("'days' must be an integer", code="invalid") from None
    if not 1 <= days <= MAX_DAYS:
        raise BadFrame(f"'days' must be 1..{MAX_DAYS}", code="invalid")
    last = parse_day(query["until"]) if query.get("until") else today
    return last - days + 1, last


@dataclass(frozen=True, slots=True)
class Fact:
    """One user's part in one event: ``amount`` is minutes (watch), coins (gift) or cents
    (pay; refund as a positive amount)."""

    event_id: str
    user: str
    kind: str
    ts: int
    amount: int = 0
    room: str | None = None


def facts_for(event_id: str, event_type: str, d: Mapping[str, Any], ts: int) -> list[Fact]:
    """The facts of one log event (none for events that are not about a viewer)."""

    def f(user: Any, kind: str, amount: Any = 0, room: Any = None) -> list[Fact]:
        if not user:
            return []
        return [Fact(event_id, str(user), kind, ts, int(amount or 0), str(room) if room else None)]

    if event_type == VISIT:
        return f(d.get("user"), "visit", 0, d.get("room"))
    if event_type == "activity.watch":
        return f(d.get("user"), "watch", d.get("minutes", 0), d.get("room"))
    if event_type == "activity.comment":
        return f(d.get("user"), "comment", 0, d.get("room"))
    if event_type == "gift.sent":
        return f(d.get("user"), "gift", d.get("value", 0), d.get("room"))
    if event_type == "order.reserved":
        return f(d.get("user_id"), "buy", int(d.get("qty", 1) or 1) * int(d.get("unit_price", 0) or 0), d.get("room_id"))
    if event_type == "order.paid":
        return f(d.get("user_id"), "pay", d.get("amount", 0), d.get("room_id"))
    if event_type == "order.refunded":
        return f(d.get("user_id"), "refund", d.get("amount", 0), d.get("room_id"))
    return []


@dataclass(frozen=True, slots=True)
class Acquisition:
    user: str
    channel: str
    ts: int
    invite_code: str | None = None
    referrer: str | None = None


def acquisition_of(d: Mapping[str, Any], ts: int) -> Acquisition | None:
    user = d.get("user")
    if not user:
        return None
    return Acquisition(str(user), str(d.get("channel") or ORGANIC), ts, d.get("invite_code") or None, d.get("referrer") or None)


def check_channel(channel: Any) -> str:
    """Raises:
    BadFrame: (``invalid``) not 1..32 lowercase letters, digits, - or _.
    """
    if not isinstance(channel, str) or not _CHANNEL.match(channel):
        raise BadFrame("'channel' must be 1..32 lowercase letters, digits, - or _", code="invalid")
    return channel


def visit_event_id(user: str, day: int) -> str:
    return f"visit:{user}:{day}"


def acquired_event_id(user: str) -> str:
    return f"acq:{user}"


@dataclass(slots=True)
class UserRollup:
    """What a batch of facts says about one user (mins only, so order-independent)."""

    first_active_ms: int | None = None
    activated_ms: int | None = None
    first_paid_ms: int | None = None
    first_paid_event: str | None = None

    def add(self, fact: Fact) -> None:
        if fact.kind in ACTIVE_KINDS and (self.first_active_ms is None or fact.ts < self.first_active_ms):
            self.first_active_ms = fact.ts
        if fact.kind in ACTIVATION_KINDS and (self.activated_ms is None or fact.ts < self.activated_ms):
            self.activated_ms = fact.ts
        if fact.kind == "pay" and (self.first_paid_ms is None or (fact.ts, fact.event_id) < (self.first_paid_ms, self.first_paid_event or "")):
            self.first_paid_ms, self.first_paid_event = fact.ts, fact.event_id


def rollup(facts: Sequence[Fact]) -> dict[str, UserRollup]:
    out: dict[str, UserRollup] = {}
    for fact in facts:
        out.setdefault(fact.user, UserRollup()).add(fact)
    return out


# ---------------------------------------------------------------- shaping query rows


def _rate(x: int, n: int) -> float:
    return round(x / n, 4) if n else 0.0


def daily_json(first: int, last: int, active: Mapping[int, tuple[int, int]], money: Mapping[int, tuple[int, int]]) -> dict[str, Any]:
    """``active``: day -> (active viewers, of which new); ``money``: day -> (revenue
    cents, paying viewers). Every day of the window is listed (zeros included), so a
    chart needs no gap filling."""
    rows = []
    for day in range(first, last + 1):
        a, new = active.get(day, (0, 0))
        rev, payers = money.get(day, (0, 0))
        rows.append({"day": iso_day(day), "active": a, "new": new, "returning": a - new, "revenue": rev, "paying": payers})
    return {"from": iso_day(first), "to": iso_day(last), "days": rows}


def retention_json(first: int, last: int, today: int, cohorts: Mapping[int, tuple[int, int, int]]) -> dict[str, Any]:
    """``cohorts``: first-active day -> (size, active on day+1, active on day+7). Rates
    of days that have not begun yet are None (not 0: the cohort cannot have come back)."""
    rows: list[dict[str, Any]] = []
    for day in range(first, last + 1):
        size, d1, d7 = cohorts.get(day, (0, 0, 0))
        r1 = _rate(d1, size) if day + 1 <= today else None
        r7 = _rate(d7, size) if day + 7 <= today else None
        rows.append({"cohort": iso_day(day), "size": size, "d1": d1 if r1 is not None else None, "d1_rate": r1,
                     "d7": d7 if r7 is not None else None, "d7_rate": r7})
    sized = [r for r in rows if r["size"]]

    def mean(count: str) -> float | None:
        """Size-weighted mean rate over the cohorts whose day has come."""
        vals = [(int(r[count]), int(r["size"])) for r in sized if r[count] is not None]
        n = sum(s for _, s in vals)
        return round(sum(x for x, _ in vals) / n, 4) if n else None

    return {"from": iso_day(first), "to": iso_day(last), "cohorts": rows, "d1_rate": mean("d1"), "d7_rate": mean("d7")}


FUNNEL_STEPS = ("acquired", "activated", "retained_d1", "retained_d7", "paying", "referring")


def funnel_json(first: int, last: int, by: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One funnel per acquisition channel (or invite code): ``rows`` carry the key, the
    step counts of :data:`FUNNEL_STEPS`, ``revenue`` and ``invitees``. Each step has its
    count and its rate over ``acquired``; ``revenue_per_user`` is over ``acquired``."""
    out = []
    for r in rows:
        n = int(r.get("acquired") or 0)
        steps = [{"step": s, "count": int(r.get(s) or 0), "rate": _rate(int(r.get(s) or 0), n)} for s in FUNNEL_STEPS]
        out.append({
            by: r["key"],
            "steps": steps,
            "counts": {s["step"]: s["count"] for s in steps},
            "revenue": int(r.get("revenue") or 0),
            "revenue_per_user": round(int(r.get("revenue") or 0) / n, 2) if n else 0.0,
            "invitees": int(r.get("invitees") or 0),
        })
    out.sort(key=lambda x: (-x["counts"]["acquired"], str(x[by])))
    totals = {s: sum(x["counts"][s] for x in out) for s in FUNNEL_STEPS}
    return {"from": iso_day(first), "to": iso_day(last), "by": by, "steps": list(FUNNEL_STEPS), "total": totals, "rows": out}
