"""Every gateway module that serves part of the HTTP API.

``gateway.openapi`` assembles the document from these modules' paths (its own
``PATHS_BY_MODULE`` entries and each module's ``OPENAPI_PATHS``/``OPENAPI_SCHEMAS``), and
``gateway.app`` serves them. A list of names, importing nothing, so that both can read it
without importing each other. Later entries win where two document the same operation.
"""

from __future__ import annotations

CAPABILITIES: list[str] = [
    "gateway.http",
    "gateway.commerce", "gateway.payments", "gateway.fulfilment",
    "gateway.rooms",
    "gateway.catalog", "gateway.bag", "gateway.cart",
    "gateway.lottery",
    "gateway.wallet", "gateway.gifts", "gateway.redpackets", "gateway.coupons", "gateway.points",
    "gateway.refunds", "gateway.tickets", "gateway.fanclub", "gateway.profiles", "gateway.segments", "gateway.funnel",
    "gateway.experiments", "gateway.feed", "gateway.growth", "gateway.referrals",
    "gateway.ops", "gateway.pages", "gateway.openapi",
    "gateway.comments", "gateway.likes", "gateway.moderation",
    "gateway.reach",
    "gateway.earnings", "gateway.showreport",
]
