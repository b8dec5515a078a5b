"""Experiments at the edge: ops define them, every node reads their flags, exposures go to
the durable log, results come from SQL.

HTTP (ops unless noted; JSON):

* ``POST /api/v1/experiments`` (:func:`livecommerce.experiments.parse_experiment`) -> 201
  the definition (with its ``split``); 409 when the id exists or a running experiment
  already controls one of its flags.
* ``GET /api/v1/experiments``, ``GET /api/v1/experiments/{id}``.
* ``POST /api/v1/experiments/{id}/start``, ``.../stop``: the life-cycle steps.
* ``GET /api/v1/experiments/{id}/results[?confidence=0.95]``: per arm exposures,
  conversion rate with its interval, GMV per viewer with its interval, buy, gift and
  watch rates, the z-test against the control and the sample-ratio-mismatch check
  (:func:`livecommerce.experiments.results`), from the growth worker's tables.
* ``GET /api/v1/me/flags`` (any signed-in user): the caller's flags and arms.

Flags: :meth:`Experiments.flag` ``(user, name, default)`` answers from this node's
cached book (reloaded within 2 s of a change, no Redis call per read) and records the
exposure: the first time this node shows a user an experiment, ``experiment.exposure``
goes to the log in the background (topic ``growth``, id ``exp:<id>:<user>``, so other
nodes' and later repeats are the same event). ``welcome`` carries ``flags`` (every known
flag: ``feed.ranker``, ``coupon.amount``, ``countdown.style`` ... with the user's values)
and ``experiments`` (``{id: arm}``) for the client to use.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from typing import Any

from aiohttp import web

from livecommerce import growth_sql
from livecommerce.auth import Identity
from livecommerce.errors import BadFrame, LiveCommerceError
from livecommerce.experiments import (
    EXPOSURE,
    FLAG_DEFAULTS,
    Book,
    Experiment,
    Exposure,
    ExpStep,
    arms_from_rows,
    exposure_data,
    exposure_event_id,
    parse_experiment,
    results,
    step,
)
from livecommerce.experiments_redis import ExperimentCache, ExperimentsRedis
from livecommerce.growth import TOPIC
from livecommerce.log import Log
from livecommerce.store_sql import SqlStore

from .core import Gateway
from .openapi import ANYONE_SIGNED, BOOL, INT, MS, NUM, OPS, STR, J, arr, nullable, obj, op, ref
from .validation import read_json

log = logging.getLogger("livecommerce.gateway.experiments")

SEEN_MAX = 200_000  # (experiment, user) pairs this node remembers having logged


class Experiments:
    """Flags from the cached book; exposures logged once per node and pair; the ops API."""

    def __init__(self, gw: Gateway, store: ExperimentsRedis, durable: Log, sql: SqlStore) -> None:
        self.gw = gw  # the clock and the callers' identities
        self.store = store
        self.cache = ExperimentCache(store)
        self.durable = durable  # exposures go to the log
        self.sql = sql
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def book(self) -> Book:
        return self.cache.book

    def flag(self, user: str, name: str, default: Any = None, *, expose: bool = True) -> Any:
        """The value of flag ``name`` for ``user`` (``default`` outside an experiment,
        falling back on :data:`FLAG_DEFAULTS`); records the exposure unless ``expose`` is
        False."""
        value, exp = self.book.resolve(user, name, FLAG_DEFAULTS.get(name) if default is None else default)
        if exp is not None and expose:
            self.expose(user, exp)
        return value

    def arm(self, user: str, name: str) -> Exposure | None:
        """Which experiment and arm decide ``name`` for ``user`` (no exposure recorded)."""
        return self.book.resolve(user, name, None)[1]

    def flags_for(self, user: str) -> tuple[dict[str, Any], dict[str, str]]:
        """All flags of ``user`` and their arms ``{experiment: arm}``; records exposures."""
        flags, exps = self.book.flags_for(user)
        for e in exps:
            self.expose(user, e)
        return flags, {e.exp: e.variant for e in exps}

    def expose(self, user: str, e: Exposure) -> None:
        key = (e.exp, user)
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        now = self.gw.now_ms()

        async def go() -> None:
            try:
                await self.durable.append(TOPIC, user, EXPOSURE, exposure_data(e.exp, e.variant, user),
                                          event_id=exposure_event_id(e.exp, user), ts=now)
            except Exception as exc:  # the next read on any node logs it again
                self._seen.pop(key, None)
                log.warning("experiments.exposure_dropped", extra={"exp": e.exp, "user": user, "err": repr(exc)})

        task = asyncio.get_running_loop().create_task(go())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_second(self) -> None:
        try:
            await self.cache.refresh()
        except LiveCommerceError as exc:
            log.warning("experiments.refresh_failed", extra={"err": exc.message})

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def welcome(self, room: str, ident: Identity) -> dict[str, Any]:
        flags, arms = self.flags_for(ident.user)
        return {"flags": flags, "experiments": arms}

    # ---- HTTP (gateway.routes)
    async def _changed(self, e: Experiment) -> Experiment:
        await self.cache.refresh(force=True)  # this node answers with the change at once
        log.info("experiment.changed", extra={"exp": e.id, "state": e.state})
        return e

    async def create(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        ident.require_ops()
        body = await read_json(request, default=None)
        exp = parse_experiment(body, created_by=ident.user, now_ms=self.gw.now_ms(), default_salt=secrets.token_hex(8))
        return web.json_response((await self._changed(await self.store.create(exp))).to_dict(), status=201)

    async def list_all(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        _, exps = await self.store.load()
        return web.json_response({"experiments": [e.to_dict() for e in sorted(exps.values(), key=lambda e: (-e.created_ms, e.id))]})

    async def get_one(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        return web.json_response((await self.store.get(request.match_info["id"])).to_dict())

    async def start_one(self, request: web.Request) -> web.Response:
        return await self._step(request, "start")

    async def stop_one(self, request: web.Request) -> web.Response:
        return await self._step(request, "stop")

    async def _step(self, request: web.Request, s: ExpStep) -> web.Response:
        self.gw.identify_request(request).require_ops()
        now = self.gw.now_ms()
        e = await self.store.update(request.match_info["id"], lambda old: step(old, s, now_ms=now))
        return web.json_response((await self._changed(e)).to_dict())

    async def get_results(self, request: web.Request) -> web.Response:
        self.gw.identify_request(request).require_ops()
        conf = _confidence(request)
        e = await self.store.get(request.match_info["id"])
        rows = await growth_sql.experiment_arms(self.sql, e.id, until_ms=e.stopped_ms)
        return web.json_response(results(e, arms_from_rows(rows), confidence=conf, now_ms=self.gw.now_ms()))

    async def my_flags(self, request: web.Request) -> web.Response:
        ident = self.gw.identify_request(request)
        flags, arms = self.flags_for(ident.user)
        return web.json_response({"user": ident.user, "flags": flags, "experiments": arms})


P_EXP: J = {"name": "id", "in": "path", "required": True, "schema": STR}
_FLAGS: J = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
_INTERVAL: J = arr(NUM)
OPENAPI_SCHEMAS: dict[str, J] = {
    "Experiment": obj({
        "id": STR, "salt": STR, "holdout": NUM, "state": {"enum": ["draft", "running", "stopped"]}, "description": STR,
        "created_by": STR, "created_ms": MS, "started_ms": nullable(MS), "stopped_ms": nullable(MS),
        "variants": arr(obj({"name": STR, "weight": NUM, "flags": _FLAGS}, ["name", "weight", "flags"])),
        "split": {"type": "object", "additionalProperties": NUM}, "flags": arr(STR),
    }, ["id", "salt", "variants", "holdout", "state", "split", "flags"]),
    "ExperimentCreate": obj({
        "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,48}$"}, "description": STR, "salt": STR, "start": BOOL,
        "holdout": {"type": "number", "minimum": 0, "maximum": 0.5},
        "variants": {"oneOf": [arr(obj({"name": STR, "weight": NUM, "flags": _FLAGS}, ["name"])),
                               {"type": "object", "additionalProperties": NUM}]},
        "flags": {"type": "object", "additionalProperties": _FLAGS},
    }, ["id", "variants"], desc="The first variant is the control. Weights are relative."),
    "ExperimentResults": obj({
        "experiment": ref("Experiment"), "confidence": NUM, "primary": STR, "computed_ms": nullable(MS),
        "arms": arr(obj({
            "arm": STR, "control": BOOL, "exposed": INT, "share": NUM, "expected_share": NUM,
            "conversion": obj({"converted": INT, "rate": NUM, "ci": _INTERVAL}, ["converted", "rate", "ci"]),
            "gmv": INT, "gmv_per_viewer": obj({"mean": NUM, "sd": NUM, "ci": _INTERVAL}, ["mean", "sd", "ci"]),
            "buy_rate": NUM, "gift_rate": NUM, "watch_rate": NUM, "watch_min_per_viewer": NUM,
            "vs_control": nullable(obj({"conversion": {"type": "object"}, "gmv_per_viewer": {"type": "object"}, "significant": BOOL},
                                       ["conversion", "gmv_per_viewer", "significant"])),
        }, ["arm", "control", "exposed", "conversion", "gmv_per_viewer", "vs_control"])),
        "srm": obj({"observed": arr(INT), "expected": arr(NUM), "stat": NUM, "df": INT, "p_value": NUM, "mismatch": BOOL},
                   ["observed", "expected", "stat", "df", "p_value", "mismatch"]),
        "winner": nullable(STR),
    }, ["experiment", "confidence", "arms", "srm", "winner"]),
}
OPENAPI_PATHS: dict[str, dict[str, J]] = {
    "/api/v1/experiments": {
        "post": op("Create an experiment (variants, split, holdout, flags)", tag="experiments", auth=OPS, body=ref("ExperimentCreate"),
                   ok=("201", ref("Experiment"), "created"), errors=(409,),
                   desc="409: the id exists, or a running experiment controls one of its flags."),
        "get": op("List experiments", tag="experiments", auth=OPS, ok=("200", obj({"experiments": arr(ref("Experiment"))}, ["experiments"]), "all")),
    },
    "/api/v1/experiments/{id}": {"get": op("One experiment", tag="experiments", auth=OPS, params=[P_EXP],
                                           ok=("200", ref("Experiment"), "definition"), errors=(404,))},
    "/api/v1/experiments/{id}/start": {"post": op("Start a draft experiment", tag="experiments", auth=OPS, params=[P_EXP],
                                                  ok=("200", ref("Experiment"), "running"), errors=(404, 409))},
    "/api/v1/experiments/{id}/stop": {"post": op("Stop an experiment (flags fall back to defaults)", tag="experiments", auth=OPS,
                                                 params=[P_EXP], ok=("200", ref("Experiment"), "stopped"), errors=(404, 409))},
    "/api/v1/experiments/{id}/results": {"get": op(
        "Results per arm: conversion, GMV per viewer, intervals, z-test against the control, sample-ratio check",
        tag="experiments", auth=OPS, params=[P_EXP, {"name": "confidence", "in": "query", "schema": {"type": "number", "minimum": 0.5, "maximum": 0.999}}],
        ok=("200", ref("ExperimentResults"), "results"), errors=(404,))},
    "/api/v1/me/flags": {"get": op("My experiment flags and arms (records exposures)", tag="experiments", auth=ANYONE_SIGNED,
                                   ok=("200", obj({"user": STR, "flags": _FLAGS, "experiments": {"type": "object", "additionalProperties": STR}},
                                                  ["user", "flags", "experiments"]), "flags"))},
}


def _confidence(request: web.Request) -> float:
    try:
        c = float(request.query.get("confidence", "0.95"))
    except ValueError:
        raise BadFrame("'confidence' must be a number", code="invalid") from None
    if not 0.5 <= c <= 0.999:
        raise BadFrame("'confidence' must be in [0.5, 0.999]", code="invalid")
    return c
