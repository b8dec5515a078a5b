#!/usr/bin/env python3
"""Red packets: a grab storm over real WebSockets, and how long until ``redpacket.ended``.

One real gateway node in this process (real Redis, a temporary SQLite file, loopback). A host
drops a packet of ``--amount`` coins in ``--shares`` shares; ``--grabbers`` viewers, each on
its own WebSocket, send ``redpacket.grab`` at the same moment. Reported: the time from the
first grab sent until the last answer, answers per second, p50/p99/max answer latency, and the
time from the last answer until a viewer gets ``redpacket.ended`` from the keeper (one
``RedPacketKeeper.drain`` per ``--poll-ms``, as the worker polls). Checked, or the script exits
1: exactly ``--shares`` grabs won, their amounts sum to ``--amount``, none is zero, nobody won
twice, every other grabber heard ``empty``, and the Redis balances hold every coin.

    python scripts/bench_redpackets.py
    python scripts/bench_redpackets.py --grabbers 2000 --shares 500 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import websockets  # noqa: E402
from aiohttp import web  # noqa: E402

from gateway.app import build_app  # noqa: E402
from gateway.core import GW_KEY  # noqa: E402
from livecommerce.auth import issue_token  # noqa: E402
from livecommerce.config import Settings  # noqa: E402
from livecommerce.log_open import open_log  # noqa: E402
from livecommerce.migrations import upgrade  # noqa: E402
from livecommerce.redpackets_redis import RedisRedPackets  # noqa: E402
from livecommerce.wallet_redis import RedisWallet  # noqa: E402
from workers.redpackets import RedPacketKeeper  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


async def main(a: argparse.Namespace) -> int:
    tmp = tempfile.mkdtemp(prefix="lc-bench-rp-")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    s = Settings.from_env({}, redis_url=a.redis_url, key_prefix=prefix, data_dir=tmp, database_url=f"sqlite+aiosqlite:///{tmp}/lc.db",
                          log_json=False, log_level="WARNING", secret=f"bench-secret-{uuid.uuid4().hex}", node_id="bench-rp",
                          command_rate=1000.0, command_burst=1000)
    await upgrade(s.database_url)
    app = build_app(s)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    now = int(time.time())
    room = f"rp-{uuid.uuid4().hex[:6]}"

    def tok(user: str, role: str = "viewer", rooms: tuple[str, ...] = ()) -> str:
        return issue_token(s.secret, user=user, role=role, rooms=rooms, now_s=now, ttl_s=3600)

    gw = app[GW_KEY]
    socks: list[Any] = []
    report: dict[str, Any] = {"grabbers": a.grabbers, "shares": a.shares, "amount": a.amount, "loadavg_start": os.getloadavg()}
    failures: list[str] = []
    try:
        async with aiohttp.ClientSession() as http:
            host = {"Authorization": f"Bearer {tok('boss', 'host', (room,))}"}
            async with http.post(f"{url}/api/v1/rooms", json={"id": room}, headers=host) as r:
                assert r.status == 201, await r.text()
            async with http.post(f"{url}/api/v1/wallets/boss/topup", json={"amount": a.amount, "idempotency_key": "bench"},
                                 headers={"Authorization": f"Bearer {tok('ops', 'ops')}"}) as r:
                assert r.status == 201, await r.text()
            t = time.monotonic()
            for i in range(0, a.grabbers, 100):  # connect in waves of 100
                socks += await asyncio.gather(*(websockets.connect(f"{ws_url}?room={room}&format=json&token={tok(f'g{j}')}",
                                                                   max_size=None)
                                                for j in range(i, min(i + 100, a.grabbers))))
            for w in socks:
                await w.recv()  # welcome
            report["connect_s"] = round(time.monotonic() - t, 2)
            async with http.post(f"{url}/api/v1/rooms/{room}/redpackets", headers=host,
                                 json={"amount": a.amount, "count": a.shares, "request_id": "bench", "duration_s": 600}) as r:
                assert r.status == 201, await r.text()
                pid = (await r.json())["id"]

        async def grab(w: Any) -> tuple[float, dict[str, Any]]:
            sent = time.monotonic()
            await w.send(json.dumps({"t": "redpacket.grab", "id": 1, "d": {"packet_id": pid}}))
            while True:
                f = json.loads(await w.recv())
                for e in f["items"] if f["t"] == "batch" else [f]:
                    if e.get("id") == 1:
                        return time.monotonic() - sent, e

        t0 = time.monotonic()
        answers = await asyncio.gather(*(grab(w) for w in socks))
        storm = time.monotonic() - t0
        lat = [x for x, _ in answers]
        won = [e["d"] for _, e in answers if e["t"] == "redpacket.grabbed"]
        codes = sorted({e["d"]["code"] for _, e in answers if e["t"] == "error"})
        report.update(storm_s=round(storm, 3), answers_per_s=round(len(answers) / storm), p50_ms=round(pct(lat, 0.5) * 1000, 1),
                      p99_ms=round(pct(lat, 0.99) * 1000, 1), max_ms=round(max(lat) * 1000, 1), won=len(won), refused=codes)
        if len(won) != min(a.shares, a.grabbers):
            failures.append(f"{len(won)} grabs won, expected {min(a.shares, a.grabbers)}")
        if a.grabbers >= a.shares and sum(d["amount"] for d in won) != a.amount:
            failures.append(f"shares sum to {sum(d['amount'] for d in won)}, not {a.amount}")
        if any(d["amount"] <= 0 for d in won) or len({d["index"] for d in won}) != len(won):
            failures.append("a zero share or an index twice")
        if codes not in ([], ["empty"]):
            failures.append(f"refusals other than empty: {codes}")

        # the keeper, polling as the worker does, until a viewer hears redpacket.ended
        durable = open_log(s, gw.redis)
        keeper = RedPacketKeeper(RedisRedPackets(gw.redis, gw.keys), RedisWallet(gw.redis, gw.keys), durable, gw.broker,
                                 worker="bench-keeper")

        async def ended(w: Any) -> dict[str, Any]:
            while True:
                f = json.loads(await w.recv())
                for e in f["items"] if f["t"] == "batch" else [f]:
                    if e["t"] == "redpacket.ended":
                        return dict(e["d"])

        t1 = time.monotonic()
        waiting = asyncio.ensure_future(ended(socks[0]))
        while not waiting.done():
            await keeper.drain()
            await asyncio.wait([waiting], timeout=a.poll_ms / 1000)
        summary = waiting.result()
        report["ended_after_ms"] = round((time.monotonic() - t1) * 1000, 1)
        report["best"] = summary.get("best")
        await durable.close()
        balances = await RedisRedPackets(gw.redis, gw.keys).balances(["boss", *[f"g{i}" for i in range(a.grabbers)]])
        if sum(balances.values()) != a.amount:
            failures.append(f"balances hold {sum(balances.values())} coins, not {a.amount}")
    finally:
        for w in socks:
            await w.close()
        async for k in gw.redis.scan_iter(match=f"{prefix}:*", count=1000):  # this run's keys only
            await gw.redis.delete(k)
        await runner.cleanup()
    report["loadavg_end"] = os.getloadavg()
    report["ok"] = not failures
    if a.json:
        print(json.dumps(report))
    else:
        print(f"{a.grabbers} grabbers for {a.shares} shares of {a.amount} coins (connected in {report['connect_s']} s)")
        print(f"  storm: {report['storm_s']} s, {report['answers_per_s']} answers/s, latency p50 {report['p50_ms']} ms, "
              f"p99 {report['p99_ms']} ms, max {report['max_ms']} ms; won {report['won']}, refused {report['refused']}")
        print(f"  redpacket.ended at a viewer {report['ended_after_ms']} ms after the last answer (keeper poll {a.poll_ms} ms)")
        print(f"  load average {report['loadavg_start'][0]:.2f} -> {report['loadavg_end'][0]:.2f}")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 0 if not failures else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--redis-url", default=os.environ.get("LC_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--grabbers", type=int, default=1000, help="viewers, one WebSocket each (default 1000)")
    p.add_argument("--shares", type=int, default=200, help="shares of the packet (1..500, default 200)")
    p.add_argument("--amount", type=int, default=10_000, help="coins in the packet (default 10000)")
    p.add_argument("--poll-ms", type=int, default=250, help="the keeper's poll interval (the worker's: 250)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
