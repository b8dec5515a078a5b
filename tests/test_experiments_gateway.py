"""Experiments over HTTP on a real gateway: ops-only definitions validated field by field,
one running owner per flag, the life-cycle, flags in ``welcome`` and ``/me/flags``, and
results computed from exposures and conversions that went through the durable log and
the growth worker (conversions before a user's exposure do not count)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from gateway.openapi import document
from livecommerce.experiment_stats import two_proportion_ztest
from livecommerce.experiments import EXPOSURE, Experiment, exposure_data, exposure_event_id
from livecommerce.keys import Keys
from livecommerce.log_open import open_log
from livecommerce.store_sql import SqlStore
from tests.fixtures_gateway import GatewayFactory
from tests.test_openapi import validate
from tests.wsclient import Client
from workers.growth import GrowthWorker
from workers.growth import drain as growth_drain

DOC = document()
BODY = {"id": "cd-1", "description": "countdown style", "holdout": 0.1, "salt": "cd-salt", "variants": [
    {"name": "control", "weight": 1, "flags": {"countdown.style": "digits"}},
    {"name": "bar", "weight": 1, "flags": {"countdown.style": "bar", "coupon.amount": 800}}]}


async def _call(s: aiohttp.ClientSession, method: str, url: str, token: str, **kw: Any) -> tuple[int, Any]:
    async with s.request(method, url, headers={"Authorization": f"Bearer {token}"}, **kw) as r:
        data = await r.json()
        template = next(p for p in DOC["paths"] if re.fullmatch(re.sub(r"{\w+}", "[^/]+", p), r.url.path))
        resp = DOC["paths"][template][method.lower()]["responses"][str(r.status)]
        assert not validate(data, resp["content"]["application/json"]["schema"], DOC), (template, data)
        return r.status, data


async def test_ops_define_experiments_and_read_their_results(
    gateway_factory: GatewayFactory, token: Callable[..., str], redis: aioredis.Redis, keys: Keys
) -> None:
    node = await gateway_factory()
    ops, base = token("boss", "ops"), f"{node.url}/api/v1/experiments"
    async with aiohttp.ClientSession() as s:
        assert (await _call(s, "POST", base, token("v1"), json=BODY))[0] == 403
        st, err = await _call(s, "POST", base, ops, json={**BODY, "holdout": 2})
        assert st == 400 and "'holdout'" in err["error"]["message"]
        st, exp = await _call(s, "POST", base, ops, json=BODY)
        assert st == 201 and exp["split"] == {"holdout": 0.1, "control": 0.45, "bar": 0.45} and exp["state"] == "running"
        assert (await _call(s, "POST", base, ops, json=BODY))[1]["error"]["code"] == "conflict"
        rival = {**BODY, "id": "cd-2"}
        st, err = await _call(s, "POST", base, ops, json=rival)
        assert st == 409 and "countdown.style" in err["error"]["message"]
        st, draft = await _call(s, "POST", base, ops, json={**rival, "start": False})
        assert st == 201 and draft["state"] == "draft"
        assert (await _call(s, "POST", f"{base}/cd-2/start", ops))[0] == 409  # cd-1 owns the flag
        assert len((await _call(s, "GET", base, ops))[1]["experiments"]) == 2

        e = Experiment.from_dict(exp)
        users = [f"u{i}" for i in range(400)]
        arm = {u: e.assign(u) for u in users}
        bar_user = next(u for u in (f"live{i}" for i in range(100)) if e.assign(u) == "bar")
        c = await Client.connect(node.ws, "room1", token(bar_user), fmt="json")
        assert c.welcome["d"]["flags"]["countdown.style"] == "bar" and c.welcome["d"]["flags"]["coupon.amount"] == 800
        assert c.welcome["d"]["experiments"] == {"cd-1": "bar"}
        await c.close()
        st, mine = await _call(s, "GET", f"{node.url}/api/v1/me/flags", token("live-me"))
        assert mine["experiments"] == {"cd-1": e.assign("live-me")}

        # the others are exposed as the gateway does it; bar converts at 30%, control at 15%
        durable = open_log(node.settings, redis)
        t = int(time.time() * 1000) - 600_000
        want = {a: [0, 0] for a in ("control", "bar", "holdout")}
        want["bar"][0] += 1  # bar_user, exposed by its welcome
        want[e.assign("live-me")][0] += 1
        for i, u in enumerate(users):
            await durable.append("growth", u, EXPOSURE, exposure_data("cd-1", arm[u], u), event_id=exposure_event_id("cd-1", u), ts=t)
            want[arm[u]][0] += 1
            if i % 100 < (30 if arm[u] == "bar" else 15):
                await durable.append("orders", f"o{i}", "order.paid", {"order_id": f"o{i}", "user_id": u, "room_id": "room1", "amount": 1000},
                                     event_id=f"o{i}:paid", ts=t + 1000)
                want[arm[u]][1] += 1
        # a purchase made before the exposure is not a conversion
        await durable.append("orders", "early", "order.paid", {"order_id": "early", "user_id": "u1", "room_id": "room1", "amount": 5000},
                             event_id="early:paid", ts=t - 1000)
        store = SqlStore(node.settings.database_url)
        try:
            worker, deadline = GrowthWorker(store, redis, keys), time.monotonic() + 30
            total = len(users) + want["control"][1] + want["bar"][1] + want["holdout"][1] + 1 + 2  # + the live exposures
            while worker.applied < total and time.monotonic() < deadline:  # live exposures are appended in the background
                await growth_drain(durable, worker, fetch_timeout_ms=200)
        finally:
            await store.close()
            await durable.close()

        st, res = await _call(s, "GET", f"{base}/cd-1/results", ops)
        rows = {a["arm"]: a for a in res["arms"]}
        assert {a: (r["exposed"], r["conversion"]["converted"]) for a, r in rows.items()} == {a: tuple(v) for a, v in want.items()}
        assert rows["bar"]["gmv_per_viewer"]["mean"] == round(1000 * want["bar"][1] / want["bar"][0], 3)
        ref = two_proportion_ztest(want["control"][1], want["control"][0], want["bar"][1], want["bar"][0])
        assert rows["bar"]["vs_control"]["conversion"]["p_value"] == round(ref.p_value, 6)
        assert res["srm"]["observed"] == [want["control"][0], want["bar"][0], want["holdout"][0]] and not res["srm"]["mismatch"]
        st, stopped = await _call(s, "POST", f"{base}/cd-1/stop", ops)
        assert stopped["state"] == "stopped" and stopped["stopped_ms"]
        st, started = await _call(s, "POST", f"{base}/cd-2/start", ops)  # the flag is free now
        assert started["state"] == "running"
        assert (await _call(s, "GET", f"{base}/nope/results", ops))[0] == 404
