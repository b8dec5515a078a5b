#!/usr/bin/env python3
"""Room moderation: what the comment guard costs and how fast a change reaches another node.

Two real gateway nodes in this process (real Redis, a temporary SQLite file, loopback),
one room hosted by ``h1``:

* **guard**: ``Moderation.check_comment`` called on a connected viewer's real connection,
  ``--calls`` times, in three rooms: none moderated; ``--entries`` mutes and as many bans
  (the viewer in neither); followers-only with the viewer a follower (the relation held).
  Reported: microseconds per call and the moderation adapter's calls during the loop (0: no
  Redis round trip per comment).
* **propagation**: ``--rounds`` times, the host mutes (then unmutes) a viewer through node A
  while the viewer is connected to node B: the time from sending the HTTP request until the
  viewer's next comment on B is refused (``muted``), then accepted again; the viewer
  comments every ``--poll-ms`` (a comment is a WebSocket round trip to B). p50/p99/max.

    python scripts/bench_moderation.py
    python scripts/bench_moderation.py --rounds 50 --entries 10000
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
from aiohttp import web  # noqa: E402

from gateway.app import build_app  # noqa: E402
from gateway.core import GW_KEY  # noqa: E402
from gateway.wiring import SERVICES_KEY  # noqa: E402
from livecommerce.auth import issue_token  # noqa: E402
from livecommerce.config import Settings  # noqa: E402
from livecommerce.migrations import upgrade  # noqa: E402
from livecommerce.moderation import Change  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


class Counting:
    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def counted(*a: Any, **kw: Any) -> Any:
            self.calls += 1
            return await attr(*a, **kw)

        return counted


async def start(settings: Settings) -> tuple[web.AppRunner, str, web.Application]:
    app = build_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", app


async def main(a: argparse.Namespace) -> int:
    tmp = tempfile.mkdtemp(prefix="lc-bench-mod-")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    base = Settings.from_env({}, redis_url=a.redis_url, key_prefix=prefix, data_dir=tmp, database_url=f"sqlite+aiosqlite:///{tmp}/lc.db",
                             log_json=False, log_level="WARNING", secret=f"bench-secret-{uuid.uuid4().hex}", comment_rate=1000.0,
                             comment_burst=1000, command_rate=1000.0, command_burst=1000)
    await upgrade(base.database_url)
    ra, url_a, _ = await start(base.replace(node_id="bench-a"))
    rb, url_b, app_b = await start(base.replace(node_id="bench-b"))
    now = int(time.time())

    def tok(user: str, role: str = "viewer", rooms: tuple[str, ...] = ()) -> str:
        return issue_token(base.secret, user=user, role=role, rooms=rooms, now_s=now, ttl_s=3600)

    report: dict[str, Any] = {"loadavg_start": os.getloadavg()}
    try:
        async with aiohttp.ClientSession() as http:
            rooms = {k: f"{k}-{uuid.uuid4().hex[:6]}" for k in ("plain", "crowded", "followers")}
            for room in rooms.values():
                async with http.post(f"{url_a}/api/v1/rooms", json={"id": room}, headers={"Authorization": f"Bearer {tok('h1', 'host', (room,))}"}) as r:
                    assert r.status == 201, await r.text()
            gw_b, mod_b = app_b[GW_KEY], app_b[SERVICES_KEY].moderation
            # the crowded room's state, written straight through the adapter (as many HTTP calls would)
            t0 = time.perf_counter()
            store = mod_b.store
            for i in range(a.entries):
                await store.apply(rooms["crowded"], Change("mute", user=f"m{i}", until_ms=int(time.time() * 1000) + 3_600_000), now_ms=0)
                await store.apply(rooms["crowded"], Change("ban", user=f"b{i}"), now_ms=0)
            await store.apply(rooms["followers"], Change("chat", mode="followers"), now_ms=0)
            await mod_b.fans.put([{"host_id": "h1", "user_id": "v1", "following": True, "member": False, "intimacy": 0}])
            report["setup_s"] = round(time.perf_counter() - t0, 2)

            # ---- guard cost
            conns = {}
            wss = []
            for k, room in rooms.items():
                ws = await http.ws_connect(f"{url_b.replace('http', 'ws')}/ws?room={room}&format=json&token={tok('v1')}")
                await ws.receive()  # welcome
                wss.append(ws)
                conns[k] = next(c for c in gw_b.hub.by_user["v1"] if c.room == room)
            counted = Counting(mod_b.store)
            fans = Counting(mod_b.fans)
            mod_b.store, mod_b.fans = counted, fans
            guard: dict[str, Any] = {}
            for k, conn in conns.items():
                await mod_b.check_comment(conn)  # warm (the relation is read once here)
                before = counted.calls + fans.calls
                t0 = time.perf_counter()
                for _ in range(a.calls):
                    await mod_b.check_comment(conn)
                dt = time.perf_counter() - t0
                guard[k] = {"us_per_call": round(dt / a.calls * 1e6, 3), "adapter_calls": counted.calls + fans.calls - before}
            mod_b.store, mod_b.fans = counted.inner, fans.inner
            report["guard"] = guard
            for ws in wss:
                await ws.close()

            # ---- propagation A -> B
            room = rooms["plain"]
            host = {"Authorization": f"Bearer {tok('h1', 'host', (room,))}"}
            ws = await http.ws_connect(f"{url_b.replace('http', 'ws')}/ws?room={room}&format=json&token={tok('v2')}")
            await ws.receive()
            ids = iter(range(1, 10**9))

            async def comment() -> str:
                cid = next(ids)
                await ws.send_str(json.dumps({"t": "comment", "id": cid, "d": {"text": "x"}}))
                while True:
                    f = json.loads((await ws.receive()).data)
                    items = f["items"] if f["t"] == "batch" else [f]
                    for e in items:
                        if e.get("id") == cid:
                            return str(e["d"]["code"]) if e["t"] == "error" else str(e["t"])

            async def until(code: str, t0: float) -> float:
                while True:
                    if await comment() == code:
                        return time.perf_counter() - t0
                    await asyncio.sleep(a.poll_ms / 1000)

            mute_lat, unmute_lat = [], []
            for _ in range(a.rounds):
                t0 = time.perf_counter()
                async with http.post(f"{url_a}/api/v1/rooms/{room}/mutes", json={"user": "v2", "seconds": 600}, headers=host) as r:
                    assert r.status == 201, await r.text()
                mute_lat.append(await until("muted", t0))
                t0 = time.perf_counter()
                async with http.delete(f"{url_a}/api/v1/rooms/{room}/mutes/v2", headers=host) as r:
                    assert r.status == 200, await r.text()
                unmute_lat.append(await until("ack", t0))
            await ws.close()

            def summary(xs: list[float]) -> dict[str, float]:
                return {"p50_ms": round(pct(xs, 0.5) * 1000, 2), "p99_ms": round(pct(xs, 0.99) * 1000, 2),
                        "max_ms": round(max(xs) * 1000, 2)}

            report["propagation"] = {"rounds": a.rounds, "poll_ms": a.poll_ms, "mute": summary(mute_lat), "unmute": summary(unmute_lat)}
    finally:
        await rb.cleanup()
        await ra.cleanup()
    report["loadavg_end"] = os.getloadavg()
    report["entries"] = a.entries
    report["calls"] = a.calls
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000, help="guard calls per room")
    ap.add_argument("--entries", type=int, default=1000, help="mutes (and as many bans) in the crowded room")
    ap.add_argument("--rounds", type=int, default=30, help="mute/unmute rounds across the two nodes")
    ap.add_argument("--poll-ms", type=float, default=2.0, help="pause between the viewer's comments while waiting")
    ap.add_argument("--redis-url", default=os.environ.get("LC_REDIS_URL", "redis://127.0.0.1:6379/0"))
    sys.exit(asyncio.run(main(ap.parse_args())))
