#!/usr/bin/env python
"""The rush moment on the ``cluster up`` topology: a join storm, a buy storm and a gift storm
through HAProxy, with the goals of M2 3/7 beside the measured figures and same-run ceilings.

The topology is the one ``livecommerce cluster up`` starts (``livecommerce.devcluster``):
``--gateways`` gateway processes behind HAProxy, a 3-master + 3-replica Redis Cluster, the
durable log on Kafka (Tansu; ``--log redis`` for Redis Streams on the cluster), PostgreSQL
(a schema of its own, dropped at the end) and one orders, wallet and points worker each.
Then, in order, against the load balancer only:

1. **join storm**: ``--conns`` WebSocket clients (``--procs`` processes) connect to one room
   at once; connections admitted per second = clients ÷ time until the last ``welcome``.
   Ceiling: a bare aiohttp WebSocket server (welcome at once, no Redis) measured the same way,
   directly, in the same run.
2. **buy storm**: a sale of ``--stock`` units opens in that room; every connected client buys
   once when ``sale.started`` arrives. Reservations/s (first to last reservation), reply
   p50/p99 over every buyer, exactly ``--stock`` reserved, sold-out answers, each buyer's retry
   (same ``request_id``) answered with the same order. Ceiling: the batch reserve script called
   from Python on the same cluster with the same log (``bench_rush.batch_ceiling``).
3. **gift storm**: ``--gifters`` of the clients (topped up by ops) send gifts for
   ``--gift-seconds`` with up to ``--window`` unanswered each; gifts acked/s, ack p99; then
   how long the wallet and points workers take until SQL holds every gift (the ledger rows
   of the storm), i.e. the workers' events/s end to end. Ceiling: the gift batch script from
   Python on the same cluster (``bench_gifts.raw_script_ceiling``).

Everything runs on this machine: the clients, HAProxy, the gateways, six Redis processes,
Tansu, PostgreSQL and the workers share its cores, so the load average is printed before and
after, and the figures are what this machine gives, not a server's.

Example: ``python scripts/bench_cluster_storms.py --gateways 2 --conns 3000 --stock 600``
(about 2 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

CTX = mp.get_context("spawn")  # clean children: no copy of this process's loop or sockets
GOALS = {"joins_per_s": 2500, "joins_ratio": 0.60, "reservations_per_s": 20_000, "buy_p99_ms": 250,
         "gifts_per_s": 10_000, "gift_p99_ms": 100, "worker_events_per_s": 10_000}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# ------------------------------------------------------------------ the client processes
def client_proc(idx: int, n: int, url: str, secret: str, room: str, gifters: int, gift_s: float, window: int,
                q: Any, go: Any, gift_go: Any, done: Any) -> None:
    import uvloop

    uvloop.install()
    asyncio.run(_clients(idx, n, url, secret, room, gifters, gift_s, window, q, go, gift_go, done))


async def _clients(idx: int, n: int, url: str, secret: str, room: str, gifters: int, gift_s: float, window: int,
                   q: Any, go: Any, gift_go: Any, done: Any) -> None:
    import aiohttp

    from livecommerce.auth import issue_token

    loop = asyncio.get_running_loop()
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        await loop.run_in_executor(None, go.wait)
        socks: list[Any] = [None] * n
        t_welcome: list[float] = []
        started: dict[int, asyncio.Future[str]] = {}

        async def join(i: int) -> None:
            user = f"p{idx}u{i}"
            tok = issue_token(secret, user=user, role="viewer", rooms=(), now_s=int(time.time()), ttl_s=3600)
            ws = await http.ws_connect(f"{url}/ws?room={room}&format=json&token={tok}", max_msg_size=0, heartbeat=None)
            while True:
                m = await ws.receive()
                if m.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"closed before welcome: {ws.close_code}")
                if json.loads(m.data).get("t") == "welcome":
                    break
            t_welcome.append(time.time())
            socks[i] = ws

        t0 = time.time()
        res = await asyncio.gather(*(join(i) for i in range(n)), return_exceptions=True)
        errs = [repr(e) for e in res if isinstance(e, BaseException)]
        q.put(("joined", idx, {"t0": t0, "welcomes": t_welcome, "errors": errs[:3], "n_errors": len(errs)}))
        live = [(i, ws) for i, ws in enumerate(socks) if ws is not None]
        if gifters < 0:  # a join storm only (the ceiling's bare server sells nothing)
            await asyncio.gather(*(ws.close() for _, ws in live), return_exceptions=True)
            return

        # ---- the buy storm, then the gift storm, over the same sockets
        replies: dict[int, dict[int, asyncio.Future[dict[str, Any]]]] = {i: {} for i, _ in live}
        sale_of: dict[int, asyncio.Future[str]] = {i: loop.create_future() for i, _ in live}
        started = sale_of

        async def reader(i: int, ws: Any) -> None:
            async for m in ws:
                if m.type != aiohttp.WSMsgType.TEXT:
                    break
                obj = json.loads(m.data)
                items = obj.get("items", ()) if obj.get("t") == "batch" else (obj,)
                for e in items:
                    rid = e.get("id")
                    if rid is not None and rid in replies[i]:
                        f = replies[i].pop(rid)
                        if not f.done():
                            f.set_result(e)
                    elif e.get("t") == "sale.started" and not started[i].done():
                        started[i].set_result((e.get("d") or {}).get("sale_id", ""))

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in live]
        seq = iter(range(1, 10**9))

        async def request(i: int, ws: Any, t: str, d: dict[str, Any]) -> tuple[dict[str, Any], float]:
            cid = next(seq)
            f: asyncio.Future[dict[str, Any]] = loop.create_future()
            replies[i][cid] = f
            t1 = time.time()
            await ws.send_str(json.dumps({"t": t, "id": cid, "d": d}))
            r = await asyncio.wait_for(f, 60)
            return r, time.time() - t1

        async def buyer(i: int, ws: Any) -> dict[str, Any]:
            sale = await asyncio.wait_for(started[i], 120)
            rid = f"r-{idx}-{i}"
            r, dt = await request(i, ws, "buy", {"sale_id": sale, "qty": 1, "request_id": rid})
            out = {"t": r.get("t"), "code": (r.get("d") or {}).get("code"), "order": (r.get("d") or {}).get("order_id"),
                   "at": time.time(), "ms": dt * 1000}
            if out["t"] == "order.reserved":
                again, _ = await request(i, ws, "buy", {"sale_id": sale, "qty": 1, "request_id": rid})
                out["retry_same"] = (again.get("d") or {}).get("order_id") == out["order"]
            return out

        got = await asyncio.gather(*(buyer(i, ws) for i, ws in live), return_exceptions=True)
        q.put(("bought", idx, {"results": [g for g in got if isinstance(g, dict)],
                               "errors": [repr(g) for g in got if isinstance(g, BaseException)][:3]}))

        await loop.run_in_executor(None, gift_go.wait)
        acks: list[float] = []
        rejected: dict[str, int] = {}
        stop_at = time.time() + gift_s

        async def gifter(i: int, ws: Any) -> None:
            sem = asyncio.Semaphore(window)
            pending: set[asyncio.Task[None]] = set()

            async def one() -> None:
                try:
                    r, dt = await request(i, ws, "gift", {"gift_id": "rose", "count": 1})
                    if r.get("t") == "ack":
                        acks.append(dt * 1000)
                    else:
                        code = str((r.get("d") or {}).get("code"))
                        rejected[code] = rejected.get(code, 0) + 1
                finally:
                    sem.release()

            while time.time() < stop_at:
                await sem.acquire()
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending, return_exceptions=True)

        mine = live[: max(0, min(len(live), gifters))]
        t_g = time.time()
        await asyncio.gather(*(gifter(i, ws) for i, ws in mine), return_exceptions=True)
        q.put(("gifted", idx, {"acks": acks, "seconds": time.time() - t_g, "rejected": rejected}))
        await loop.run_in_executor(None, done.wait)
        for t in readers:
            t.cancel()
        await asyncio.gather(*(ws.close() for _, ws in live), return_exceptions=True)


# ------------------------------------------------------------------ the bare ceiling for joins
def bare_server(port: int) -> None:
    from aiohttp import web

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"t": "welcome", "room": request.query.get("room"), "d": {}}))
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


def joins_only(url: str, secret: str, room: str, n: int, procs: int) -> dict[str, Any]:
    """Clients connect, wait for welcome, and leave: connections/s against ``url``."""
    q: Any = CTX.Queue()
    go, gift_go, done = CTX.Event(), CTX.Event(), CTX.Event()
    per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    ps = [CTX.Process(target=client_proc, args=(i, per[i], url, secret, room, -1, 0.0, 1, q, go, gift_go, done), daemon=True)
          for i in range(procs)]
    for p in ps:
        p.start()
    time.sleep(1.0)
    go.set()
    joined = [q.get(timeout=300)[2] for _ in ps]
    gift_go.set()
    done.set()
    for p in ps:
        p.join(timeout=30)
        if p.is_alive():
            p.terminate()
    return summarize_joins(joined)


def summarize_joins(joined: list[dict[str, Any]]) -> dict[str, Any]:
    t0 = min(j["t0"] for j in joined)
    welcomes = sorted(t for j in joined for t in j["welcomes"])
    n_err = sum(j["n_errors"] for j in joined)
    span = (welcomes[-1] - t0) if welcomes else float("nan")
    return {"admitted": len(welcomes), "errors": n_err, "first_errors": [e for j in joined for e in j["errors"]][:3],
            "seconds": round(span, 2), "per_s": round(len(welcomes) / span, 1) if welcomes else 0.0}


# ------------------------------------------------------------------ the run
async def http_json(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.request(method, url, json=body,
                                                        headers={"Authorization": f"Bearer {token}"}) as r:
        try:
            return r.status, await r.json()
        except Exception:
            return r.status, await r.text()


async def sql_count(database_url: str, table: str, where: str) -> int:
    from sqlalchemy import text

    from livecommerce.sql_conn import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.connect() as c:
            return int((await c.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"))).scalar() or 0)
    finally:
        await engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Prints a table of goals, measured figures and ceilings; --json writes them too.")
    ap.add_argument("--gateways", type=int, default=2, help="gateway processes behind HAProxy (default 2)")
    ap.add_argument("--conns", type=int, default=3000, help="clients of the join storm, then buyers (default 3000)")
    ap.add_argument("--stock", type=int, default=600, help="units on sale (default 600)")
    ap.add_argument("--gifters", type=int, default=200, help="clients that send gifts (default 200)")
    ap.add_argument("--gift-seconds", type=float, default=8.0, help="seconds of gifting (default 8)")
    ap.add_argument("--window", type=int, default=4, help="unanswered gifts per gifter (default 4)")
    ap.add_argument("--procs", type=int, default=2, help="client processes (default 2)")
    ap.add_argument("--log", choices=("kafka", "redis"), default="kafka", help="durable log (default kafka: Tansu)")
    ap.add_argument("--database-url", default=os.environ.get("LC_TEST_DATABASE_URL",
                                                             "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
                    help="PostgreSQL server (a schema of its own is made and dropped)")
    ap.add_argument("--json", help="also write the result to this file")
    a = ap.parse_args()
    return asyncio.run(run(a))


async def run(a: argparse.Namespace) -> int:
    import bench_gifts
    import bench_rush

    from livecommerce.auth import issue_token
    from livecommerce.devcluster.topology import Options, Topology

    bench_rush.raise_nofile()
    load0 = os.getloadavg()
    log(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="bench_cluster_storms."))
    room = "storm"
    topo = Topology(Options(state_dir=work / "topology", base_port=0, gateways=a.gateways, workers_per_kind=1,
                            worker_kinds=["orders", "wallet", "points"], database_url=a.database_url, log=a.log,
                            max_conns_per_ip=10 * a.conns, extra_env={"LC_LOG_LEVEL": "WARNING", "LC_LOG_JSON": "1"}),
                    progress=log)
    state = topo.up()
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "gateways": a.gateways, "log": a.log,
                           "conns": a.conns, "stock": a.stock, "goals": GOALS}
    procs: list[Any] = []
    bare: Any = None
    try:
        lb, secret = state.lb_url, state.secret
        ops = issue_token(secret, user="ops1", role="ops", rooms=(), now_s=int(time.time()), ttl_s=3600)
        host = issue_token(secret, user="h1", role="host", rooms=(room,), now_s=int(time.time()), ttl_s=3600)
        st, body = await http_json("POST", f"{lb}/api/v1/rooms", host, {"id": room, "title": "storm"})
        assert st in (201, 409), (st, body)
        await http_json("POST", f"{lb}/api/v1/rooms/{room}/live", host, {})

        # ---- ceilings first (no gateway in the way), on the same cluster and log
        log("ceilings: bare aiohttp joins, batch reserve script, gift batch script")
        port = bench_rush.free_port()
        bare = CTX.Process(target=bare_server, args=(port,), daemon=True)
        bare.start()
        await asyncio.sleep(1.0)
        out["ceiling_joins"] = joins_only(f"http://127.0.0.1:{port}", secret, room, a.conns, a.procs)
        bare.terminate()
        kafka = state.kafka_bootstrap or None
        prefix = f"ceil{uuid.uuid4().hex[:6]}"
        out["ceiling_reserve_per_s"] = round(await bench_rush.batch_ceiling(state.redis_url, prefix, kafka, per_call=100,
                                                                           with_log=True, seconds=3.0), 1)
        out["ceiling_gifts"] = await bench_gifts.raw_script_ceiling(state.redis_url, prefix + "g", users=a.gifters,
                                                                    per_batch=64, in_flight=4, seconds=3.0)

        # ---- the gifters' wallets (ops top-ups: test coins stay off on the topology)
        per = [a.conns // a.procs + (1 if i < a.conns % a.procs else 0) for i in range(a.procs)]
        gifters = [min(per[i], a.gifters // a.procs + (1 if i < a.gifters % a.procs else 0)) for i in range(a.procs)]
        for i in range(a.procs):
            for u in range(gifters[i]):
                st, body = await http_json("POST", f"{lb}/api/v1/wallets/p{i}u{u}/topup", ops,
                                           {"amount": 10_000_000, "idempotency_key": f"seed-{i}-{u}"})
                assert st in (200, 201), (st, body)

        # ---- join storm
        q: Any = CTX.Queue()
        go, gift_go, done = CTX.Event(), CTX.Event(), CTX.Event()
        procs = [CTX.Process(target=client_proc, args=(i, per[i], lb, secret, room, gifters[i], a.gift_seconds, a.window,
                                                      q, go, gift_go, done), daemon=True) for i in range(a.procs)]
        for p in procs:
            p.start()
        await asyncio.sleep(1.0)
        log(f"join storm: {a.conns} clients through HAProxy to {a.gateways} gateways")
        go.set()
        joined = [q.get(timeout=300)[2] for _ in procs]
        out["joins"] = summarize_joins(joined)

        # ---- buy storm: a sale that opens in 2 s; every client buys at sale.started
        sale = f"s{uuid.uuid4().hex[:8]}"
        now = int(time.time() * 1000)
        st, body = await http_json("POST", f"{lb}/api/v1/campaigns", ops, {
            "id": sale, "room": room, "product_id": "p1", "price": 100, "stock": a.stock, "per_user_limit": 1,
            "starts_ms": now + 2000, "duration_s": 600})
        assert st == 201, (st, body)
        log(f"buy storm: sale {sale} of {a.stock} units opens in 2 s")
        bought = [q.get(timeout=300)[2] for _ in procs]
        results = [r for b in bought for r in b["results"]]
        reserved = [r for r in results if r["t"] == "order.reserved"]
        soldout = [r for r in results if r["code"] == "sold_out"]
        span = (max(r["at"] for r in reserved) - min(r["at"] - r["ms"] / 1000 for r in reserved)) if reserved else 0
        out["buys"] = {
            "buyers": len(results), "reserved": len(reserved), "sold_out": len(soldout),
            "other": len(results) - len(reserved) - len(soldout), "errors": [e for b in bought for e in b["errors"]][:3],
            "reservations_per_s": round(len(reserved) / span, 1) if span else 0.0,
            "reply_p50_ms": round(pct([r["ms"] for r in results], 0.50), 1),
            "reply_p99_ms": round(pct([r["ms"] for r in results], 0.99), 1),
            "retries_same_order": sum(1 for r in reserved if r.get("retry_same")),
            "exactly_stock": len(reserved) == a.stock, "distinct_orders": len({r["order"] for r in reserved}),
        }

        # ---- gift storm
        n_w0 = await sql_count(state.database_url, "wallet_ledger", "reason = 'gift.sent'")
        n_p0 = await sql_count(state.database_url, "applied_events", "consumer = 'points'")
        log(f"gift storm: {sum(gifters)} gifters for {a.gift_seconds:g} s, {a.window} in flight each")
        t_gift = time.time()
        gift_go.set()
        gifted = [q.get(timeout=300)[2] for _ in procs]
        acks = [x for g in gifted for x in g["acks"]]
        secs = max(g["seconds"] for g in gifted)
        rejected: dict[str, int] = {}
        for g in gifted:
            for k, v in g["rejected"].items():
                rejected[k] = rejected.get(k, 0) + v
        out["gifts"] = {"acked": len(acks), "seconds": round(secs, 2), "per_s": round(len(acks) / secs, 1) if secs else 0,
                        "ack_p50_ms": round(pct(acks, 0.5), 1), "ack_p99_ms": round(pct(acks, 0.99), 1),
                        "rejected": rejected}
        # the workers: until SQL holds every acked gift (wallet ledger debits and the points
        # worker's awards for them), at most 120 s
        want = len(acks)
        t_end = time.time()
        wallet_done = points_done = None
        while time.time() - t_end < 120 and (wallet_done is None or points_done is None):
            n_w = await sql_count(state.database_url, "wallet_ledger", "reason = 'gift.sent'") - n_w0
            n_p = await sql_count(state.database_url, "applied_events", "consumer = 'points'") - n_p0
            if wallet_done is None and n_w >= want:
                wallet_done = time.time()
            if points_done is None and n_p >= want:
                points_done = time.time()
            await asyncio.sleep(0.5)
        out["workers"] = {
            "gifts": want,
            "wallet_sql_complete_s_after_last_ack": None if wallet_done is None else round(wallet_done - t_end, 1),
            "points_sql_complete_s_after_last_ack": None if points_done is None else round(points_done - t_end, 1),
            "wallet_events_per_s_end_to_end": None if wallet_done is None else round(want / (wallet_done - t_gift), 1),
            "points_events_per_s_end_to_end": None if points_done is None else round(want / (points_done - t_gift), 1),
        }
        done.set()
        for p in procs:
            p.join(timeout=30)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        if bare is not None and bare.is_alive():
            bare.terminate()
        topo.down(purge=True)
        shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    out["loadavg"] = [round(load0[0], 2), round(load1[0], 2)]
    print_report(out)
    if a.json:
        write_json(a.json, out)
    return 0


def write_json(path: str, out: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(out, indent=2))


def print_report(o: dict[str, Any]) -> None:
    j, cj, b, g, w = o["joins"], o["ceiling_joins"], o["buys"], o["gifts"], o["workers"]
    ratio = j["per_s"] / cj["per_s"] if cj["per_s"] else float("nan")
    print(f"\ncluster up: {o['gateways']} gateways behind HAProxy, Redis Cluster 3+3, log {o['log']}, PostgreSQL; "
          f"load average {o['loadavg'][0]} -> {o['loadavg'][1]}")
    print(f"{'':34} {'goal':>14} {'measured':>14} {'same-run ceiling':>18}")
    print(f"{'join storm: admitted/s':34} {'>= 2,500':>14} {j['per_s']:>14,.0f} {cj['per_s']:>18,.0f}")
    print(f"{'  ratio to bare aiohttp':34} {'>= 60 %':>14} {ratio:>13.0%} {'':>18}")
    print(f"{'  admitted / errors':34} {'':>14} {j['admitted']:>8} / {j['errors']:<4} {'':>18}")
    print(f"{'buy storm: reservations/s':34} {'>= 20,000':>14} {b['reservations_per_s']:>14,.0f} "
          f"{o['ceiling_reserve_per_s']:>18,.0f}")
    print(f"{'  reply p50 / p99 ms':34} {'p99 < 250':>14} {b['reply_p50_ms']:>6} / {b['reply_p99_ms']:<6} {'':>18}")
    print(f"{'  reserved / sold_out / other':34} {'exactly S':>14} {b['reserved']:>5}/{b['sold_out']}/{b['other']:<4} "
          f"{'S = ' + str(o['stock']):>18}")
    print(f"{'  retries answered the same order':34} {'all':>14} {b['retries_same_order']:>14} {'':>18}")
    print(f"{'gift storm: gifts acked/s':34} {'>= 10,000':>14} {g['per_s']:>14,.0f} "
          f"{o['ceiling_gifts']['gifts_per_s']:>18,.0f}")
    print(f"{'  ack p50 / p99 ms':34} {'p99 < 100':>14} {g['ack_p50_ms']:>6} / {g['ack_p99_ms']:<6} {'':>18}")
    for k in ("wallet", "points"):
        v = w[f"{k}_events_per_s_end_to_end"]
        after = w[f"{k}_sql_complete_s_after_last_ack"]
        shown = "not within 120 s" if v is None else f"{v:,.0f}"
        print(f"{'  ' + k + ' worker, events/s end to end':34} {'>= 10,000':>14} {shown:>14} "
              f"{'SQL +' + str(after) + ' s' if after is not None else '':>18}")


if __name__ == "__main__":
    sys.exit(main())
