"""``livecommerce profiles rebuild|show``: recompute viewer profiles from the log, or print one.

* ``rebuild``: read every event of ``orders``, ``gifts`` and ``activity`` from the
  beginning in a fresh consumer group, fold them, and replace every profile and the fan
  projection (the strategy is described in ``workers/profiles.py``). Safe while the live
  profiles worker runs: its batches wait for the final transaction, and it skips what the
  rebuild folded. Prints ``{events, profiles}``.
* ``show USER``: the profile view as ``GET /api/v1/users/{id}/profile`` serves it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from typing import Any

from .clock import now_ms
from .config import Settings


async def _rebuild(settings: Settings) -> dict[str, int]:
    from .keys import Keys
    from .log_open import open_log
    from .redis_conn import connect
    from .store_sql import SqlStore

    worker = importlib.import_module("workers.profiles")  # the library never imports workers statically
    redis = connect(settings.redis_url)
    durable = open_log(settings, redis)
    store = SqlStore(settings.database_url)
    try:
        await store.check_schema()
        out: dict[str, int] = await worker.rebuild(store, redis, Keys(settings.key_prefix), durable, secret=settings.secret,
                                                   fetch_timeout_ms=1500 if settings.kafka_bootstrap else 100)
        return out
    finally:
        await durable.close()
        await store.close()
        await redis.aclose()


async def _show(settings: Settings, user: str) -> dict[str, Any] | None:
    from .profiles import view
    from .profiles_sql import get_profile
    from .store_sql import SqlStore

    store = SqlStore(settings.database_url)
    try:
        got = await get_profile(store, user)
    finally:
        await store.close()
    if got is None:
        return None
    data, name, erased = got
    return view(user, data, now_ms(), display_name=name, erased=erased)


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import require_services

    require_services(settings)  # the log and the catalogue live in Redis
    print(json.dumps(asyncio.run(_rebuild(settings))))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import require_services

    require_services(settings, redis=False)
    v = asyncio.run(_show(settings, args.user))
    if v is None:
        print(f"no profile for {args.user!r}", file=sys.stderr)
        return 1
    print(json.dumps(v, indent=2))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("profiles", help="viewer profiles (rebuild from the log, show one)",
                              description="Viewer profiles built from the durable log.")
    sub = p.add_subparsers(dest="profiles_command", metavar="SUBCOMMAND")
    r = sub.add_parser("rebuild", help="recompute every profile from the log (a fresh consumer group)",
                       description="Read orders, gifts and activity from the beginning and replace every profile "
                       "and the fan projection. Safe while the profiles worker runs.")
    r.set_defaults(func=cmd_rebuild, needs_secret=True)  # erased users' pseudonyms are keyed by LC_SECRET
    s = sub.add_parser("show", help="print one profile view as JSON")
    s.add_argument("user")
    s.set_defaults(func=cmd_show)
