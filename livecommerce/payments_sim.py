"""A simulated payment provider that behaves like real ones, as an HTTP service (aiohttp).

Dev and tests run it on its own port: ``livecommerce dev --payments-sim`` starts it beside the
gateway and wires both (a fresh webhook secret), tests call :func:`start_sim`, and
``python -m livecommerce.payments_sim --port P --webhook URL --secret S`` serves it alone. It holds payment intents and refunds in memory and calls the gateway's webhook
with signed callbacks (:func:`livecommerce.payments.sign_header`):

* ``POST /v1/payment_intents {order_id, amount, currency}`` (``Idempotency-Key``): an intent
  ``{id, client_secret, status: requires_confirmation, confirm_url, ...}``; the same key
  answers the same intent.
* ``POST /v1/payment_intents/{id}/confirm {client_secret, outcome?}``: the buyer's step.
  ``outcome`` ``succeed`` (default) or ``fail`` (a declined card: ``payment.failed``, the
  intent may be confirmed again; its ``last_payment_error`` says why until a success). A
  confirm of a succeeded intent answers it unchanged. This is the provider's client API: a
  page calls it from the browser, so it answers CORS (any origin; the client secret is the
  credential, no cookies), its preflight included.
* ``POST /v1/refunds {intent_id, amount, reason}`` (``Idempotency-Key``): refund to the
  original method; ``refund.succeeded`` is called back.
* ``GET /v1/payment_intents/{id}``: the intent with its refunds.
* ``GET /_sim/deliveries``: every delivery attempt (event id, type, HTTP status or error);
  ``POST /_sim/release {order: forward|reverse}``: deliver the callbacks held so far.

Delivery (:class:`SimConfig`): each event is delivered ``1 + duplicates`` times; a delivery
that fails (connection error or a non-2xx answer) is retried up to ``max_attempts`` with
``retry_delay_s`` between tries, as real providers retry; ``hold`` keeps events until
``/_sim/release``, which delivers them one after the other in the given order (``reverse``:
out of order), each with its duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from .payments import (
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    REFUND_SUCCEEDED,
    SIGNATURE_HEADER,
    CallbackEvent,
    IntentState,
    IntentStep,
    intent_step,
    sign_header,
)


@dataclass
class SimConfig:
    webhook_url: str
    secret: str
    duplicates: int = 0  # extra copies of each delivery
    hold: bool = False  # keep callbacks until /_sim/release
    max_attempts: int = 8
    retry_delay_s: float = 0.2
    timeout_s: float = 10.0


@dataclass
class SimIntent:
    id: str
    order_id: str
    amount: int
    currency: str
    client_secret: str
    status: IntentState = "requires_confirmation"
    refunded: int = 0
    refunds: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    last_payment_error: dict[str, str] | None = None  # the last declined attempt (cleared by a success)


class SimProvider:
    """The provider's state and its delivery loop."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.intents: dict[str, SimIntent] = {}
        self.keys: dict[str, Any] = {}  # idempotency key -> intent id / refund
        self.held: list[CallbackEvent] = []
        self.deliveries: list[dict[str, Any]] = []
        self.base_url = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: ClientSession | None = None
        self._seq = 0

    # ---- state changes
    def create(self, order_id: str, amount: int, currency: str, key: str) -> SimIntent:
        if key in self.keys:
            return self.intents[self.keys[key]]
        it = SimIntent(id=f"pi_{secrets.token_hex(8)}", order_id=order_id, amount=amount, currency=currency,
                       client_secret=f"cs_{secrets.token_hex(12)}")
        self.intents[it.id] = it
        self.keys[key] = it.id
        return it

    def _event(self, it: SimIntent, type_: str, amount: int, refund_id: str | None = None) -> CallbackEvent:
        self._seq += 1
        ev = CallbackEvent(id=f"evt_{secrets.token_hex(8)}", type=type_, created=int(time.time()), intent_id=it.id,
                           order_id=it.order_id, amount=amount, currency=it.currency, refund_id=refund_id)
        it.events.append(ev.id)
        return ev

    def confirm(self, it: SimIntent, outcome: str) -> None:
        if it.status != "requires_confirmation":
            return  # confirmed already: the same answer, no new event
        step: IntentStep = "succeed" if outcome == "succeed" else "fail"
        it.status = intent_step(it.status, step)
        it.last_payment_error = None if step == "succeed" else {"code": "card_declined", "message": "the card was declined"}
        self.emit(self._event(it, PAYMENT_SUCCEEDED if step == "succeed" else PAYMENT_FAILED, it.amount))

    def refund(self, it: SimIntent, amount: int, reason: str, key: str) -> dict[str, Any]:
        if key in self.keys:
            return dict(self.keys[key])
        if it.status not in ("succeeded", "refunded") or amount <= 0 or it.refunded + amount > it.amount:
            raise web.HTTPBadRequest(text=json.dumps({"error": {"code": "refund_refused",
                                                               "message": f"intent {it.id} is {it.status}, refunded {it.refunded}"}}),
                                     content_type="application/json")
        r = {"id": f"re_{secrets.token_hex(8)}", "intent_id": it.id, "amount": amount, "reason": reason, "status": "succeeded"}
        it.refunded += amount
        it.refunds.append(r)
        if it.refunded == it.amount:
            it.status = intent_step(it.status, "refund")
        self.keys[key] = r
        self.emit(self._event(it, REFUND_SUCCEEDED, amount, refund_id=str(r["id"])))
        return dict(r)

    # ---- delivery
    def emit(self, ev: CallbackEvent) -> None:
        if self.cfg.hold:
            self.held.append(ev)
            return
        for _ in range(1 + self.cfg.duplicates):
            self._spawn(ev)

    def release(self, order: str) -> int:
        held, self.held = self.held, []
        if order == "reverse":
            held.reverse()
        self._track(self._deliver_in_turn([ev for ev in held for _ in range(1 + self.cfg.duplicates)]))
        return len(held)

    async def _deliver_in_turn(self, events: list[CallbackEvent]) -> None:
        for ev in events:  # one after the other: the order given is the order the gateway sees
            await self._deliver(ev)

    def _spawn(self, ev: CallbackEvent) -> None:
        self._track(self._deliver(ev))

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _deliver(self, ev: CallbackEvent) -> None:
        body = ev.body()
        assert self._http is not None
        for attempt in range(1, self.cfg.max_attempts + 1):
            header = sign_header(self.cfg.secret, int(time.time()), body)  # signed afresh per attempt
            rec: dict[str, Any] = {"event_id": ev.id, "type": ev.type, "intent_id": ev.intent_id, "attempt": attempt}
            try:
                async with self._http.post(self.cfg.webhook_url, data=body, headers={SIGNATURE_HEADER: header,
                                                                                      "Content-Type": "application/json"}) as r:
                    rec["status"] = r.status
                    await r.read()
            except (TimeoutError, ClientError, OSError) as exc:
                rec["error"] = type(exc).__name__
            self.deliveries.append(rec)
            if 200 <= int(rec.get("status", 0)) < 300:
                return
            await asyncio.sleep(self.cfg.retry_delay_s)

    async def start(self) -> None:
        self._http = ClientSession(timeout=ClientTimeout(total=self.cfg.timeout_s))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    async def settled(self) -> None:
        """Wait until no delivery is in flight."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


SIM_KEY = web.AppKey("sim", SimProvider)


def _err(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        d = await request.json()
    except ValueError:
        d = None
    if not isinstance(d, dict):
        raise web.HTTPBadRequest(text='{"error":{"code":"invalid","message":"body must be a JSON object"}}', content_type="application/json")
    return d


def _intent_json(sim: SimProvider, it: SimIntent) -> dict[str, Any]:
    d = asdict(it)
    d["confirm_url"] = f"{sim.base_url}/v1/payment_intents/{it.id}/confirm"
    return d


async def create_intent(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    d = await _body(request)
    key = request.headers.get("Idempotency-Key") or secrets.token_hex(8)
    amount = d.get("amount")
    if not isinstance(d.get("order_id"), str) or isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        return _err(400, "invalid", "order_id (string) and amount (positive integer cents) are required")
    it = sim.create(d["order_id"], amount, str(d.get("currency") or "CNY"), key)
    return web.json_response(_intent_json(sim, it))


CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600"}


@web.middleware
async def cors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """CORS on the client API (an intent's confirm, its client secret the credential): a
    page's browser calls it; the server-side routes (create, read, refunds, ``/_sim``) get none."""
    client = request.path.startswith("/v1/payment_intents/") and request.path.endswith("/confirm")
    if client and request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS)
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        resp = e
    if client:
        resp.headers.update(CORS)
    if isinstance(resp, web.HTTPException):
        raise resp
    return resp


