#!/usr/bin/env python3
"""Rush a flash sale with N viewer bots over real WebSockets, then print the sale's numbers.

Each bot joins the room, waits for ``sale.started`` (or buys at once if the sale is already
live), sends ``buy`` with its own ``request_id`` (and one retry with the same id, which must
return the same order), pays a share of its orders over HTTP (with an ``Idempotency-Key``: a lost answer is retried
and gets the first payment's) and lets the rest time out. Everything goes through
``livecommerce.client``.
At the end it waits (bounded, with progress) until the orders worker has written the
sale's orders into SQL, so the GMV it prints counts every paid order, then prints what the
bots saw beside the gateway's sale stats and checks the invariants: nothing oversold, stock
conserved, one order per request id, SQL caught up.

    livecommerce campaign load examples/campaign.yaml
    python scripts/rush_bots.py --sale tea-rush --room demo --bots 100

Tokens are signed with --secret, LC_SECRET, or the secret of the `livecommerce dev` running
in this directory (./.livecommerce/dev.env, which also gives the default --url).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import aiohttp

from livecommerce.auth import issue_token
from livecommerce.client import (
    NO_RETRY,
    ApiError,
    Client,
    ClientError,
    CommandError,
    LiveSocket,
    NotFound,
    TransportError,
)
from livecommerce.config import Settings, read_dev_env, secret_source

SOLD = ("paid", "refund_requested", "shipped", "delivered", "return_requested", "completed")  # SQL order states whose units Redis counts as paid


def secret(args: argparse.Namespace) -> str:
    if args.secret:
        return str(args.secret)
    source, dev = secret_source()
    key = Settings.from_env().secret
    if not key:
        sys.exit("error: no secret: pass --secret, set LC_SECRET, or run this in the directory where `livecommerce dev` runs")
    print("tokens signed with " + ("LC_SECRET" if source == "env" else f"the secret in {dev.path if dev else 'dev.env'}"),
          file=sys.stderr)
    return key


def default_url() -> str:
    dev = read_dev_env(os.environ.get("LC_DATA_DIR", ".livecommerce"))
    return dev.url if dev is not None and dev.alive and dev.url else "http://127.0.0.1:8080"


def sql_behind(stats: dict[str, Any]) -> str:
    """Why SQL does not yet hold what Redis holds for the sale ('' when it does): the orders
    worker writes each reservation and payment after Redis decided it."""
    units = stats.get("sql", {}).get("units", {})
    sql_paid, sql_reserved = sum(int(units.get(k, 0)) for k in SOLD), int(units.get("reserved", 0))
    if sql_paid == stats["paid"] and sql_reserved == stats["reserved"]:
        return ""
    return (f"SQL has {sql_paid} paid and {sql_reserved} reserved units, Redis {stats['paid']} paid and "
            f"{stats['reserved']} reserved")


async def wait_for_sql(ops: Client, sale: str, wait_s: float) -> tuple[dict[str, Any], str]:
    """Poll the sale's stats until SQL has caught up with Redis or ``wait_s`` passed; the
    last stats and what is still behind ('' when nothing)."""
    deadline = time.monotonic() + wait_s
    while True:
        stats = dict(await ops.sales_sale_stats(sale))
        behind = sql_behind(stats)
        if not behind or time.monotonic() >= deadline:
            if behind:
                print()
            return stats, behind
        left = deadline - time.monotonic()
        print(f"\r  waiting for the orders worker to write the sale into SQL ({left:.0f} s left): {behind}", end="", flush=True)
        await asyncio.sleep(min(0.2, max(left, 0)))


async def bot(i: int, args: argparse.Namespace, key: str, api: Client, out: dict, started: asyncio.Event) -> None:
    user = f"bot{i}"
    tok = issue_token(key, user=user, role="viewer", now_s=int(time.time()), ttl_s=3600)
    async with await LiveSocket.connect(args.url, args.room, tok, fmt="json", max_events=0, reply_timeout_s=30) as live:
        started.set() if args.now else None
        await started.wait()
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        replies: list[dict[str, Any]] = []
        for attempt in range(2):  # the second send is a retry with the same request_id
            try:
                replies.append(await live.buy(args.sale, request_id=rid))
            except CommandError as exc:
                replies.append({"code": exc.code})
            if attempt == 0:
                out["latency"].append(time.perf_counter() - t0)
        first, retry = replies
        if "order_id" in first:
            oid = first["order_id"]
            out["reserved"].append(oid)
            if retry.get("order_id") != oid:
                out["retry_mismatch"] += 1
            if i % 100 < args.pay_percent:
                try:
                    await api.as_user(tok).orders_pay_order(oid, idempotency_key=rid)
                    out["paid"].append(oid)
                except ApiError as exc:
                    out["pay_failed"][exc.code] = out["pay_failed"].get(exc.code, 0) + 1
        else:
            code = first["code"]
            out["rejected"][code] = out["rejected"].get(code, 0) + 1


async def main(args: argparse.Namespace) -> int:
    key = secret(args)
    out: dict = {"reserved": [], "paid": [], "rejected": {}, "pay_failed": {}, "latency": [], "retry_mismatch": 0}
    started = asyncio.Event()
    ops_token = issue_token(key, user="rush-ops", role="ops", now_s=int(time.time()), ttl_s=3600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        ops = Client(args.url, ops_token, session=http)
        try:  # one attempt: a gateway that is not there is said at once, not after the retry budget
            before = await Client(args.url, ops_token, session=http, retry=NO_RETRY).sales_sale_stats(args.sale)
        except ClientError as exc:
            hint = ("Load the campaign first (livecommerce campaign load FILE)." if isinstance(exc, NotFound)
                    else "Is the gateway running there (`livecommerce dev`, or --url)?" if isinstance(exc, TransportError) else "")
            print(f"error: the stats of sale {args.sale} at {args.url}: {exc}" + (f"\n{hint}" if hint else ""), file=sys.stderr)
            return 2
        if before["state"] == "live":
            started.set()
        tasks = [asyncio.create_task(bot(i, args, key, ops, out, started)) for i in range(args.bots)]
        t_start = time.perf_counter()
        if not started.is_set():
            print(f"{args.bots} bots waiting for the sale to start (state {before['state']}) ...", flush=True)
            while not started.is_set():
                if (await ops.sales_sale_stats(args.sale))["state"] == "live":
                    started.set()
                await asyncio.sleep(0.1)
            t_start = time.perf_counter()
        done = 0
        for fut in asyncio.as_completed(tasks):
            try:
                await fut
            except Exception as exc:  # a bot that failed is reported, not hidden
                what = f"bot_error:{exc.code}" if isinstance(exc, ClientError) else f"bot_error:{exc.__class__.__name__}"
                out["rejected"][what] = out["rejected"].get(what, 0) + 1
            done += 1
            print(f"\r  bots done {done}/{args.bots}  reserved {len(out['reserved'])}  paid {len(out['paid'])}", end="", flush=True)
        elapsed = time.perf_counter() - t_start
        print()
        after, behind = await wait_for_sql(ops, args.sale, args.sql_wait)
    lat = sorted(out["latency"])
    pct = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000) if lat else (lambda p: float("nan"))
    print(json.dumps({"bots": args.bots, "reserved": len(out["reserved"]), "paid": len(out["paid"]),
                      "rejected": out["rejected"], **({"pay_failed": out["pay_failed"]} if out["pay_failed"] else {}),
                      "buys_per_s": round(args.bots / elapsed, 1),
                      "reply_ms": {"p50": round(pct(0.5), 1), "p99": round(pct(0.99), 1)}}, indent=2))
    print("sale stats:", json.dumps({k: after[k] for k in ("state", "stock", "remaining", "reserved", "paid", "buyers", "conserved", "gmv")}))
    if behind:
        print(f"SQL is not caught up after {args.sql_wait:g} s: {behind}; the gmv above counts only what SQL has. "
              "Is the orders worker running (`livecommerce dev` runs it; else `livecommerce worker orders`)?")
    checks = {
        "not oversold": len(out["reserved"]) <= after["stock"],
        "stock conserved": after["conserved"],
        "retries got the same order": out["retry_mismatch"] == 0,
        "orders unique": len(set(out["reserved"])) == len(out["reserved"]),
        "SQL caught up (gmv counts every paid order)": not behind,
    }
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=default_url(),
                    help="gateway base URL (default: the `livecommerce dev` of this directory, else http://127.0.0.1:8080)")
    ap.add_argument("--room", default="demo", help="room of the sale (default %(default)s)")
    ap.add_argument("--sale", required=True, help="sale id to rush")
    ap.add_argument("--bots", type=int, default=100, help="number of viewer bots (default %(default)s)")
    ap.add_argument("--pay-percent", type=int, default=50, help="share of reserved orders the bots pay (default %(default)s)")
    ap.add_argument("--now", action="store_true", help="buy at once instead of waiting for sale.started")
    ap.add_argument("--secret", help="token secret (default LC_SECRET, or the secret of the `livecommerce dev` of this directory)")
    ap.add_argument("--sql-wait", type=float, default=30.0,
                    help="seconds to wait for the orders worker to write the sale into SQL (default %(default)s)")
    sys.exit(asyncio.run(main(ap.parse_args())))
