"""Worker kinds by name: ``livecommerce worker NAME`` and ``livecommerce dev`` start these.

Each value is ``"module:function"``; the function is
``async def run(settings: Settings, stop: asyncio.Event) -> None`` and returns when ``stop``
is set, after finishing (or releasing) its current batch.
"""

from __future__ import annotations

WORKERS: dict[str, str] = {"orders": "workers.orders:run", "inventory": "workers.inventory:run", "lottery": "workers.lottery:run",
                             "wallet": "workers.wallet:run", "points": "workers.points:run",
                             "refunds": "workers.refunds:run", "profiles": "workers.profiles:run",
                             "growth": "workers.growth:run", "retention": "workers.retention:run",
                             "reach": "workers.reach:run",
                             "redpackets": "workers.redpackets:run",
                             "earnings": "workers.earnings:run"}