def _intent(request: web.Request) -> SimIntent:
    it = request.app[SIM_KEY].intents.get(request.match_info["intent"])
    if it is None:
        raise web.HTTPNotFound(text='{"error":{"code":"not_found","message":"no such intent"}}', content_type="application/json")
    return it


async def confirm_intent(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    it = _intent(request)
    d = await _body(request)
    if d.get("client_secret") != it.client_secret:
        return _err(401, "bad_client_secret", "the client secret does not match this intent")
    outcome = d.get("outcome", "succeed")
    if outcome not in ("succeed", "fail"):
        return _err(400, "invalid", "outcome must be succeed or fail")
    sim.confirm(it, outcome)
    return web.json_response(_intent_json(sim, it))


async def get_intent(request: web.Request) -> web.Response:
    return web.json_response(_intent_json(request.app[SIM_KEY], _intent(request)))


async def create_refund(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    d = await _body(request)
    it = sim.intents.get(str(d.get("intent_id")))
    if it is None:
        return _err(404, "not_found", "no such intent")
    amount = d.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int):
        return _err(400, "invalid", "amount must be integer cents")
    key = request.headers.get("Idempotency-Key") or secrets.token_hex(8)
    return web.json_response(sim.refund(it, amount, str(d.get("reason") or ""), key))


async def deliveries(request: web.Request) -> web.Response:
    return web.json_response({"deliveries": request.app[SIM_KEY].deliveries})


async def release(request: web.Request) -> web.Response:
    d = await _body(request)
    return web.json_response({"released": request.app[SIM_KEY].release(str(d.get("order") or "forward"))})


def build_sim_app(cfg: SimConfig) -> web.Application:
    app = web.Application(middlewares=[cors])
    sim = SimProvider(cfg)
    app[SIM_KEY] = sim
    app.router.add_post("/v1/payment_intents", create_intent)
    app.router.add_get("/v1/payment_intents/{intent}", get_intent)
    app.router.add_post("/v1/payment_intents/{intent}/confirm", confirm_intent)
    app.router.add_post("/v1/refunds", create_refund)
    app.router.add_get("/_sim/deliveries", deliveries)
    app.router.add_post("/_sim/release", release)

    async def on_startup(_: web.Application) -> None:
        await sim.start()

    async def on_cleanup(_: web.Application) -> None:
        await sim.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def start_sim(cfg: SimConfig, *, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, SimProvider]:
    """Serve a simulator; ``(runner, provider)`` (``provider.base_url`` is its URL). The
    caller ends it with ``await runner.cleanup()``."""
    app = build_sim_app(cfg)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sim = app[SIM_KEY]
    sim.base_url = f"http://{host}:{bound}"
    return runner, sim


def main() -> None:  # pragma: no cover - a dev entry point
    ap = argparse.ArgumentParser(description="the simulated payment provider")
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--webhook", required=True, help="the gateway's webhook URL")
    ap.add_argument("--secret", required=True, help="the webhook secret (LC_PAYMENT_WEBHOOK_SECRET)")
    ap.add_argument("--duplicates", type=int, default=0)
    a = ap.parse_args()
    app = build_sim_app(SimConfig(webhook_url=a.webhook, secret=a.secret, duplicates=a.duplicates))
    app[SIM_KEY].base_url = f"http://127.0.0.1:{a.port}"
    web.run_app(app, host="127.0.0.1", port=a.port)


if __name__ == "__main__":  # pragma: no cover
    main()
