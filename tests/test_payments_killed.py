"""A gateway killed (SIGKILL) between the provider's callback and its answer: the provider's
retry, answered by another gateway, completes the payment exactly once.

Real gateway processes (``livecommerce gateway``), the simulated provider as a real HTTP
service, and a small TCP relay in front of the gateways: the relay forwards the callback to
gateway A and, the moment A's answer starts, kills A with SIGKILL and drops the answer, so
the provider sees its connection die after A did the work, and retries; the relay then
forwards to gateway B. SQL (SQLite and PostgreSQL) ends with the order paid once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import aiohttp

from livecommerce.flash_sale_redis import RedisFlashSale
from livecommerce.migrations import upgrade
from livecommerce.payments_redis import PaymentsRedis
from livecommerce.payments_sim import SimConfig, start_sim
from scripts.chaos_rush import Proc, free_port, gateway_proc, lc_env, token, wait_ready
from workers.orders import OrdersWorker

SECRET = "whsec-kill-" + "0123456789abcdef" * 3


class Relay:
    """Forwards TCP connections to ``upstream``; with ``kill`` set, the first answer bytes
    from upstream kill that process (SIGKILL) and are dropped, and ``upstream`` becomes
    ``then``."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.kill: Proc | None = None
        self.then = upstream
        self.killed = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cw.close()
            return

        async def up() -> None:
            with contextlib.suppress(OSError):
                while data := await cr.read(65536):
                    uw.write(data)
                    await uw.drain()

        async def down() -> None:
            with contextlib.suppress(OSError):
                while data := await ur.read(65536):
                    if self.kill is not None:  # the answer is on its way: the process dies first
                        self.kill.kill9()
                        self.kill, self.upstream = None, self.then
                        self.killed += 1
                        return
                    cw.write(data)
                    await cw.drain()

        t = asyncio.ensure_future(up())
        await down()
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
        for w in (cw, uw):
            w.close()
            with contextlib.suppress(OSError, ConnectionError):
                await w.wait_closed()


async def test_a_gateway_killed_before_answering_a_callback_is_covered_by_the_providers_retry(settings, redis, keys, store_url, tmp_path: Path) -> None:
    await upgrade(store_url)
    runner, sim = await start_sim(SimConfig(webhook_url="http://127.0.0.1:9/unset", secret=SECRET, retry_delay_s=0.1))
    lc = dict(redis_url=settings.redis_url, key_prefix=settings.key_prefix, database_url=store_url, secret=settings.secret,
              log_json="1", payment_provider_url=sim.base_url, payment_webhook_secret=SECRET)
    ports = {"pay-a": free_port(), "pay-b": free_port()}
    gws = {name: gateway_proc(name, port, lc_env(**lc), tmp_path) for name, port in ports.items()}
    relay = Relay(ports["pay-a"])
    try:
        for g in gws.values():
            g.start()
        for name, g in gws.items():
            await wait_ready(f"http://127.0.0.1:{ports[name]}", 60, g)
        await relay.start()
        sim.cfg.webhook_url = f"http://127.0.0.1:{relay.port}/api/v1/payments/webhook"
        a = f"http://127.0.0.1:{ports['pay-a']}"
        sid = f"pk{uuid.uuid4().hex[:6]}"
        buyer = {"Authorization": f"Bearer {token('k1', secret=settings.secret)}"}
        async with aiohttp.ClientSession() as http:
            made = await http.post(a + "/api/v1/campaigns", headers={"Authorization": f"Bearer {token('ops1', 'ops', secret=settings.secret)}"},
                                   json={"id": sid, "room": "kill", "product_id": "p1", "price": 700, "stock": 3,
                                         "per_user_limit": 1, "starts_ms": int(time.time() * 1000) - 1000, "duration_s": 600})
            assert made.status == 201, await made.text()
            r = await http.post(f"{a}/api/v1/sales/{sid}/buy", json={"qty": 1, "request_id": "k1"}, headers=buyer)
            oid = (await r.json())["order_id"]
            it = await (await http.post(f"{a}/api/v1/orders/{oid}/payments", json={}, headers=buyer)).json()
            relay.kill, relay.then = gws["pay-a"], ports["pay-b"]
            c = await http.post(it["confirm_url"], json={"client_secret": it["client_secret"]})
            assert c.status == 200
            await sim.settled()
        assert relay.killed == 1 and not gws["pay-a"].alive()
        attempts = [d for d in sim.deliveries if d["event_id"] == sim.intents[it["intent_id"]].events[0]]
        assert "error" in attempts[0] and attempts[-1].get("status") == 200, attempts  # A died, B answered the retry
        # A paid and died before answering; B met the retry as paid already
        rows = await PaymentsRedis(redis, keys).callbacks(limit=10, offset=0)
        assert [r["outcome"] for r in reversed(rows)] == ["paid", "already_paid"]
        hold = await RedisFlashSale(redis, keys).hold(sid, oid)
        assert hold is not None and hold.state == "paid"
        st = await RedisFlashSale(redis, keys).stats(sid)
        assert (st.remaining, st.reserved, st.paid) == (2, 0, 1)
        worker = OrdersWorker(settings.replace(database_url=store_url), redis=redis)
        try:
            await worker.drain()
            order = await worker.store.get_order(oid)
            hist = await worker.store.order_history(oid)
        finally:
            await worker.close()
        assert order is not None and order.state == "paid" and order.amount == 700
        assert [h.to_state for h in hist] == ["reserved", "paid"]
    finally:
        await relay.close()
        for g in gws.values():
            g.stop()
        await runner.cleanup()
