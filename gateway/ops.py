"""Ops dashboard data and alerting: what is live now, how fast, how much money, what is wrong.

Data sources, all shared by every gateway so any node answers for the whole cluster
(Redis through :class:`~livecommerce.ops_redis.OpsRedis`):

* **Activity counters** (per node, cumulative): comments (a comment hook) and gifts (a
  gift hook) counted on the node that accepted them, error frames and commands from
  ``gw.metrics``, HTTP responses and 5xx (a response hook). Once a second each node writes
  its totals to the hash ``lc:ops:nodes`` (field = node id) and marks its rooms in the
  sorted set ``lc:ops:rooms`` (score = last seen). A reader turns successive totals of each
  node into per-second rates (:class:`~livecommerce.alerts.ClusterRates`), so nodes need no
  common clock tick.
* **Online** from the :class:`~livecommerce.presence.Presence` port, **room state** from the
  rooms' meta hashes.
* **Commerce** (every :data:`COMMERCE_EVERY_S` seconds, one node per interval by a Redis
  lock; the others read its snapshot ``lc:ops:commerce``): recent campaigns from SQL, each
  with its Redis stock figures (``checkout.sales.stats``) and SQL order totals
  (``store.sale_stats``), so orders by state, GMV, buyers, stock drift between Redis and SQL,
  and payment time-outs (orders cancelled at or after their ``pay_by_ms``) in the last
  minute.

Cost per node: one pipelined Redis write and one cluster reading (a few Redis calls) per
second; the SQL queries run on one node of the cluster per interval. So the charts have
history from the moment the gateways start, whether or not anyone has the page open.

Alerts: the pure rules of :mod:`livecommerce.alerts` (``online_drop``, ``error_rate``,
``stock_drift``, ``payment_timeouts``: a metric outside its normal band; the table is
there), judged on every reading; this module writes their verdicts out.

Prometheus (``gw.metrics.registry``): ``lc_alert_active{alert}`` (0/1),
``lc_alert_value{alert}``, ``lc_alert_threshold{alert}``, and ``lc_ops_*`` gauges; see
``docs/alerting-rules.yml``.

HTTP (ops role): ``GET /api/v1/ops/overview``, ``GET /api/v1/ops/series?since=<ms>&range_s=<s>``
(the charts' time range: 600, the default, is the one-second samples; 3600, 21600 and 86400
are folded into coarser steps by :mod:`livecommerce.ops_ranges`),
``GET /api/v1/ops/alerts``, ``GET /api/v1/ops/inventory/{sale}`` (per-order Redis vs SQL
report: ``workers.inventory.reconcile`` in report mode).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import Counter, Gauge

from livecommerce import showreport_sql
from livecommerce.alerts import (
    ALERTS,
    Alerts,
    ClusterRates,
    SaleCheck,
    SaleRoom,
    Sample,
    Verdict,
)
from livecommerce.auth import Identity
from livecommerce.checkout import Checkout
from livecommerce.errors import Forbidden, LiveCommerceError, NotFound
from livecommerce.ops_ranges import (
    COMMERCE_LAST,
    COMMERCE_PEAK,
    FAST_LAST,
    FAST_PEAK,
    LIVE_RANGE_S,
    range_of,
    rollups,
)
from livecommerce.ops_redis import OpsRedis
from livecommerce.orders import SOLD_STATES
from livecommerce.presence import Presence
from livecommerce.store_sql import SqlStore

from .conn import Conn
from .core import Gateway

log = logging.getLogger("livecommerce.gateway.ops")

COMMERCE_EVERY_S = 3.0
ROOM_RECENT_MS = 15 * 60_000
MAX_ROOMS = 100
MAX_CAMPAIGNS = 50
FAST_KEEP = 900  # one-second samples kept (15 min)
COMMERCE_KEEP = 600  # commerce samples kept (30 min at 3 s)
TIMEOUT_SCAN = 2_000  # newest cancelled orders scanned for time-outs


class Ops:
    """Per-node counters, the cluster readings, the rings the charts draw, the alerts
    (:class:`~livecommerce.alerts.Alerts` judges them); the ops dashboard's HTTP API."""

    def __init__(self, gw: Gateway, redis: OpsRedis, presence: Presence, store: SqlStore | None,
                 checkout: Checkout | None) -> None:
        self.gw = gw  # the clock, node id, metrics, this node's rooms, callers' identities
        self.redis = redis
        self.presence = presence  # viewers online per room, every node's
        self.store = store  # campaigns and orders (None: this node serves no flash sales)
        self.checkout = checkout  # the sales' Redis stock figures
        #: each room's distinct viewers of its current show (the show report's counter); the
        #: funnel's first step. None: the peak online stands in
        self.show_viewers: Callable[[list[str]], Awaitable[dict[str, int]]] | None = None
        self.start_ms = gw.now_ms()
        self.totals: dict[str, list[int]] = {}  # room -> [comments, gifts, gift coins]
        self.room_seen: dict[str, float] = {}
        self.http_requests = 0
        self.http_errors = 0
        self.cluster = ClusterRates()
        self._lock = asyncio.Lock()
        self.fast: deque[dict[str, Any]] = deque(maxlen=FAST_KEEP)
        self.samples: deque[Sample] = deque(maxlen=FAST_KEEP)
        self.commerce: deque[dict[str, Any]] = deque(maxlen=COMMERCE_KEEP)
        # the longer chart ranges (1 h, 6 h, 24 h): the samples folded into coarser steps
        self.fast_ranges = rollups(peak=FAST_PEAK, last=FAST_LAST)
        self.commerce_ranges = rollups(peak=COMMERCE_PEAK, last=COMMERCE_LAST)
        self.latest_rooms: dict[str, dict[str, Any]] = {}
        self.alerts = Alerts()
        self._next_commerce = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        r = gw.metrics.registry
        self.g_active = Gauge("lc_alert_active", "1 while the alert's metric is outside its normal band", ["alert"], registry=r)
        self.g_value = Gauge("lc_alert_value", "The alert's measured value", ["alert"], registry=r)
        self.g_threshold = Gauge("lc_alert_threshold", "The edge of the alert's normal band", ["alert"], registry=r)
        self.g_online = Gauge("lc_ops_online", "Viewers online in the rooms the ops view tracks (cluster)", registry=r)
        self.g_cps = Gauge("lc_ops_comments_per_second", "Comments per second (cluster)", registry=r)
        self.g_gps = Gauge("lc_ops_gifts_per_second", "Gifts per second (cluster)", registry=r)
        self.g_eps = Gauge("lc_ops_errors_per_second", "Error frames + HTTP 5xx per second (cluster)", registry=r)
        self.g_gmv = Gauge("lc_ops_gmv_cents", "Paid order value of the recent campaigns (cents)", registry=r)
        self.g_orders = Gauge("lc_ops_orders", "Orders of the recent campaigns by state", ["state"], registry=r)
        self.g_drift = Gauge("lc_ops_stock_drift_units", "Units that differ between Redis and SQL", registry=r)
        self.g_timeouts = Gauge("lc_ops_payment_timeouts_last_minute", "Orders cancelled by payment time-out in the last minute", registry=r)
        self.c_http = Counter("lc_http_responses_total", "HTTP responses by status class", ["status"], registry=r)
        # one child per status class, looked up once (labels() takes a lock and builds a key:
        # it was 5 % of a join storm's samples, run for every WebSocket handshake)
        self._c_http_by_class = {k: self.c_http.labels(f"{k}xx") for k in range(1, 6)}
        for name in ALERTS:
            self.g_active.labels(name).set(0)

    # ---- counting (hot paths: a dict update)
    def count(self, room: str, i: int, n: int = 1) -> None:
        t = self.totals.get(room)
        if t is None:
            t = self.totals[room] = [0, 0, 0]
        t[i] += n
        self.room_seen[room] = time.monotonic()

    async def on_comment(self, conn: Conn, d: dict[str, Any]) -> None:
        self.count(conn.room, 0)

    async def on_gift(self, room: str, user: str, value: int) -> None:
        self.count(room, 1)
        self.count(room, 2, int(value))

    async def on_response(self, request: web.Request, response: web.StreamResponse) -> None:
        self.http_requests += 1
        child = self._c_http_by_class.get(response.status // 100)
        (child if child is not None else self.c_http.labels(f"{response.status // 100}xx")).inc()
        if response.status >= 500:
            self.http_errors += 1
        room = request.match_info.get("room") if response.status < 400 else None
        if room and request.path.startswith("/api/v1/rooms/"):  # a room run over HTTP only
            self.room_seen[room] = time.monotonic()

    @property
    def drift_grace_s(self) -> float:
        """How long Redis and SQL may disagree before ``stock_drift`` fires."""
        return self.alerts.drift_grace_s

    @drift_grace_s.setter
    def drift_grace_s(self, v: float) -> None:
        self.alerts.drift_grace_s = v

    # ---- the loop
    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="ops-sampler")

    async def stop(self) -> None:
        """Stop the sampler. A flag as well as a cancel: a driver that swallows the
        CancelledError mid-call (seen under load) must not keep the loop, and the
        gateway's shutdown, running forever."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)

    async def _loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(1.0 - (time.time() % 1.0))
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or SQL blip: the next second tries again
                log.warning("ops.sample_failed", extra={"err": repr(exc)})

    async def tick(self, *, force: bool = False) -> None:
        """Write this node's totals, take a cluster reading, and the commerce one every
        COMMERCE_EVERY_S (now with ``force``)."""
        async with self._lock:
            await self.write_node()
            await self.sample_fast()
            if force or time.monotonic() >= self._next_commerce:
                self._next_commerce = time.monotonic() + COMMERCE_EVERY_S
                await self.sample_commerce(force=force)

    def node_totals(self) -> dict[str, Any]:
        m = self.gw.metrics
        now = time.monotonic()
        for room, seen in list(self.room_seen.items()):
            if now - seen > ROOM_RECENT_MS / 1000 and room not in self.gw.hub.rooms:
                del self.room_seen[room]
                self.totals.pop(room, None)  # a reader sees the room vanish: no negative rate
        return {
            "start": self.start_ms,
            "ts": self.gw.now_ms(),
            "conns": int(_sum_samples(m.connections)),
            "errors": int(_sum_samples(m.errors) + self.http_errors),
            "requests": int(_sum_samples(m.commands) + self.http_requests),
            "rooms": {r: list(v) for r, v in self.totals.items()},
        }

    async def write_node(self) -> None:
        now_ms = self.gw.now_ms()
        totals = self.node_totals()
        await self.redis.write_node(self.gw.s.node_id, totals, set(self.gw.hub.rooms) | set(self.room_seen), now_ms)

    async def sample_fast(self) -> None:
        """One cluster-wide reading: rates from every fresh node, online per room."""
        now_ms = self.gw.now_ms()
        reading = self.cluster.read(await self.redis.nodes(), now_ms=now_ms)
        per_room = reading.per_room
        await self.redis.drop_nodes(reading.stale)
        recent = await self.redis.recent_rooms(now_ms - ROOM_RECENT_MS)
        room_ids = sorted(set(recent) | set(per_room))[:MAX_ROOMS]
        online = await self.presence.online(room_ids, now_ms=now_ms)
        zero = [0.0, 0.0, 0.0]
        rooms: dict[str, dict[str, Any]] = {
            r: {"online": online.get(r, 0), "comments_per_s": round(per_room.get(r, zero)[0], 2),
                "gifts_per_s": round(per_room.get(r, zero)[1], 2), "gift_coins_per_s": round(per_room.get(r, zero)[2], 2)}
            for r in room_ids
        }
        self.latest_rooms = rooms
        s = Sample(
            ts_ms=now_ms,
            online=int(sum(v["online"] for v in rooms.values())),
            comments=sum(v[0] for v in per_room.values()),
            gifts=sum(v[1] for v in per_room.values()),
            gift_coins=sum(v[2] for v in per_room.values()),
            errors=reading.errors,
            requests=reading.requests,
        )
        self.samples.append(s)
        top = sorted(rooms, key=lambda r: -rooms[r]["online"])[:8]
        point = {
            "ts": now_ms, "online": s.online, "comments_per_s": round(s.comments, 2), "gifts_per_s": round(s.gifts, 2),
            "gift_coins_per_s": round(s.gift_coins, 2), "errors_per_s": round(s.errors, 3), "requests_per_s": round(s.requests, 2),
            "nodes": reading.nodes, "rooms": {r: rooms[r] for r in top},
        }
        self.fast.append(point)
        for rollup in self.fast_ranges.values():
            rollup.add(point)
        self.g_online.set(s.online)
        self.g_cps.set(s.comments)
        self.g_gps.set(s.gifts)
        self.g_eps.set(s.errors)
        self._record(self.alerts.fast(list(self.samples), now_ms=now_ms))

    async def sample_commerce(self, *, force: bool = False) -> None:
        """Campaign figures: computed by one node per interval (a Redis lock), read by all;
        ``force`` computes them here and now."""
        lock = force or await self.redis.lock_commerce(self.gw.s.node_id, int(COMMERCE_EVERY_S * 1000) - 200)
        if lock:
            snap = await self.compute_commerce()
            await self.redis.put_commerce(snap)
        else:
            got = await self.redis.commerce()
            if got is None:
                return
            snap = got
        if self.commerce and self.commerce[-1]["ts"] == snap["ts"]:
            return
        self.commerce.append(snap)
        for rollup in self.commerce_ranges.values():
            rollup.add(_commerce_point(snap))
        now_ms = self.gw.now_ms()
        checks = [SaleCheck(c["sale_id"], c["reserved"], c["paid"], c["sql"]["reserved"], c["sql"]["paid"], c["conserved"])
                  for c in snap["campaigns"] if "sql" in c]
        sales = [SaleRoom(c["sale_id"], str(c.get("state") or ""), c["room"], str(c.get("room_state") or ""))
                 for c in snap["campaigns"]]
        self._record(self.alerts.commerce(checks, snap["timeouts_last_min"], now_ms=now_ms, sales=sales))
        self.g_gmv.set(snap["totals"]["gmv"])
        for state, n in snap["totals"]["orders"].items():
            self.g_orders.labels(state).set(n)
        self.g_drift.set(sum(c.drift for c in checks))
        self.g_timeouts.set(snap["timeouts_last_min"])

    async def compute_commerce(self) -> dict[str, Any]:
        store, checkout = self.store, self.checkout
        now_ms = self.gw.now_ms()
        campaigns: list[dict[str, Any]] = []
        orders: dict[str, int] = {}
        gmv = 0
        if store is None or checkout is None:
            return {"ts": now_ms, "campaigns": [], "totals": {"gmv": 0, "orders": {}, "buyers": 0, "paid": 0}, "timeouts_last_min": 0, "rooms": {}}
        recs = await store.list_sales(limit=MAX_CAMPAIGNS)
        rooms: dict[str, dict[str, Any]] = {}
        for rec in recs:
            sale = rec.sale
            row: dict[str, Any] = {
                "sale_id": sale.id, "room": sale.room, "product_id": sale.product_id,
                "product_name": rec.product_name, "price": sale.price, "stock": sale.stock,
                "starts_ms": sale.starts_ms, "ends_ms": sale.ends_ms, "state": rec.state,
            }
            try:
                st = await checkout.sales.stats(sale.id)
                row.update(state=st.state, remaining=st.remaining, reserved=st.reserved, paid=st.paid,
                           conserved=st.conserved)
            except LiveCommerceError:
                row.update(remaining=None, reserved=0, paid=0, conserved=True)
            sql = await store.sale_stats(sale.id)
            row["gmv"] = sql.gmv
            row["buyers"] = sql.buyers
            row["orders"] = dict(sql.orders)
            row["sql"] = {"reserved": sql.reserved_units, "paid": sql.paid_units}
            if row["remaining"] is None:
                del row["sql"]  # Redis forgot the sale (expired keys): nothing to compare
            row["drift_units"] = (abs(row["paid"] - sql.paid_units) + abs(row["reserved"] - sql.reserved_units)) if "sql" in row else 0
            campaigns.append(row)
            gmv += sql.gmv
            for state, n in sql.orders.items():
                orders[state] = orders.get(state, 0) + n
            agg = rooms.setdefault(sale.room, {"gmv": 0, "orders": {}, "buyers": 0, "paid": 0})
            agg["gmv"] += sql.gmv
            agg["buyers"] += sql.buyers
            agg["paid"] += sum(sql.orders.get(s, 0) for s in SOLD_STATES)
            for state, n in sql.orders.items():
                agg["orders"][state] = agg["orders"].get(state, 0) + n
        # the show state of each room with an open sale (an alert: a sale open in an ended show)
        metas = await self.redis.room_meta(sorted(rooms))
        for c in campaigns:
            if c.get("state") in ("live", "sold_out") and c["room"] in metas:
                c["room_state"] = (metas.get(c["room"]) or {}).get("state", "")
        # the funnel counts distinct users over the room's current show, as its viewers are:
        # who ordered, who paid (a sum over sales counted a user once per sale, and orders)
        for room, agg in rooms.items():
            live_ms = int((metas.get(room) or {}).get("live_ms") or 0)
            agg["buyers"], agg["paid"] = await showreport_sql.show_funnel(store, room, live_ms, now_ms)
        cancelled = await store.list_orders(state="cancelled", limit=TIMEOUT_SCAN)
        timeouts = sum(1 for o in cancelled if o.updated_ms >= o.pay_by_ms and now_ms - o.updated_ms <= 60_000)
        paid = sum(orders.get(s, 0) for s in SOLD_STATES)
        buyers = sum(r["buyers"] for r in rooms.values())
        return {
            "ts": now_ms,
            "campaigns": campaigns,
            "rooms": rooms,
            "totals": {"gmv": gmv, "orders": orders, "buyers": buyers, "paid": paid},
            "timeouts_last_min": timeouts,
        }

    def _record(self, verdicts: list[Verdict]) -> None:
        """Write the verdicts to the gauges; log an alert that just fired."""
        for v in verdicts:
            f = v.finding
            if v.fired:
                log.warning("ops.alert", extra={"alert": f.alert, "value": f.value, "threshold": f.threshold, "detail": f.message})
            self.g_active.labels(f.alert).set(1 if f.active else 0)
            self.g_value.labels(f.alert).set(f.value)
            self.g_threshold.labels(f.alert).set(f.threshold)

    # ---- views
    async def overview(self) -> dict[str, Any]:
        last = self.fast[-1] if self.fast else None
        com = self.commerce[-1] if self.commerce else None
        rooms_meta = await self.redis.room_meta(list(self.latest_rooms))
        distinct = await self.show_viewers(list(self.latest_rooms)) if self.show_viewers is not None else {}
        rooms = []
        for room, live in self.latest_rooms.items():
            meta = rooms_meta.get(room) or {}
            c = (com or {}).get("rooms", {}).get(room, {"gmv": 0, "orders": {}, "buyers": 0, "paid": 0})
            # distinct viewers of the show (who came), never fewer than are watching now
            viewers = max(live["online"], distinct.get(room, 0)) if room in distinct else max(live["online"], int(meta.get("peak_online") or 0))
            # the show's peak: written once a second by every node (rooms_tick.lua), so a reading
            # taken between two writes never shows fewer than are watching now; a room not live
            # shows its last show's peak (0: never live), which its viewers now may exceed
            peak = int(meta.get("peak_online") or 0)
            rooms.append({
                "room": room, "title": meta.get("title", ""), "host": meta.get("host", ""), "state": meta.get("state", "unknown"),
                **live, "peak_online": max(peak, live["online"]) if meta.get("state") == "live" else peak,
                "gmv": c["gmv"], "orders": c["orders"],
                "funnel": {"viewers": viewers, "buyers": c["buyers"], "paid": c["paid"]},
            })
        rooms.sort(key=lambda r: (r["state"] != "live", -r["online"], r["room"]))
        totals_c = (com or {}).get("totals", {"gmv": 0, "orders": {}, "buyers": 0, "paid": 0})
        return {
            "ts": self.gw.now_ms(),
            "node": self.gw.s.node_id,
            "sampling": bool(last),
            "nodes": last["nodes"] if last else 0,
            "totals": {
                "online": last["online"] if last else 0,
                "comments_per_s": last["comments_per_s"] if last else 0,
                "gifts_per_s": last["gifts_per_s"] if last else 0,
                "gift_coins_per_s": last["gift_coins_per_s"] if last else 0,
                "errors_per_s": last["errors_per_s"] if last else 0,
                "requests_per_s": last["requests_per_s"] if last else 0,
                "gmv": totals_c["gmv"],
                "orders": totals_c["orders"],
                # each room's distinct users, summed over the rooms (someone in two shows counts twice)
                "funnel": {step: sum(r["funnel"][step] for r in rooms) for step in ("viewers", "buyers", "paid")},
                "timeouts_last_min": (com or {}).get("timeouts_last_min", 0),
            },
            "rooms": rooms,
            "campaigns": (com or {}).get("campaigns", []),
            "commerce_ts": (com or {}).get("ts"),
            "alerts": self.alerts.as_list(),
        }

    def series(self, since_ms: int, range_s: int = LIVE_RANGE_S) -> dict[str, Any]:
        """The charts' points after ``since_ms``: the one-second samples for the live range,
        else the range's buckets (``step_ms`` apart, each stamped with its start; the last one
        still filling) within the range."""
        if range_s == LIVE_RANGE_S:
            return {"range_s": range_s, "step_ms": 1000,
                    "fast": [x for x in self.fast if x["ts"] > since_ms],
                    "commerce": [_commerce_point(c) for c in self.commerce if c["ts"] > since_ms]}
        since_ms = max(since_ms, self.gw.now_ms() - range_s * 1000)
        fast = self.fast_ranges[range_s]
        return {"range_s": range_s, "step_ms": fast.step_ms, "fast": fast.points(since_ms),
                "commerce": self.commerce_ranges[range_s].points(since_ms)}

    # ---- HTTP (gateway.routes)
    def _require_ops(self, request: web.Request) -> Identity:
        """Raises:
        Unauthorized: no or bad token. Forbidden: not the ops role.
        """
        ident = self.gw.identify_request(request)
        if not ident.is_ops:
            raise Forbidden("the ops dashboard needs an ops token")
        return ident

    async def _wanted(self, request: web.Request) -> None:
        self._require_ops(request)
        if not self.commerce:  # a node that just started: take a reading now
            try:
                await self.tick(force=True)
            except Exception as exc:
                log.warning("ops.sample_failed", extra={"err": repr(exc)})

    async def get_overview(self, request: web.Request) -> web.Response:
        await self._wanted(request)
        return web.json_response(await self.overview())

    async def get_series(self, request: web.Request) -> web.Response:
        await self._wanted(request)
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            since = 0
        return web.json_response(self.series(since, range_of(request.query.get("range_s"))))

    async def get_alerts(self, request: web.Request) -> web.Response:
        await self._wanted(request)
        return web.json_response({"alerts": self.alerts.as_list()})

    async def get_inventory(self, request: web.Request) -> web.Response:
        self._require_ops(request)
        from workers.inventory import reconcile

        if self.store is None or self.checkout is None:
            raise NotFound("flash sales are not served by this gateway")
        report = await reconcile(self.checkout, self.store, request.match_info["sale"], repair=False, now_ms=self.gw.now_ms())
        return web.json_response(dataclasses.asdict(report))


def _sum_samples(metric: Any) -> float:
    total = 0.0
    for fam in metric.collect():
        for s in fam.samples:
            if not s.name.endswith("_created"):
                total += s.value
    return total


def _commerce_point(c: dict[str, Any]) -> dict[str, Any]:
    """A commerce snapshot as the charts draw it."""
    return {"ts": c["ts"], "gmv": c["totals"]["gmv"], "orders": c["totals"]["orders"], "paid": c["totals"]["paid"],
            "buyers": c["totals"]["buyers"], "timeouts_last_min": c["timeouts_last_min"],
            "remaining": {x["sale_id"]: x["remaining"] for x in c["campaigns"] if x.get("remaining") is not None}}
