"""Locust users for livecommerce, speaking the real WebSocket wire contract.

Run (against ``livecommerce dev``; see loadtests/README.md)::

    locust -f loadtests/locustfile.py --headless -u 200 -r 50 -t 30s \\
        --host http://127.0.0.1:8080 --html reports/locust.html --csv reports/locust

Users (each with its own token, minted here with ``LC_SECRET``):

* ``Viewer``: joins the room, receives, now and then comments and likes;
* ``GiftSender``: a viewer who sends gifts (``gift {gift_id, count, combo_id}``);
* ``FlashSaleRusher``: waits for ``sale.started`` and sends ``buy`` at once;
* ``LotteryEntrant``: waits for ``lottery.started`` and enters (``lottery.enter``);
* ``Host``: the room's host (one per run): announces over HTTP, pins products, and in the
  sale and lottery scenarios creates and starts flash sales and lotteries.

Scenarios (``LC_SCENARIO``) set which users run and how hard they push:

* ``mixed`` (default): mostly viewers, some gift senders and rushers, one host;
* ``comment_storm``: every viewer comments about once a second (the server allows 2/s
  with a burst of 5 per user: ``rate_limited`` replies are failures);
* ``flash_sale``: rushers; the host starts a sale every ``LC_SALE_EVERY_S`` (default 10 s,
  stock ``LC_SALE_STOCK``, default 50);
* ``gift_rain``: gift senders sending about twice a second each;
* ``lottery``: entrants; the host starts a lottery every ``LC_LOTTERY_EVERY_S`` (default 15 s).

``LC_SHAPE=rush`` adds a load shape (idle room, then every user at once, like a sale going
live; ``LC_SHAPE_USERS``, ``LC_SHAPE_S``); without it ``-u/-r/-t`` drive the run.
Commands the gateway does not serve yet answer ``unknown_type`` and count as failures.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import gevent
import gevent.queue
from locust import HttpUser, LoadTestShape, User, between, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lcws

from livecommerce.client.operations import Call, call

SCENARIO = os.environ.get("LC_SCENARIO", "mixed")
SHAPE = os.environ.get("LC_SHAPE", "")
SALE_AFTER_JUMP_S = float(os.environ.get("LC_SHAPE_SALE_AFTER_S", "2"))
SCENARIOS: dict[str, dict[str, int]] = {
    # user class -> weight; "Host" is a fixed count
    "mixed": {"Viewer": 80, "GiftSender": 10, "FlashSaleRusher": 10, "Host": 1},
    "comment_storm": {"Viewer": 100, "Host": 1},
    "flash_sale": {"FlashSaleRusher": 95, "Viewer": 5, "Host": 1},
    "gift_rain": {"GiftSender": 90, "Viewer": 10, "Host": 1},
    "lottery": {"LotteryEntrant": 95, "Viewer": 5, "Host": 1},
}
if SCENARIO not in SCENARIOS:
    raise SystemExit(f"LC_SCENARIO={SCENARIO!r}: choose one of {', '.join(SCENARIOS)}")
MIX = SCENARIOS[SCENARIO]
ROOM = lcws.ROOM
RUN = secrets.token_hex(3)
_users = itertools.count(1)
GIFTS = ["rose", "heart", "lollipop", "applause"]


def in_scenario(cls: type) -> type:
    """Weights from the scenario table; classes not in it are abstract (not run)."""
    n = MIX.get(cls.__name__)
    if not n:
        cls.abstract = True
    elif cls.__name__ == "Host":
        cls.fixed_count = n
    else:
        cls.weight = n
    return cls


class LiveUser(User):
    """Base: one WebSocket per user, opened on start, closed on stop."""

    abstract = True
    role = "viewer"
    sock: lcws.LiveSocket

    def on_start(self) -> None:
        self.user_id = f"lt{RUN}-{next(_users)}"
        self.token = lcws.mint(self.user_id, self.role)
        self.sock = lcws.LiveSocket(self.environment, self.host, self.token)
        self.setup_handlers()
        if not self.sock.connect():
            gevent.sleep(1.0)  # avoid a hot reconnect loop; the next task reconnects

    def setup_handlers(self) -> None:
        pass

    def ensure(self) -> bool:
        if self.sock.closed.is_set():
            self.sock = lcws.LiveSocket(self.environment, self.host, self.token)
            self.setup_handlers()
            if not self.sock.connect():
                gevent.sleep(1.0)
                return False
        return True

    def on_stop(self) -> None:
        self.sock.close()


@in_scenario
class Viewer(LiveUser):
    """Watches; comments and likes now and then (about once a second in a comment storm)."""

    wait_time = between(0.5, 1.5) if SCENARIO == "comment_storm" else between(3, 10)

    @task(5 if SCENARIO == "comment_storm" else 2)
    def comment(self) -> None:
        if self.ensure():
            self.sock.send("comment", {"text": random.choice(["hello", "nice!", "how much?", "666", "wow", "link?"])})

    @task(3)
    def like(self) -> None:
        if self.ensure():
            self.sock.send("like", {"count": random.randint(1, 5)})

    @task(1)
    def ping(self) -> None:
        if self.ensure():
            self.sock.send("ping")


@in_scenario
class GiftSender(LiveUser):
    """Sends gifts, combos of the same gift now and then."""

    wait_time = between(0.3, 0.7) if SCENARIO == "gift_rain" else between(2, 6)

    def on_start(self) -> None:
        super().on_start()
        # test credit: the user's own simulated payment (idempotent on the key)
        lcws.http_post(self.environment, self.host, "walletsTopup", {"amount": 100_000}, self.token,
                       idempotency_key=f"{self.user_id}-topup", user=self.user_id)

    @task
    def gift(self) -> None:
        if not self.ensure():
            return
        gift = random.choice(GIFTS)
        combo = f"c{secrets.token_hex(4)}" if random.random() < 0.3 else None
        d: dict[str, Any] = {"gift_id": gift, "count": 1}
        if combo:
            d["combo_id"] = combo
        self.sock.send("gift", d)
        if combo:
            for _ in range(random.randint(1, 4)):
                gevent.sleep(0.2)
                self.sock.send("gift", dict(d, count=1), name="gift (combo)")


@in_scenario
class FlashSaleRusher(LiveUser):
    """Waits for ``sale.started`` and buys at once (one request_id per sale, retried once
    with the same id to exercise idempotency)."""

    wait_time = between(0.0, 0.1)
    wait_s = float(os.environ.get("LC_SALE_WAIT_S", "30"))

    def setup_handlers(self) -> None:
        self.started: gevent.queue.Queue[str] = gevent.queue.Queue()
        self.sock.on("sale.started", lambda e: self.started.put((e.get("d") or {}).get("sale_id", "")))
        # a sale already running when we join shows up in the welcome
        self.seen: set[str] = set()

    @task
    def rush(self) -> None:
        if not self.ensure():
            return
        start = time.perf_counter()
        try:
            sale_id = self.started.get(timeout=self.wait_s)
        except gevent.queue.Empty:
            self.environment.events.request.fire(
                request_type="WAIT", name="sale.started", response_time=(time.perf_counter() - start) * 1000,
                response_length=0, exception=TimeoutError(f"no sale.started within {self.wait_s:g}s"), context={},
            )
            return
        if not sale_id or sale_id in self.seen:
            return
        self.seen.add(sale_id)
        rid = f"{self.user_id}-{sale_id}"
        reply = self.sock.send("buy", {"sale_id": sale_id, "qty": 1, "request_id": rid})
        if reply is not None and reply.get("t") == "order.reserved":
            first = (reply.get("d") or {}).get("order_id", "")
            lcws.LEDGER.reserved(sale_id, first, self.user_id)
            again = self.sock.send("buy", {"sale_id": sale_id, "qty": 1, "request_id": rid}, name="buy (retry, same request_id)")
            if again is not None:
                second = (again.get("d") or {}).get("order_id") if again.get("t") == "order.reserved" else None
                if second != first:
                    lcws.LEDGER.violation(f"sale {sale_id}: the retry of {rid} answered {again.get('t')} "
                                          f"{second or (again.get('d') or {}).get('code')}, not order {first}")


@in_scenario
class LotteryEntrant(LiveUser):
    """Waits for ``lottery.started`` and enters."""

    wait_time = between(0.0, 0.2)

    def setup_handlers(self) -> None:
        self.started: gevent.queue.Queue[str] = gevent.queue.Queue()
        self.sock.on("lottery.started", lambda e: self.started.put((e.get("d") or {}).get("id", "")))

    @task
    def enter(self) -> None:
        if not self.ensure():
            return
        try:
            lid = self.started.get(timeout=30)
        except gevent.queue.Empty:
            return
        if lid:
            gevent.sleep(random.random() * 0.5)
            self.sock.send("lottery.enter", {"lottery_id": lid})


@in_scenario
class Host(HttpUser):
    """The room's host: announcements over HTTP, pins over the WebSocket, and in the sale
    and lottery scenarios the sales and lotteries the other users react to."""

    wait_time = between(1, 3)
    sale_every = float(os.environ.get("LC_SALE_EVERY_S", "10"))
    lottery_every = float(os.environ.get("LC_LOTTERY_EVERY_S", "15"))

    def on_start(self) -> None:
        self.user_id = f"host-{RUN}"
        self.token = lcws.mint(self.user_id, "host", rooms=(ROOM,))
        self.auth = {"Authorization": f"Bearer {self.token}"}
        self.sock = lcws.LiveSocket(self.environment, self.host, self.token)
        self.sock.connect()
        self.last_sale = 0.0
        self.last_lottery = 0.0
        # the room, its products and going live: "already there" (409) is fine
        self._post(call("roomsCreate", body={"id": ROOM, "title": "Load test room"}), ok=(409,))
        for i in range(1, 6):
            self._post(call("catalogCreate", body={"id": f"p{i}", "name": f"Load test item {i}", "price": 100 * i}), ok=(409,))
        self._post(call("roomsLive", body={}, room=ROOM), ok=(409,))
        # sales and lotteries run on the clock, not as weighted tasks: one every LC_SALE_EVERY_S
        # (LC_LOTTERY_EVERY_S), whatever else the host is doing
        self.schedule = gevent.spawn(self._on_the_clock)

    def _on_the_clock(self) -> None:
        while True:
            self.sale()
            self.lottery()
            gevent.sleep(0.25)

    def _post(self, c: Call, ok: tuple[int, ...] = ()) -> Any:
        """One operation (``livecommerce.client.operations``) through locust's HTTP session,
        its documented path as the row's name."""
        with self.client.request(c.method, c.path, json=c.body, params=dict(c.query), headers={**self.auth, **c.headers},
                                 name=c.name, catch_response=True) as resp:
            if not resp.status_code:  # no answer at all: refused, reset, timed out
                resp.failure(f"no response: {resp.error!r}")
            elif resp.status_code >= 300 and resp.status_code not in ok:
                resp.failure(lcws.failure(resp.status_code, resp.text))
            else:
                resp.success()
            return resp

    def on_stop(self) -> None:
        self.schedule.kill(block=False)
        self.sock.close()

    @task(3)
    def announce(self) -> None:
        self._post(call("commentsAnnounce", body={"text": f"announcement at {time.strftime('%X')}"}, room=ROOM))

    @task(1)
    def pin(self) -> None:
        if not self.sock.closed.is_set():
            self.sock.send("pin", {"product_id": f"p{random.randint(1, 5)}"})

    def sale(self) -> None:
        if SCENARIO not in ("flash_sale", "mixed"):
            return
        if SHAPE == "rush":
            # one sale, opened at the shape's jump, once the jump's users had time to connect
            shape = self.environment.shape_class
            if self.last_sale or shape is None or shape.get_run_time() < RushShape.jump_s() + SALE_AFTER_JUMP_S:
                return
        elif time.monotonic() - self.last_sale < self.sale_every:
            return
        self.last_sale = time.monotonic()
        sale_id = f"s{RUN}-{int(time.time())}"
        now_ms = int(time.time() * 1000)
        stock = int(os.environ.get("LC_SALE_STOCK", "50"))
        resp = self._post(call(
            "salesCreateCampaigns",
            body={"id": sale_id, "room": ROOM, "product_id": "p1", "product_name": "Load test item", "price": 100,
                  "stock": stock, "per_user_limit": 1, "starts_ms": now_ms + 60_000, "duration_s": 120},
        ))
        if 0 < resp.status_code < 300:
            lcws.LEDGER.sale(sale_id, stock)
            if not self.sock.closed.is_set():
                self.sock.send("sale.start", {"sale_id": sale_id})

    def lottery(self) -> None:
        if SCENARIO != "lottery" or time.monotonic() - self.last_lottery < self.lottery_every:
            return
        self.last_lottery = time.monotonic()
        if not self.sock.closed.is_set():
            self.sock.send("lottery.start", {"prize": {"kind": "product", "id": "p1"}, "winners": 3,
                                             "duration_s": 10, "rule": "enter", "title": "load test"})


