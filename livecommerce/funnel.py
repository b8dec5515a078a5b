"""Campaign effect: the funnel of a flash sale or a coupon drop, and its GMV. No I/O.

Every step counts *people* (distinct viewers), so the steps can be divided:

==========  ===============================================================================
step        flash sale                                   coupon drop
==========  ===============================================================================
viewers     in the sale's room while it was live          in the drop's room while it could
            (present when it started, or joined before    be claimed (present when it
            it ended)                                     dropped, or joined before expiry)
saw         shown the product: present at                 shown the drop: present at
            ``sale.started``, at a ``product.pinned``     ``coupon.dropped`` or joined while
            of its product, or joined while it was         it could be claimed (``welcome``
            pinned                                         lists it); for a segment drop, the
                                                          members it was pushed to
tried       sent ``buy`` for it (WebSocket or HTTP),      sent ``coupon.claim`` for it
            whatever the answer
reserved    reserved at least one order                   claimed a coupon
paid        paid at least one order                       paid an order with the coupon
refunded    got at least one refund settled                got a refund on such an order
==========  ===============================================================================

``gmv`` is the net paid amount (amount minus refunds) of the campaign's orders, in cents;
``refunded_amount`` what went back. ``viewers``, ``saw`` and ``tried`` are counted by the
gateways in Redis HyperLogLogs (about 0.8% standard error above a few hundred people, exact
below); the order steps come from SQL. Counting starts when the gateway learns of the
campaign from the broadcast (a node started later counts the joins it sees).

The JSON (``GET /api/v1/sales/{id}/funnel``, ``GET /api/v1/coupons/{drop}/funnel``)::

    {"campaign": "sale", "id": "s1", "room": "r1",
     "steps": [{"step": "viewers", "count": 120, "rate": 1.0}, {"step": "saw", ...}, ...],
     "counts": {"viewers": 120, "saw": 100, ...}, "gmv": 59970, "refunded_amount": 1999,
     "orders": {...}, "extra": {...}}

``rate`` is the step's count over the first step's (0 when that is 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

#: the two kinds of campaign
Kind = Literal["sale", "coupon"]
STEPS = ("viewers", "saw", "tried", "reserved", "paid", "refunded")


def funnel(
    campaign: str,
    cid: str,
    room: str | None,
    counts: Mapping[str, int],
    *,
    gmv: int,
    refunded_amount: int,
    orders: Mapping[str, int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The funnel JSON of one campaign (``campaign`` is ``sale`` or ``coupon``)."""
    top = int(counts.get(STEPS[0], 0))
    steps = [
        {"step": s, "count": int(counts.get(s, 0)), "rate": round(int(counts.get(s, 0)) / top, 4) if top else 0.0}
        for s in STEPS
    ]
    return {
        "campaign": campaign,
        "id": cid,
        "room": room,
        "steps": steps,
        "counts": {s["step"]: s["count"] for s in steps},
        "gmv": gmv,
        "refunded_amount": refunded_amount,
        "orders": dict(orders or {}),
        "extra": dict(extra or {}),
    }
