"""Which project files a bullet comment, a buy and a gift cross, and where the code turns back.

Runs one gateway node in this process (real Redis at ``--redis``, SQLite in a temporary
directory), creates the show's room as its host would, connects two WebSocket viewers and sends, one at a time, a ``comment``, a ``buy``
(into a live flash sale) and a ``gift`` (after an ops top-up). While each travels, a profiler
records every function of ``gateway/`` and ``livecommerce/`` that runs beneath one of the
path's roots: the sender's frame dispatch (``gateway/ws.py`` ``handle_frame``, and
the connection's answer writer ``_write_answers`` for a pipelined command), the tasks a command's work is
handed to (a sale's group commit ``Checkout._commit_loop``, a gift batch ``GiftBatcher._run``),
the broker's reader handing the room message to the hub (``_on_message``) and the hub's flush
of the room to the sockets (``flush``). Other background work (the once-a-second loop, tick
callbacks, other spawned tasks) is not counted; Lua runs inside Redis and is not counted. A
turn is seen within one task's stack: a hand-over to a task is a call into it, not a return.

For each path it prints the files crossed, in the order first entered, and the **A->B->A
turns**: pairs of files where a function of A calls (directly or through others) into B which
calls back into A, seen on the real call stacks (e.g. ``checkout -> flash_sale_redis ->
checkout``). Run it on two checkouts to compare (``--root`` points at the checkout; the
script imports the code from there)::

    python scripts/trace_paths.py --root .
    git worktree add /tmp/lc-before 8c6d799 && python scripts/trace_paths.py --root /tmp/lc-before
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
from collections.abc import Iterator
from typing import Any


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Prints one JSON object per path; --verbose lists the functions per file.")
    p.add_argument("--root", default=".", help="the checkout whose code is traced (default: .)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (a unique key prefix is used)")
    p.add_argument("--verbose", action="store_true", help="list the functions seen in each file")
    return p.parse_args()


# a buy's Redis and log work runs in its sale's group-commit task (``Checkout._commit_loop``),
# counted as part of the buy's path
ROOTS = {("gateway/ws.py", "handle_frame"), ("gateway/hub.py", "_on_message"), ("gateway/hub.py", "flush"),
         # the tasks a command's work continues in: a pipelined command (its own task per
         # frame), a sale's group commit and a gift batch (one task per batch, several commands)
         ("gateway/ws.py", "_pipelined"), ("gateway/ws.py", "_write_answers"), ("livecommerce/checkout.py", "_commit_loop"),
         ("gateway/gifts.py", "_run")}


class Tracer:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root) + "/"
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []  # (file, function, file stack above it)

    def rel(self, code: Any) -> str | None:
        f = code.co_filename
        if f.startswith(self.root) and ("/gateway/" in f or "/livecommerce/" in f):
            return str(f[len(self.root):])
        return None

    def _stack(self, frame: Any) -> Iterator[tuple[str, str]]:
        while frame is not None:
            r = self.rel(frame.f_code)
            if r is not None:
                yield r, frame.f_code.co_name
            frame = frame.f_back

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        r = self.rel(frame.f_code)
        if r is None:
            return
        stack = list(self._stack(frame))
        if not any(s in ROOTS for s in stack):
            return
        files = []
        for f, _ in reversed(stack):  # outermost first, consecutive duplicates collapsed
            if not files or files[-1] != f:
                files.append(f)
        self.calls.append((r, frame.f_code.co_qualname, tuple(files)))

    def report(self, name: str, verbose: bool) -> dict[str, Any]:
        files: list[str] = []
        for f, _, _ in self.calls:
            if f not in files:
                files.append(f)
        turns: set[tuple[str, str]] = set()
        for _, _, chain in self.calls:
            for i, a in enumerate(chain):
                for j in range(i + 1, len(chain)):
                    if chain[j] == a and j > i + 1:
                        turns.add((a, chain[i + 1]))
                        break
        out: dict[str, Any] = {"path": name, "files": len(files), "turns": len(turns), "file_list": files,
                               "turn_list": sorted(f"{a} -> {b} -> {a}" for a, b in turns)}
        if verbose:
            out["functions"] = {f: sorted({q for ff, q, _ in self.calls if ff == f}) for f in files}
        self.calls.clear()
        return out


async def main(args: argparse.Namespace) -> None:
    import aiohttp
    from aiohttp import web

    from gateway.app import build_app
    from livecommerce.auth import issue_token
    from livecommerce.config import Settings
    from livecommerce.migrations import upgrade
    from tests.wsclient import Client

    tmp = tempfile.mkdtemp()
    over: dict[str, Any] = dict(redis_url=args.redis, key_prefix=f"tr{uuid.uuid4().hex[:8]}", node_id="trace", data_dir=tmp,
                                database_url=f"sqlite+aiosqlite:///{tmp}/lc.db", log_json=False,
                                secret=f"trace-secret-{uuid.uuid4().hex}")
    try:
        s = Settings.from_env({}, **over, test_coins=True)
    except TypeError:  # a checkout from before LC_TEST_COINS
        s = Settings.from_env({}, **over)
    await upgrade(s.database_url)
    app = build_app(s)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"

    def tok(user: str, role: str = "viewer", rooms: tuple[str, ...] = ()) -> str:
        return issue_token(s.secret, user=user, role=role, rooms=rooms, now_s=int(time.time()), ttl_s=3600)

    ops = {"Authorization": f"Bearer {tok('ops1', 'ops')}"}
    sale = f"s{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        # a show's room exists before its viewers come: created by its host, as in every show
        host = {"Authorization": f"Bearer {tok('h1', 'host', ('trace',))}"}
        r = await http.post(f"{base}/api/v1/rooms", headers=host, json={"id": "trace", "title": "trace"})
        assert r.status == 201, await r.text()
        r = await http.post(f"{base}/api/v1/campaigns", headers=ops, json={
            "id": sale, "room": "trace", "product_id": "p1", "price": 100, "stock": 10, "per_user_limit": 2,
            "starts_ms": int(time.time() * 1000) - 1000, "duration_s": 600})
        assert r.status == 201, await r.text()
        r = await http.post(f"{base}/api/v1/wallets/alice/topup", headers=ops, json={"amount": 100, "idempotency_key": "trace"})
        assert r.status in (200, 201), await r.text()
    a = await Client.connect(url, "trace", tok("alice"))
    b = await Client.connect(url, "trace", tok("bob"))
    await asyncio.sleep(2.5)  # online counts and the sale's view settle
    tracer = Tracer(args.root)

    async def quiet() -> None:
        for c in (a, b):
            c.buf.clear()
            while True:
                try:
                    await c.next_frame(0.3)
                except TimeoutError:
                    break

    async def seen(c: Any, t: str) -> None:
        while True:
            e = await c.next_frame(5)
            items = e.get("items", [e]) if e.get("t") == "batch" else [e]
            if any(i.get("t") == t for i in items):
                return

    async def run(name: str, t: str, reply: str, broadcast: str | None, **d: Any) -> None:
        await quiet()
        sys.setprofile(tracer.profile)
        await a.send(t, **d)
        await seen(a, reply)  # the sender's answer
        if broadcast:
            await seen(b, broadcast)  # and the room's event at another viewer
        await asyncio.sleep(0.2)  # the tick's flush of the room
        sys.setprofile(None)
        print(json.dumps(tracer.report(name, args.verbose)))

    await run("comment", "comment", "ack", "comment", text="hello")
    await run("buy", "buy", "order.reserved", None, sale_id=sale, qty=1, request_id="trace-1")
    await run("gift", "gift", "ack", "gift", gift_id="rose", count=1)
    await a.close()
    await b.close()
    await runner.cleanup()


if __name__ == "__main__":
    ns = parse_args()
    sys.path.insert(0, os.path.abspath(ns.root))  # trace that checkout's code
    asyncio.run(main(ns))
