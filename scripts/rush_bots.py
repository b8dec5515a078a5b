#!/usr/bin/env python3
"""Rush a flash sale with N viewer bots over real WebSockets, then print the sale's numbers.

Each bot joins the room, waits for ``sale.started`` (or buys at once if the sale is already
live), sends ``buy`` with its own ``request_id`` (and one retry with the same id, which must
return the same order), pays a share of its orders over HTTP and lets the rest time out.
At the end it prints what the bots saw beside the gateway's sale stats and checks the
invariants: nothing oversold, stock conserved, one order per request id.

    livecommerce campaign load examples/campaign.yaml
    python scripts/rush_bots.py --sale tea-rush --room demo --bots 100

Tokens are signed with LC_SECRET, or the secret `livecommerce dev` keeps in ./.livecommerce/secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from livecommerce.auth import issue_token


def secret(args: argparse.Namespace) -> str:
    if args.secret:
        return args.secret
    if os.environ.get("LC_SECRET"):
        return os.environ["LC_SECRET"]
    f = Path(args.data_dir) / "secret"
    if f.exists():
        return f.read_text().strip()
    sys.exit("no secret: set LC_SECRET or run from the directory where `livecommerce dev` runs")


async def bot(i: int, args: argparse.Namespace, key: str, http: aiohttp.ClientSession, out: dict, started: asyncio.Event) -> None:
    user = f"bot{i}"
    tok = issue_token(key, user=user, role="viewer", now_s=int(time.time()), ttl_s=3600)
    url = f"{args.url.replace('http', 'ws', 1)}/ws?room={args.room}&format=json&token={tok}"
    async with http.ws_connect(url, max_msg_size=0) as ws:
        await ws.receive_json(timeout=10)  # welcome
        started.set() if args.now else None
        await started.wait()
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        replies = []
        for attempt in range(2):  # the second send is a retry with the same request_id
            await ws.send_json({"t": "buy", "id": attempt, "d": {"sale_id": args.sale, "qty": 1, "request_id": rid}})
            while True:
                msg = await ws.receive_json(timeout=30)
                items = msg["items"] if msg["t"] == "batch" else [msg]
                reply = next((m for m in items if m.get("id") == attempt), None)
                if reply is not None:
                    break
            if attempt == 0:
                out["latency"].append(time.perf_counter() - t0)
            replies.append(reply)
        first, retry = replies
        if first["t"] == "order.reserved":
            oid = first["d"]["order_id"]
            out["reserved"].append(oid)
            if retry.get("d", {}).get("order_id") != oid:
                out["retry_mismatch"] += 1
            if i % 100 < args.pay_percent:
                r = await http.post(f"{args.url}/api/v1/orders/{oid}/pay", json={},
                                    headers={"Authorization": f"Bearer {tok}", "Idempotency-Key": rid})
                if r.status == 200:
                    out["paid"].append(oid)
        else:
            code = first.get("d", {}).get("code", first["t"])
            out["rejected"][code] = out["rejected"].get(code, 0) + 1


async def main(args: argparse.Namespace) -> int:
    key = secret(args)
    out: dict = {"reserved": [], "paid": [], "rejected": {}, "latency": [], "retry_mismatch": 0}
    started = asyncio.Event()
    ops = issue_token(key, user="rush-ops", role="ops", now_s=int(time.time()), ttl_s=3600)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        stats_url = f"{args.url}/api/v1/sales/{args.sale}/stats"
        r = await http.get(stats_url, headers={"Authorization": f"Bearer {ops}"})
        if r.status != 200:
            print(f"error: {stats_url} answered {r.status}: {await r.text()}\nLoad the campaign first (livecommerce campaign load FILE).", file=sys.stderr)
            return 2
        before = await r.json()
        if before["state"] == "live":
            started.set()
        tasks = [asyncio.create_task(bot(i, args, key, http, out, started)) for i in range(args.bots)]
        t_start = time.perf_counter()
        if not started.is_set():
            print(f"{args.bots} bots waiting for the sale to start (state {before['state']}) ...", flush=True)
            while not started.is_set():
                r = await http.get(stats_url, headers={"Authorization": f"Bearer {ops}"})
                if (await r.json())["state"] == "live":
                    started.set()
                await asyncio.sleep(0.1)
            t_start = time.perf_counter()
        done = 0
        for fut in asyncio.as_completed(tasks):
            try:
                await fut
            except Exception as exc:  # a bot that failed is reported, not hidden
                out["rejected"][f"bot_error:{exc.__class__.__name__}"] = out["rejected"].get(f"bot_error:{exc.__class__.__name__}", 0) + 1
            done += 1
            print(f"\r  bots done {done}/{args.bots}  reserved {len(out['reserved'])}  paid {len(out['paid'])}", end="", flush=True)
        elapsed = time.perf_counter() - t_start
        print()
        after = await (await http.get(stats_url, headers={"Authorization": f"Bearer {ops}"})).json()
    lat = sorted(out["latency"])
    pct = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000) if lat else (lambda p: float("nan"))
    print(json.dumps({"bots": args.bots, "reserved": len(out["reserved"]), "paid": len(out["paid"]),
                      "rejected": out["rejected"], "buys_per_s": round(args.bots / elapsed, 1),
                      "reply_ms": {"p50": round(pct(0.5), 1), "p99": round(pct(0.99), 1)}}, indent=2))
    print("sale stats:", json.dumps({k: after[k] for k in ("state", "stock", "remaining", "reserved", "paid", "buyers", "conserved", "gmv")}))
    checks = {
        "not oversold": len(out["reserved"]) <= after["stock"],
        "stock conserved": after["conserved"],
        "retries got the same order": out["retry_mismatch"] == 0,
        "orders unique": len(set(out["reserved"])) == len(out["reserved"]),
    }
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL (default %(default)s)")
    ap.add_argument("--room", default="demo", help="room of the sale (default %(default)s)")
    ap.add_argument("--sale", required=True, help="sale id to rush")
    ap.add_argument("--bots", type=int, default=100, help="number of viewer bots (default %(default)s)")
    ap.add_argument("--pay-percent", type=int, default=50, help="share of reserved orders the bots pay (default %(default)s)")
    ap.add_argument("--now", action="store_true", help="buy at once instead of waiting for sale.started")
    ap.add_argument("--secret", help="token secret (default LC_SECRET or ./.livecommerce/secret)")
    ap.add_argument("--data-dir", default=".livecommerce", help="where `livecommerce dev` keeps its secret")
    sys.exit(asyncio.run(main(ap.parse_args())))
