"""``livecommerce campaign load FILE`` / ``campaign list``: flash-sale campaigns from a file.

The file is YAML or JSON (see :mod:`livecommerce.flash_sale` for the fields). Loading writes
each sale into Redis (stock, window, schedule) and its row into SQL, exactly as
``POST /api/v1/campaigns`` does; loading the same file twice changes nothing. A campaign
whose start time has passed is opened at once and announced to its room.

``campaign list`` shows each sale's live state and remaining stock from Redis (as
``GET /api/v1/sales/{id}/stats`` does), beside the configured stock and price from SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from .clock import now_ms
from .config import Settings
from .errors import LiveCommerceError, NotFound


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "campaign",
        help="load flash-sale campaigns from a YAML/JSON file, or list them",
        description="Flash-sale campaigns. Needs LC_REDIS_URL and LC_DATABASE_URL (the same as the gateways).",
    )
    sub = p.add_subparsers(dest="campaign_cmd", metavar="ACTION", required=True)
    load = sub.add_parser(
        "load",
        help="validate a campaign file and create its sales",
        description="Validate FILE (errors name the bad field, e.g. campaigns[2].stock) and create each sale. "
        "Use --check to validate only.",
    )
    load.add_argument("file", help="a .yaml, .yml or .json file")
    load.add_argument("--check", action="store_true", help="validate only; write nothing")
    load.set_defaults(func=_load)
    ls = sub.add_parser("list", help="list campaigns with live state and stock",
                        description="List campaigns (newest first): state and remaining stock live from Redis, "
                        "stock and price as configured.")
    ls.add_argument("--room", help="only this room")
    ls.set_defaults(func=_list)
    return p


def _load(args: argparse.Namespace, settings: Settings) -> int:
    from .flash_sale import SaleState, load_campaign_file, sale_from_campaign

    try:
        camps = load_campaign_file(args.file, default_payment_window_s=settings.payment_window_s, now_ms=now_ms())
    except LiveCommerceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    if args.check:
        print(f"{args.file}: {len(camps)} campaign(s) valid")
        return 0
    from .cli import require_services

    require_services(settings)

    async def main() -> int:
        from .broker_redis import RedisBroker
        from .checkout import Checkout, sale_started_data
        from .keys import Keys
        from .log_open import open_log
        from .protocol.events import envelope
        from .redis_conn import connect
        from .store_sql import SqlStore

        redis = connect(settings.redis_url)
        keys = Keys(settings.key_prefix)
        durable = open_log(settings, redis)
        store = SqlStore(settings.database_url)
        try:
            await store.check_schema()
            checkout = Checkout(redis, keys, durable)
            broker = RedisBroker(redis, keys)
            now = now_ms()
            for i, camp in enumerate(camps, 1):
                sale = sale_from_campaign(camp, sale_id=camp.get("id") or f"s{now:x}{i}")
                created = await checkout.create_sale(sale)
                state: SaleState = "scheduled"
                if sale.starts_ms <= now < sale.ends_ms:
                    state = await checkout.sales.start(sale.id, now)
                    await checkout.unschedule(sale.id, "start")
                    if await checkout.claim_announcement(sale.id, "started"):
                        st = await checkout.sales.stats(sale.id)
                        env = envelope("sale.started", sale.room, sale_started_data(sale, st.remaining), ts=now)
                        await broker.publish_room(sale.room, env, now_ms=now)
                await store.put_sale(sale, state=state, now_ms=now, product_name=camp.get("product_name"))
                print(f"[{i}/{len(camps)}] {sale.id}: room {sale.room}, {sale.stock} units at {sale.price} cents, "
                      f"{'created' if created else 'already there'}, {state}", flush=True)
            return 0
        except LiveCommerceError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        finally:
            await store.close()
            await durable.close()
            await redis.aclose()

    return asyncio.run(main())


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import require_services

    require_services(settings)

    async def main() -> int:
        from .flash_sale_redis import RedisFlashSale
        from .keys import Keys
        from .redis_conn import connect
        from .store_sql import SqlStore

        store = SqlStore(settings.database_url)
        redis = connect(settings.redis_url)
        try:
            recs = await store.list_sales(room_id=args.room)
            sales = RedisFlashSale(redis, Keys(settings.key_prefix))
            rows = []
            for r in recs:
                try:
                    st = await sales.stats(r.sale.id)
                    state, remaining = str(st.state), str(st.remaining)
                except NotFound:  # in SQL only (its Redis keys are gone): SQL's last word
                    state, remaining = f"{r.state}*", "?"
                rows.append((r, state, remaining))
        finally:
            await store.close()
            await redis.aclose()
        print(f"{'sale':<20} {'room':<12} {'state':<10} {'stock':>6} {'left':>6} {'price':>8}  window")
        for r, state, remaining in rows:
            s = r.sale
            print(f"{s.id:<20} {s.room:<12} {state:<10} {s.stock:>6} {remaining:>6} {s.price:>8}  "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(s.starts_ms / 1000))}..{time.strftime('%H:%M', time.gmtime(s.ends_ms / 1000))} UTC")
        if any(state.endswith("*") for _, state, _ in rows):
            print("* not in Redis any more: the state SQL recorded last", file=sys.stderr)
        return 0

    return asyncio.run(main())
