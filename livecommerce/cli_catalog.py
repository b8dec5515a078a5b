"""``livecommerce catalog load FILE`` and ``livecommerce catalog reconcile``.

``load`` reads a CSV or YAML catalogue (formats in ``docs/commerce.md``; examples in
``examples/catalog.yaml`` and ``examples/catalog.csv``), checks every row first and prints
each bad one on its own line (``catalog.csv: row 4 (tea-set/red-M): price: must be integer
cents (1999 for 19.99), got '19.99'``), writing nothing when any is bad. Then it creates the
new products and brings the others to what the file says, through the same code as ``POST
/api/v1/products`` (Redis, then SQL); the rooms whose lists show a changed product get
``bag.changed``. ``--dry-run`` prints what would change and writes nothing. Loading the
same file twice changes nothing; stock in the file is the stock of new SKUs (``--set-stock``
also sets the available units of the SKUs that exist).

``reconcile`` compares every product in Redis with SQL (versions, stock moves, the
conservation of each SKU's units) and prints what differs; ``--repair`` writes what SQL
missed. Exit code 1 when something differs that was not repaired.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from .clock import now_ms
from .config import Settings
from .errors import LiveCommerceError

MAX_ERRORS_SHOWN = 50


def register(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "catalog",
        help="load products with SKUs from a CSV/YAML file, or reconcile the catalogue's Redis and SQL",
        description="The catalogue: products with variants (SKUs), each with its own price, stock and image. "
        "Needs LC_REDIS_URL and LC_DATABASE_URL (the gateways' own; in the directory of `livecommerce dev` "
        "nothing to set).",
    )
    sub = p.add_subparsers(dest="catalog_cmd", metavar="ACTION", required=True)
    load = sub.add_parser(
        "load",
        help="create or update products from a CSV or YAML file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Create or update the products of FILE (.csv: one row per SKU; .yaml/.yml/.json:
`products: [...]`). Every row is checked first: each bad one is printed on one line
naming the row and what to fix, and nothing is written. Loading the same file again
changes nothing.

CSV columns: product_id, name (required), description, category, image, owner,
sku, price (required, integer cents), stock, sku_image, option:<name> per option:

  product_id,name,owner,price,stock,option:colour,option:size
  tee,Cotton tee,host1,1999,20,red,M
  tee,,,2099,5,red,L

YAML:

  products:
    - id: tee
      name: Cotton tee
      owner: host1
      skus:
        - {attrs: {colour: red, size: M}, price: 1999, stock: 20}

A SKU without `sku`/`id` is named from its options (red-M). `stock` is the units a new
SKU starts with; an existing SKU keeps its stock unless --set-stock is given.
Examples: examples/catalog.csv, examples/catalog.yaml.""",
    )
    load.add_argument("file", help="a .csv, .yaml, .yml or .json file")
    load.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    load.add_argument("--set-stock", action="store_true",
                      help="also set the available units of existing SKUs to the file's stock")
    load.add_argument("--owner", default="", help="the host owning the products that name no owner "
                                                  "(default: none, platform products only ops change)")
    load.set_defaults(func=_load)
    rec = sub.add_parser(
        "reconcile",
        help="compare the catalogue in Redis with SQL; --repair writes what SQL missed",
        description="For every product (or --product ID): the definition's version in Redis and SQL, each stock "
        "move Redis holds that SQL lacks, each SKU's units (stocked == available + reserved + sold) and SQL's "
        "stocked figure. --repair writes the missing rows with their own ids (safe to repeat) and forgets "
        "settled holds older than 30 days. Exit code 1 when a difference remains.",
    )
    rec.add_argument("--repair", action="store_true", help="write what SQL missed")
    rec.add_argument("--product", help="only this product")
    rec.add_argument("--json", action="store_true", help="one JSON report per line")
    rec.set_defaults(func=_reconcile)
    return p


def _load(args: argparse.Namespace, settings: Settings) -> int:
    from .catalog import check_catalog_file, check_owner

    try:
        owner = check_owner(args.owner or None, "--owner")
    except LiveCommerceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    name = Path(args.file).name
    drafts, errors = check_catalog_file(args.file, owner=owner)
    if errors:
        for err in errors[:MAX_ERRORS_SHOWN]:
            print(f"error: {name}: {err.message}", file=sys.stderr)
        if len(errors) > MAX_ERRORS_SHOWN:
            print(f"error: {name}: ... and {len(errors) - MAX_ERRORS_SHOWN} more", file=sys.stderr)
        print(f"{name}: {len(errors)} error(s); nothing was written", file=sys.stderr)
        return 1
    from .cli import require_services

    require_services(settings)
    return asyncio.run(_load_async(args, settings, drafts))


