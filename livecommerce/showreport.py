"""The show report: what one show did, from stored figures only. No I/O.

``GET /api/v1/rooms/{room}/report`` (the room's host or ops) and the host console's end card.
Every figure is read from a store every node shares, so any node answers the same:

=================  ==============================================================================
figure             source
=================  ==============================================================================
duration           the room's meta: ``ended_ms - live_ms`` (a live show: until now)
peak / average     the room's meta: the highest and the mean of the gateways' per-second readings
online             of the room's online count (``rooms_tick.lua``)
comments, likes    the room's meta (:func:`livecommerce.rooms.summarize`)
viewers            the show's distinct viewers: a HyperLogLog per room, emptied at ``go_live``,
                   to which gateways add each viewer who joins or is present at ``room.live``
                   (exact below a few hundred, about 0.8% standard error above)
new followers      the host's followers (the ``{fan:HOST}:followers`` set the profiles worker
                   keeps) at the end minus at ``go_live``: net of unfollows
gifts              the host earnings ledger (SQL): the accruals of the room's gifts sent during
                   the show, their coins, the coins reversed since, the top gifters
orders, GMV        SQL ``orders`` of the room placed during the show that were paid
                   (``paid``, ``refund_requested``, ``refunded``): count, amount (cents), the
                   refunded amount; GMV is the paid amount net of refunds
refund rate        refunded amount / paid amount (0 when nothing was paid)
conversion         distinct buyers (who paid at least one order) / distinct viewers
top products       the paid orders by product (units net of refunds, GMV), from SQL ``sales``
=================  ==============================================================================

Orders are paid after the show within their pay window, and the workers apply events
within seconds, so the report of a show that just ended may still grow for a while; it is
recomputed at each request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import Conflict


@dataclass(frozen=True, slots=True)
class OrderFigures:
    orders: int  # paid orders
    paid_amount: int  # cents
    refunded_amount: int  # cents
    buyers: int  # distinct users with a paid order
    refunded_orders: int


@dataclass(frozen=True, slots=True)
class ProductLine:
    product_id: str
    name: str
    units: int
    gmv: int  # cents, net of refunds


@dataclass(frozen=True, slots=True)
class GiftFigures:
    value: int  # coins
    gifts: int
    reversed_value: int  # coins of those gifts reversed since
    top_gifters: Sequence[tuple[str, int]]


def human_duration(seconds: float) -> str:
    """``42 min``, ``1 h 5 min``, ``45 s``: what the end card shows."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if m else f"{h} h"


def money(cents: int, currency: str) -> str:
    """``¥1,234.50`` / ``$12.00`` / ``12.00 EUR``: cents in the deployment's currency."""
    sym = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}.get(currency.upper())
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    body = f"{whole:,}.{frac:02d}"
    return f"{sign}{sym}{body}" if sym else f"{sign}{body} {currency.upper()}"


def show_window(meta: Mapping[str, str], *, now_ms: int) -> tuple[int, int, bool]:
    """``(live_ms, end_ms, ended)`` of the room's current or last show.

    Raises:
        Conflict: (``not_live_yet``) the room never went live.
    """
    live = int(meta.get("live_ms") or 0)
    if not live:
        raise Conflict("the room has not gone live yet: there is no show to report", code="not_live_yet")
    ended = meta.get("state") == "ended"
    end = int(meta.get("ended_ms") or 0) if ended else now_ms
    return live, max(live, end), ended


def ratio(num: int, den: int) -> float:
    return round(num / den, 4) if den > 0 else 0.0


def report(room: str, meta: Mapping[str, str], *, now_ms: int, viewers: int, new_followers: int, orders: OrderFigures,
           products: Sequence[ProductLine], gifts: GiftFigures, currency: str) -> dict[str, Any]:
    """The report JSON (see the module docstring for each figure's source).

    Raises:
        Conflict: (``not_live_yet``) the room never went live.
    """
    live, end, ended = show_window(meta, now_ms=now_ms)

    def n(f: str) -> int:
        return int(meta.get(f) or 0)

    duration_s = round((end - live) / 1000, 3)
    samples = n("online_samples")
    gmv = orders.paid_amount - orders.refunded_amount
    return {
        "room": room,
        "title": meta.get("title", ""),
        "host": meta.get("host", ""),
        "state": meta.get("state", ""),
        "ended": ended,
        "live_ms": live,
        "ended_ms": end if ended else None,
        "as_of_ms": now_ms,
        "duration_s": duration_s,
        "duration_text": human_duration(duration_s),
        "peak_online": n("peak_online"),
        "avg_online": round(n("online_sum") / samples, 1) if samples > 0 else 0.0,
        "viewers": viewers,
        "new_followers": new_followers,
        "comments": n("comments"),
        "likes": max(0, (n("likes_end") if ended else n("likes_now")) - n("likes_base")),
        "gifts": {"count": gifts.gifts, "value": gifts.value, "reversed_value": gifts.reversed_value, "unit": "coins",
                  "top_gifters": [{"user": u, "value": v} for u, v in gifts.top_gifters]},
        "orders": orders.orders,
        "buyers": orders.buyers,
        "currency": currency,
        "paid_amount": orders.paid_amount,
        "refunded_amount": orders.refunded_amount,
        "gmv": gmv,
        "gmv_text": money(gmv, currency),
        "refund_rate": ratio(orders.refunded_amount, orders.paid_amount),
        "conversion": ratio(orders.buyers, viewers),
        "top_products": [{"product_id": p.product_id, "name": p.name, "units": p.units, "gmv": p.gmv,
                          "gmv_text": money(p.gmv, currency)} for p in products],
    }
