"""Viewer profiles: what the durable log says about each viewer, folded exactly once. No I/O.

``workers/profiles.py`` consumes ``orders``, ``gifts`` and ``activity`` (group
``profiles``). Each event contributes a *partial profile* to one user (:func:`contributions`),
and a profile is the :func:`merge` of its partials. ``merge`` is a commutative monoid
(sums, minima, maxima, set unions and last-writer-wins registers), so the profile does not
depend on the order or grouping in which events are applied: the live worker (any number of
consumers, redeliveries absorbed by the ``applied_events`` claims) and a rebuild from the log
reach the same value.

Stored state (JSON, only non-zero fields): ``first_ms`` / ``last_ms`` (first and last
activity), ``days`` (distinct UTC days active, the last :data:`MAX_DAYS`), ``watch_min``,
``comments``, ``gifts``, ``gift_value`` (coins), ``reserved``, ``cancelled``, ``orders``
(paid orders), ``spend`` (cents paid), ``first_order_ms`` / ``last_order_ms``,
``coupons_used``, ``coupon_discount``, ``refund_requests``, ``refunds``, ``refunded``
(cents), ``orders_refunded`` (wholly refunded orders), ``topups``, ``topup_coins``,
``categories`` (category -> net cents), ``hosts`` (host -> ``{watch, comments, gift_value,
spend}``, what fan intimacy is computed from), ``follows`` / ``clubs`` (host -> ``[v, on]``).

What counts as activity (moves ``first_ms``/``last_ms``/``days``): watching, commenting,
gifting, reserving, paying, a buyer's own cancel, a refund request, following or joining,
a top-up the user made. System steps (time-outs, settled refunds, ops top-ups, refund
credits) change the numbers but not the activity dates.

:func:`view` derives what the API and the segment rules see, at a given time:

* **RFM** (1..5 each, ``score`` like ``"435"``): *recency* = days since the last paid order
  (<=3: 5, <=14: 4, <=30: 3, <=90: 2, else or never: 1); *frequency* = paid orders not wholly
  refunded (0: 1, 1: 2, 2-4: 3, 5-9: 4, >=10: 5); *monetary* = net spend in cents (0: 1,
  <10,000: 2, <50,000: 3, <200,000: 4, else 5).
* **Lifecycle stage**, first rule that holds: no activity yet -> ``new``; idle (days since
  the last activity) >= 30 -> ``churned``; idle >= 14 -> ``dormant``; first seen less than 7
  days ago -> ``new``; frequency >= 3, or frequency >= 1 with >= 10 active days ->
  ``mature``; otherwise ``growing``.

Product categories: a paid order's category is its sale's product's ``category`` (the
catalogue, ``POST /api/v1/products {category}``), resolved when the event is applied;
a rebuild resolves it again, so re-categorising a product re-categorises past orders only
after a rebuild.

Erased users (``DELETE /api/v1/me/data``): their profile moves to a pseudonymous key
(:func:`pseudonym`), and their events dated up to the erasure that are met later (a lagging
worker, a rebuild) are folded under that key, never under the user id; what the account
does after its erasure starts a new profile under its id (:func:`erased_key`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .fanclub import CLUB, FOLLOW, intimacy, lww

DAY_MS = 86_400_000
MAX_DAYS = 400
TOPICS = ("orders", "gifts", "activity")

SUM_KEYS = (
    "watch_min", "comments", "gifts", "gift_value", "reserved", "cancelled", "orders", "spend",
    "coupons_used", "coupon_discount", "refund_requests", "refunds", "refunded", "orders_refunded",
    "topups", "topup_coins",
)
MIN_KEYS = ("first_ms", "first_order_ms")
MAX_KEYS = ("last_ms", "last_order_ms")
HOST_KEYS = ("watch", "comments", "gift_value", "spend")
STAGES = ("new", "growing", "mature", "dormant", "churned")

Profile = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Context:
    """What the fold needs beyond the event, resolved by the caller: the host of a room,
    the category of a sale's product, and the key a user's data is kept under:
    ``key_at(user, ts)`` when given (the pseudonym for events up to the user's erasure, see
    :func:`erased_key`), else ``key_of(user)``."""

    host_of: Callable[[str], str | None]
    category_of: Callable[[str], str | None]
    key_of: Callable[[str], str] = str
    key_at: Callable[[str, int], str] | None = None

    def key(self, user: str, ts: int) -> str:
        return self.key_at(user, ts) if self.key_at is not None else self.key_of(user)


def pseudonym(secret: str, user: str) -> str:
    """The pseudonymous key of an erased user: keyed by the deployment secret, stable (so
    erasing twice is idempotent), not reversible without the secret."""
    return "anon-" + hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()[:24]


def erased_key(user: str, ts: int, erasures: Mapping[str, tuple[str, int]]) -> str:
    """The key an event of ``user`` at ``ts`` is folded under, given ``erasures`` (user ->
    ``(pseudonym, erased_ms)``): the pseudonym for events up to the erasure."""
    hit = erasures.get(user)
    return hit[0] if hit is not None and ts <= hit[1] else user


def _active(ts: int) -> Profile:
    return {"first_ms": ts, "last_ms": ts, "days": [ts // DAY_MS]}


def _host(h: str | None, **stats: int) -> Profile:
    return {"hosts": {h: stats}} if h else {}


def contributions(event_type: str, d: Mapping[str, Any], ts: int, ctx: Context) -> list[tuple[str, Profile]]:
    """The partial profiles one event makes, as ``(user key, partial)`` pairs (none for
    events that say nothing about a viewer)."""
    out: list[tuple[str, Profile]] = []

    def add(user: Any, *parts: Profile) -> None:
        if not user:
            return
        p: Profile = {}
        for part in parts:
            p = merge(p, part)
        out.append((ctx.key(str(user), ts), p))

    if event_type == "activity.watch":
        m = int(d.get("minutes", 0))
        add(d.get("user"), _active(ts), {"watch_min": m}, _host(ctx.host_of(str(d.get("room", ""))), watch=m))
    elif event_type == "activity.comment":
        add(d.get("user"), _active(ts), {"comments": 1}, _host(ctx.host_of(str(d.get("room", ""))), comments=1))
    elif event_type == "gift.sent":
        v = int(d.get("value", 0))
        host = d.get("host") or ctx.host_of(str(d.get("room", "")))
        add(d.get("user"), _active(ts), {"gifts": 1, "gift_value": v}, _host(host, gift_value=v))
    elif event_type == "wallet.topup":
        user, by = d.get("user"), str(d.get("by") or "")
        if by == user:
            add(user, _active(ts), {"topups": 1, "topup_coins": int(d.get("amount", 0))})
    elif event_type == "order.reserved":
        add(d.get("user_id"), _active(ts), {"reserved": 1})
    elif event_type == "order.cancelled":
        add(d.get("user_id"), _active(ts) if d.get("reason") == "buyer" else {}, {"cancelled": 1})
    elif event_type == "order.paid":
        amount = int(d.get("amount", 0))
        cat = ctx.category_of(str(d.get("sale_id", "")))
        host = d.get("host") or ctx.host_of(str(d.get("room_id", "")))
        add(
            d.get("user_id"),
            _active(ts),
            {"orders": 1, "spend": amount, "first_order_ms": ts, "last_order_ms": ts},
            {"coupons_used": 1, "coupon_discount": int(d.get("discount") or 0)} if d.get("coupon_id") else {},
            {"categories": {cat: amount}} if cat else {},
            _host(host, spend=amount),
        )
    elif event_type == "refund.requested":
        add(d.get("user_id"), _active(ts), {"refund_requests": 1})
    elif event_type == "order.refunded":
        amount = int(d.get("amount", 0))
        cat = ctx.category_of(str(d.get("sale_id", "")))
        host = d.get("host") or ctx.host_of(str(d.get("room_id", "")))
        add(
            d.get("user_id"),
            {"refunds": 1, "refunded": amount, "orders_refunded": 1 if d.get("full") else 0},
            {"categories": {cat: -amount}} if cat else {},
            _host(host, spend=-amount),
        )
    elif event_type in (FOLLOW, CLUB):
        reg = {str(d["host"]): [int(d["v"]), 1 if d.get("on") else 0]}
        add(d.get("user"), _active(ts), {"follows" if event_type == FOLLOW else "clubs": reg})
    return out


def _sum_maps(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return {k: v for k, v in out.items() if v}


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> Profile:
    """The profile of two disjoint sets of events (commutative and associative; ``{}`` is
    the identity). Zero sums and empty maps are dropped, so equal profiles are equal dicts."""
    out: Profile = {}
    for k in SUM_KEYS:
        v = int(a.get(k, 0)) + int(b.get(k, 0))
        if v:
            out[k] = v
    for k in MIN_KEYS:
        vals = [x for x in (a.get(k), b.get(k)) if x is not None]
        if vals:
            out[k] = min(vals)
    for k in MAX_KEYS:
        vals = [x for x in (a.get(k), b.get(k)) if x is not None]
        if vals:
            out[k] = max(vals)
    days = sorted(set(a.get("days", ())) | set(b.get("days", ())))[-MAX_DAYS:]
    if days:
        out["days"] = days
    cats = _sum_maps(a.get("categories", {}), b.get("categories", {}))
    if cats:
        out["categories"] = cats
    hosts: dict[str, dict[str, int]] = {}
    for h in set(a.get("hosts", {})) | set(b.get("hosts", {})):
        s = _sum_maps(a.get("hosts", {}).get(h, {}), b.get("hosts", {}).get(h, {}))
        if s:
            hosts[h] = s
    if hosts:
        out["hosts"] = hosts
    for k in ("follows", "clubs"):
        regs = {}
        for h in set(a.get(k, {})) | set(b.get(k, {})):
            regs[h] = lww(a.get(k, {}).get(h), b.get(k, {}).get(h))
        if regs:
            out[k] = regs
    return out


def fold(partials: Iterable[Profile]) -> Profile:
    p: Profile = {}
    for x in partials:
        p = merge(p, x)
    return p


def _score(value: int, cuts: tuple[int, ...]) -> int:
    """1 + the number of ``cuts`` that ``value`` reaches."""
    return 1 + sum(value >= c for c in cuts)


def rfm(p: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """Recency, frequency and monetary scores (see the module docstring)."""
    last = p.get("last_order_ms")
    if last is None:
        r = 1
    else:
        days = (now_ms - int(last)) // DAY_MS
        r = 5 if days <= 3 else 4 if days <= 14 else 3 if days <= 30 else 2 if days <= 90 else 1
    f = _score(frequency(p), (1, 2, 5, 10))
    m = _score(monetary(p), (1, 10_000, 50_000, 200_000))
    return {"r": r, "f": f, "m": m, "score": f"{r}{f}{m}"}


def frequency(p: Mapping[str, Any]) -> int:
    return int(p.get("orders", 0)) - int(p.get("orders_refunded", 0))


def monetary(p: Mapping[str, Any]) -> int:
    return int(p.get("spend", 0)) - int(p.get("refunded", 0))


def stage(p: Mapping[str, Any], now_ms: int) -> str:
    """The lifecycle stage (see the module docstring for the rules, applied in order)."""
    last, first = p.get("last_ms"), p.get("first_ms")
    if last is None or first is None:
        return "new"
    idle = (now_ms - int(last)) // DAY_MS
    if idle >= 30:
        return "churned"
    if idle >= 14:
        return "dormant"
    if now_ms - int(first) < 7 * DAY_MS:
        return "new"
    f = frequency(p)
    if f >= 3 or (f >= 1 and len(p.get("days", ())) >= 10):
        return "mature"
    return "growing"


def host_intimacy(p: Mapping[str, Any]) -> dict[str, int]:
    """Intimacy with each host the viewer interacted with (> 0 only)."""
    out = {h: intimacy(s) for h, s in p.get("hosts", {}).items()}
    return {h: v for h, v in out.items() if v > 0}


def registers_on(p: Mapping[str, Any], key: str) -> list[str]:
    return sorted(h for h, reg in p.get(key, {}).items() if reg and reg[1])


def view(user: str, p: Mapping[str, Any], now_ms: int, *, display_name: str | None = None, erased: bool = False) -> dict[str, Any]:
    """The profile as the API, the segment rules and the feed see it at ``now_ms``."""
    last, first = p.get("last_ms"), p.get("first_ms")
    days = p.get("days", [])
    today = now_ms // DAY_MS
    cats = sorted(((c, v) for c, v in p.get("categories", {}).items() if v > 0), key=lambda cv: (-cv[1], cv[0]))
    close = sorted(host_intimacy(p).items(), key=lambda hv: (-hv[1], hv[0]))
    f, m = frequency(p), monetary(p)
    lo = p.get("last_order_ms")
    return {
        "user_id": user,
        "display_name": display_name,
        "erased": erased,
        "stage": stage(p, now_ms),
        "rfm": rfm(p, now_ms),
        "first_seen_ms": first,
        "last_seen_ms": last,
        "tenure_days": None if first is None else (now_ms - int(first)) // DAY_MS,
        "recency_days": None if last is None else (now_ms - int(last)) // DAY_MS,
        "active_days": len(days),
        "active_days_30": sum(1 for d in days if today - d < 30),
        "watch_min": int(p.get("watch_min", 0)),
        "comments": int(p.get("comments", 0)),
        "gifts": int(p.get("gifts", 0)),
        "gift_value": int(p.get("gift_value", 0)),
        "reserved": int(p.get("reserved", 0)),
        "cancelled": int(p.get("cancelled", 0)),
        "orders": int(p.get("orders", 0)),
        "frequency": f,
        "spend": int(p.get("spend", 0)),
        "refunded": int(p.get("refunded", 0)),
        "monetary": m,
        "aov": m // f if f > 0 else 0,
        "first_order_ms": p.get("first_order_ms"),
        "last_order_ms": lo,
        "order_recency_days": None if lo is None else (now_ms - int(lo)) // DAY_MS,
        "refund_requests": int(p.get("refund_requests", 0)),
        "refunds": int(p.get("refunds", 0)),
        "coupons_used": int(p.get("coupons_used", 0)),
        "coupon_discount": int(p.get("coupon_discount", 0)),
        "topups": int(p.get("topups", 0)),
        "topup_coins": int(p.get("topup_coins", 0)),
        "categories": [c for c, _ in cats],
        "category_spend": dict(cats),
        "top_category": cats[0][0] if cats else None,
        "hosts_followed": registers_on(p, "follows"),
        "fan_clubs": registers_on(p, "clubs"),
        "intimacy": dict(close[:20]),
        "top_hosts": [h for h, _ in close[:5]],
        "max_intimacy": close[0][1] if close else 0,
    }