async def _load_async(args: argparse.Namespace, settings: Settings, drafts: list[Any]) -> int:
    from .bag import Bag
    from .bag_redis import RedisBags
    from .bag_sync import RoomLists
    from .broker_redis import RedisBroker
    from .catalog_redis import RedisCatalog
    from .catalog_sync import Catalogue
    from .keys import Keys
    from .protocol.events import envelope
    from .redis_conn import connect
    from .store_sql import SqlStore

    redis = connect(settings.redis_url)
    keys = Keys(settings.key_prefix)
    store = SqlStore(settings.database_url)
    broker = RedisBroker(redis, keys)
    try:
        await store.check_schema()
        products = RedisCatalog(redis, keys)
        catalogue = Catalogue(products, store)
        plans = await catalogue.plan(drafts, set_stock=args.set_stock)
        for _, product, ch in plans:
            _print_change(ch, product)
        changed = [ch for _, _, ch in plans if ch.changed]
        if args.dry_run:
            print(f"dry run: {len(changed)} of {len(plans)} product(s) would change; nothing was written")
            return 0
        if not changed:
            print(f"{len(plans)} product(s), nothing to change")
            return 0

        async def publish(room: str, bag: Bag, by: str) -> None:
            now = now_ms()
            await broker.publish_room(room, envelope("bag.changed", room, {**bag.to_dict(), "by": by}, ts=now), now_ms=now)

        lists = RoomLists(RedisBags(redis, keys), products, publish)
        done = await catalogue.load(drafts, now_ms=now_ms(), by="cli", set_stock=args.set_stock)
        rooms: set[str] = set()
        for ch in done:
            if ch.changed:
                rooms.update(await lists.product_changed(await catalogue.product(ch.product_id)))
        created = sum(ch.created for ch in done)
        updated = sum(ch.changed and not ch.created for ch in done)
        print(f"{created} created, {updated} updated, {len(done) - created - updated} unchanged"
              + (f"; the lists of {len(rooms)} room(s) refreshed" if rooms else ""))
        return 0
    except LiveCommerceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await broker.close()
        await store.close()
        await redis.aclose()


def _print_change(ch: Any, product: Any) -> None:
    if not ch.changed:
        print(f"{ch.product_id}: unchanged")
        return
    print(f"{ch.product_id}: {'create' if ch.created else 'update'}")
    for line in ch.lines:
        if not ch.created:
            print(f"  {line}")
    if ch.created:
        for s in product.skus:
            attrs = ", ".join(f"{k}={v}" for k, v in s.attrs)
            print(f"  sku {s.id}: {attrs + ', ' if attrs else ''}{s.price} cents")
    for sku, before, after in ch.stock:
        print(f"  stock {sku}: {after}" if before is None else f"  stock {sku}: {before} -> {after}")


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import require_services

    require_services(settings)

    async def main() -> int:
        from .catalog_redis import RedisCatalog
        from .catalog_sync import Catalogue
        from .keys import Keys
        from .redis_conn import connect
        from .store_sql import SqlStore

        redis = connect(settings.redis_url)
        store = SqlStore(settings.database_url)
        try:
            await store.check_schema()
            catalogue = Catalogue(RedisCatalog(redis, Keys(settings.key_prefix)), store)
            now = now_ms()
            ids = [args.product] if args.product else None
            reports = await _check(catalogue, ids, repair=args.repair, now=now)
            # after a repair, what is left is what a plain check still finds
            after = {r.product_id: r for r in await _check(catalogue, [r.product_id for r in reports if r.drift],
                                                           repair=False, now=now)} if args.repair else {}
        except LiveCommerceError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        finally:
            await store.close()
            await redis.aclose()
        left = 0
        for r in reports:
            still = after.get(r.product_id, r) if args.repair else r
            bad = bool(still.drift) or not still.conserved
            left += bad
            if args.json:
                print(json.dumps({**r.to_dict(), "left": still.drift}, sort_keys=True))
                continue
            status = "ok" if not r.drift and r.conserved else ("DRIFT" if bad else "REPAIRED")
            print(f"{r.product_id}: Redis v{r.redis_v}, SQL v{r.sql_v}: {status}"
                  + (f" ({r.repaired} row(s) written)" if r.repaired else ""))
            for d in r.drift:
                print(f"  {d}")
            if r.overdue_holds:
                print(f"  {r.overdue_holds} reserved hold(s) past their pay-by time")
        if not args.json:
            print(f"{len(reports)} product(s) checked, {left} with differences left")
        return 1 if left else 0

    return asyncio.run(main())


async def _check(catalogue: Any, ids: list[str] | None, *, repair: bool, now: int) -> list[Any]:
    if ids is None:
        return list(await catalogue.reconcile_all(repair=repair, now_ms=now))
    return [await catalogue.reconcile(pid, repair=repair, now_ms=now) for pid in ids]
