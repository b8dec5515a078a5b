#!/usr/bin/env python3
"""Follower reach: a host with many followers goes live; how long until the last connected
follower has the ``host.live`` notice, and until every follower's inbox row is written.

Three processes on this machine, real Redis (``--redis``), SQLite in a temporary directory
(or ``--database-url``, e.g. PostgreSQL):

1. ``--followers`` users follow host ``h1`` (rows in ``fan_members``, written directly: the
   profiles worker's projection, as if they had followed over HTTP);
2. a gateway process (``livecommerce gateway``) and a reach worker process
   (``livecommerce worker reach``) are started;
3. ``--connected`` of the followers (spread over the id range) connect real WebSocket
   clients (raw asyncio protocols, ``scripts/_wsload.py``) to a lobby room and wait until
   presence lists every one of them;
4. the host presses go-live (``POST /api/v1/rooms/show/live``); the clock starts when the
   request is sent.

Printed (and written as JSON with ``--json``): the go-live request's time, when the first,
median and last connected follower got the notice, when the fan-out's last page was committed
(``reach_fanouts.done_ms``) and the rows counted, and the 1-minute load average before and
after. Bounded: ``--timeout`` seconds for the fan-out, then everything is stopped.

    flock /tmp/bench.lock python scripts/bench_reach.py
    flock /tmp/bench.lock python scripts/bench_reach.py --followers 20000 --connected 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import _wsload  # noqa: E402
import aiohttp  # noqa: E402
import msgpack  # noqa: E402
from _wsload import Totals, WsClient, open_clients, raise_nofile  # noqa: E402

from livecommerce import reach_sql  # noqa: E402
from livecommerce.auth import issue_token  # noqa: E402
from livecommerce.keys import Keys  # noqa: E402
from livecommerce.migrations import upgrade  # noqa: E402
from livecommerce.presence_redis import RedisPresence  # noqa: E402
from livecommerce.redis_conn import connect  # noqa: E402
from livecommerce.schema import fan_members  # noqa: E402
from livecommerce.store_sql import SqlStore  # noqa: E402

GOT: dict[str, float] = {}  # user -> when their host.live arrived


class Follower(WsClient):
    """A raw client that notes when its ``host.live`` arrives (welcome makes it ready)."""

    user = ""

    def on_frame(self, payload: bytes) -> None:
        obj = msgpack.unpackb(payload)
        t = obj.get("t")
        if t == "welcome":
            self._set_ready()
        elif t == "host.live" and self.user not in GOT:
            GOT[self.user] = time.time()


_wsload.WsClient = Follower  # type: ignore[misc]  # open_clients builds these


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load1() -> float:
    return os.getloadavg()[0]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def seed(store: SqlStore, users: list[str]) -> None:
    async with store.write() as tx:
        for i in range(0, len(users), 5000):
            await tx.conn.execute(fan_members.insert(), [
                {"host_id": "h1", "user_id": u, "following": True, "member": False, "intimacy": 0, "updated_ms": 0}
                for u in users[i:i + 5000]])


async def wait_http(url: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"the gateway at {url} did not become ready in {limit_s} s: see its output above")


async def main(a: argparse.Namespace) -> int:
    raise_nofile(a.connected * 2 + 1000)
    tmp = tempfile.mkdtemp(prefix="bench_reach_")
    db_url = a.database_url or f"sqlite+aiosqlite:///{tmp}/lc.db"
    prefix = f"br{uuid.uuid4().hex[:6]}"
    secret = f"bench-secret-{uuid.uuid4().hex}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_REDIS_URL=a.redis, LC_KEY_PREFIX=prefix, LC_DATABASE_URL=db_url, LC_SECRET=secret, LC_LOG_LEVEL="WARNING",
               LC_LOG_JSON="1", LC_DATA_DIR=tmp, PYTHONPATH=str(ROOT))  # this checkout's code, not the installed one
    cli = (sys.executable, "-m", "livecommerce.cli")
    users = [f"f{i:06d}" for i in range(a.followers)]
    step = max(1, a.followers // max(1, a.connected))
    online = users[::step][: a.connected]

    await upgrade(db_url)
    store = SqlStore(db_url)
    t = time.monotonic()
    await seed(store, users)
    seeded_s = time.monotonic() - t
    procs: list[asyncio.subprocess.Process] = []
    clients: list[WsClient] = []
    redis = connect(a.redis)
    out: dict[str, Any] = {"followers": a.followers, "connected": len(online), "database": db_url.split(":")[0],
                           "seed_s": round(seeded_s, 2)}
    try:
        procs.append(await asyncio.create_subprocess_exec(*cli, "gateway", "--port", str(port), "--node-id", "g1", env=env))
        procs.append(await asyncio.create_subprocess_exec(*cli, "worker", "reach", "--node-id", "r1", env=env))
        base = f"http://127.0.0.1:{port}"
        await wait_http(base, 30)
        now_s = int(time.time())
        host_tok = issue_token(secret, user="h1", role="host", rooms=("show",), now_s=now_s, ttl_s=3600)
        async with aiohttp.ClientSession() as http:
            for room, host in (("show", "h1"), ("lobby", "h9")):
                tok = host_tok if host == "h1" else issue_token(secret, user="h9", role="host", rooms=("lobby",), now_s=now_s,
                                                                ttl_s=3600)
                r = await http.post(base + "/api/v1/rooms", json={"id": room, "title": room},
                                    headers={"Authorization": f"Bearer {tok}"})
                assert r.status in (200, 201), await r.text()
            tot = Totals()
            paths = [f"/ws?room=lobby&token={issue_token(secret, user=u, role='viewer', now_s=now_s, ttl_s=3600)}"
                     for u in online]
            t = time.monotonic()
            clients = await open_clients("lc", "127.0.0.1", port, paths, local_ips=[], tot=tot, concurrency=64, limit_s=60)
            out["connect_s"] = round(time.monotonic() - t, 2)
            by_path = dict(zip(paths, online, strict=True))
            for c in clients:
                c.user = by_path[c.path]  # type: ignore[attr-defined]
            if len(clients) != len(online):
                print(f"only {len(clients)} of {len(online)} clients connected: {tot.other}", file=sys.stderr)
            presence = RedisPresence(redis, Keys(prefix))
            want = [c.user for c in clients]  # type: ignore[attr-defined]
            deadline = time.monotonic() + 30
            while True:
                where = await presence.user_nodes(want)
                missing = [u for u in want if not where.get(u)]
                if not missing:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{len(missing)} connected followers never showed in presence")
                await asyncio.sleep(0.2)
            await asyncio.sleep(a.settle_s)
            out["load1_before"] = load1()
            GOT.clear()
            t0 = time.time()
            r = await http.post(base + "/api/v1/rooms/show/live", headers={"Authorization": f"Bearer {host_tok}"})
            body = await r.json()
            out["golive_ms"] = round((time.time() - t0) * 1000, 1)
            assert r.status == 200, body
            eid = f"host.live:show:{body['live_ms']}"
            done_at: float | None = None
            deadline = time.monotonic() + a.timeout
            while time.monotonic() < deadline:
                if done_at is None:
                    st = await reach_sql.fanout_state(store, eid)
                    if st is not None and st["done_ms"] is not None:
                        done_at = int(st["done_ms"]) / 1000
                if done_at is not None and len(GOT) >= len(clients):
                    break
                await asyncio.sleep(0.05)
            out["load1_after"] = load1()
        lat = [v - t0 for v in GOT.values()]
        rows, distinct = await reach_sql.count_rows(store, eid)
        out.update({
            "notified": len(GOT), "first_notice_s": round(min(lat), 3) if lat else None,
            "p50_notice_s": round(pct(lat, 0.5), 3) if lat else None,
            "last_notice_s": round(max(lat), 3) if lat else None,
            "rows_done_s": round(done_at - t0, 3) if done_at else None,
            "rows": rows, "rows_distinct": distinct,
        })
    finally:
        for c in clients:
            c.close()
        for p in reversed(procs):
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 20)
            except TimeoutError:
                p.kill()
                await p.wait()
        async for k in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(k)
        await redis.aclose()
        await store.close()
    print(json.dumps(out, indent=1))
    ok = out.get("notified") == len(online) and out.get("rows") == a.followers == out.get("rows_distinct")
    print(f"{a.followers:,} followers, {out.get('notified')}/{len(online)} connected notified: last notice "
          f"{out.get('last_notice_s')} s (p50 {out.get('p50_notice_s')} s), all inbox rows {out.get('rows_done_s')} s "
          f"({out.get('rows'):,} rows); load1 {out.get('load1_before'):.2f} -> {out.get('load1_after'):.2f}"
          + ("" if ok else "  INCOMPLETE"))
    a.result = out
    return 0 if ok else 1


def cli() -> int:
    p = argparse.ArgumentParser(
        description="A host with --followers followers goes live: time until the last of --connected connected followers "
                    "got host.live, and until every inbox row is written. Run under flock /tmp/bench.lock.")
    p.add_argument("--followers", type=int, default=100_000, help="followers of the host (default 100000)")
    p.add_argument("--connected", type=int, default=2_000, help="followers connected with a real WebSocket (default 2000)")
    p.add_argument("--redis", default=os.environ.get("LC_REDIS_URL", "redis://127.0.0.1:6379/0"), help="Redis URL")
    p.add_argument("--database-url", help="SQL URL (default: SQLite in a temporary directory)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the fan-out (default 90)")
    p.add_argument("--settle-s", type=float, default=1.0, help="pause after the clients connected (default 1)")
    p.add_argument("--json", help="also write the result to this file")
    a = p.parse_args()
    code = asyncio.run(main(a))
    if a.json:
        Path(a.json).write_text(json.dumps(a.result, indent=1))
    return code


if __name__ == "__main__":
    raise SystemExit(cli())