class RushShape(LoadTestShape):
    """A quiet room, then everyone at once (a sale going live), held, then gone. In the
    ``flash_sale`` and ``mixed`` scenarios the host opens one sale ``LC_SHAPE_SALE_AFTER_S``
    (default 2 s) after the jump."""

    users = int(os.environ.get("LC_SHAPE_USERS", "200"))
    total_s = float(os.environ.get("LC_SHAPE_S", "60"))
    stages: ClassVar[list[tuple[float, int, float]]] = []

    @classmethod
    def jump_s(cls) -> float:
        return cls.total_s * 0.2

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t < self.jump_s():
            return (max(2, self.users // 20), 10.0)
        if t < self.total_s * 0.8:
            return (self.users, float(self.users))  # all at once
        if t < self.total_s:
            return (max(2, self.users // 20), float(self.users))
        return None


if SHAPE != "rush":
    del RushShape  # locust runs a shape class it finds in the file


@events.init.add_listener
def _describe(environment: Any, **_: Any) -> None:
    print(f"livecommerce locust: scenario {SCENARIO} ({', '.join(f'{k}={v}' for k, v in MIX.items())}), room {ROOM}, "
          f"format {lcws.FORMAT}, event sample {lcws.EVENT_SAMPLE:g}", file=sys.stderr)
    from locust.runners import MasterRunner, WorkerRunner

    if isinstance(environment.runner, WorkerRunner):
        environment.events.report_to_master.add_listener(lcws.LEDGER.report)
        return
    if isinstance(environment.runner, MasterRunner):
        environment.events.worker_report.add_listener(lcws.LEDGER.merge)
    if environment.web_ui is not None:
        @environment.web_ui.app.route("/livecommerce")
        def _ledger_page() -> Any:  # what the request table does not show
            return {**lcws.LEDGER.summary(), "events": [
                {"type": e.name, "n": e.num_requests, "p50_ms": e.get_response_time_percentile(0.5),
                 "p99_ms": e.get_response_time_percentile(0.99)} for e in lcws.LEDGER.events.entries.values()]}
    gevent.spawn(_progress, environment)


def _progress(environment: Any) -> None:
    """Every 5 s on the master (or the one process): sockets, drops, gaps, events/s."""
    last_n, last_t = 0, time.monotonic()
    while True:
        gevent.sleep(5)
        n, t = lcws.LEDGER.events.total.num_requests, time.monotonic()
        led = lcws.LEDGER
        print(f"lc: sockets open {led.open}, opened {led.opened}, dropped {led.dropped}, seq gaps {led.seq_gaps}, "
              f"events/s {(n - last_n) / (t - last_t):,.0f}, invariant violations {len(led.violations)}", file=sys.stderr)
        last_n, last_t = n, t


@events.quitting.add_listener
def _report(environment: Any, **_: Any) -> None:
    from locust.runners import WorkerRunner
    from locust.stats import print_stats

    if isinstance(environment.runner, WorkerRunner):
        return
    led = lcws.LEDGER
    print("\nEvent delivery (server ts -> arrival; not in the request table above):", file=sys.stderr)
    print_stats(led.events, current=False)
    summary = led.summary()
    print(f"lc: sockets opened {led.opened}, dropped by the server {led.dropped}, seq gaps {led.seq_gaps}; "
          f"sales {summary['sales']}; invariant violations {len(led.violations)}", file=sys.stderr)
    for v in led.violations:
        print(f"lc: VIOLATED: {v}", file=sys.stderr)
    prefix = getattr(environment.parsed_options, "csv_prefix", None) if environment.parsed_options else None
    if prefix:
        import csv
        import json

        with open(f"{prefix}_events.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["type", "count", "median_ms", "p95_ms", "p99_ms", "max_ms"])
            for e in sorted(led.events.entries.values(), key=lambda e: e.name):
                w.writerow([e.name, e.num_requests, e.median_response_time, e.get_response_time_percentile(0.95),
                            e.get_response_time_percentile(0.99), e.max_response_time])
        with open(f"{prefix}_ledger.json", "w") as f:
            json.dump(summary, f, indent=2)
    if led.violations:
        environment.process_exit_code = 1
