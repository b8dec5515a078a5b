"""The OpenAPI document against the gateway it describes.

* Every aiohttp route under ``/api/v1`` is documented with the same methods, and every
  documented path is a route (so neither can drift from the other).
* Real responses of a real gateway (real Redis, SQLite, the real durable log) validate
  against the documented response schemas, through a small JSON-schema validator written
  here (the subset the document uses: ``$ref``, ``type``, ``properties``, ``required``,
  ``additionalProperties``, ``items``, ``enum``, ``oneOf``, ``allOf``, bounds, patterns).
"""

from __future__ import annotations

import re
import time
from typing import Any

import aiohttp
import pytest

from gateway.openapi import document
from tests.waiting import wait_until

Json = Any


# ----------------------------------------------------------------------------- validator
def _type_ok(value: Json, t: str) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    raise AssertionError(f"unknown type {t!r} in the document")


def validate(value: Json, schema: Json, doc: Json, path: str = "$") -> list[str]:
    """Errors of ``value`` against ``schema`` (empty: valid)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        assert name in doc["components"]["schemas"], f"dangling $ref {schema['$ref']}"
        return validate(value, doc["components"]["schemas"][name], doc, path)
    errs: list[str] = []
    for sub in schema.get("allOf", []):
        errs += validate(value, sub, doc, path)
    if "oneOf" in schema:
        ok = [s for s in schema["oneOf"] if not validate(value, s, doc, path)]
        if len(ok) != 1:
            errs.append(f"{path}: matches {len(ok)} of the oneOf alternatives (want 1): {value!r:.120}")
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} not in {schema['enum']}")
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_type_ok(value, x) for x in types):
            return [*errs, f"{path}: {value!r:.80} is not {t}"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
            errs.append(f"{path}: length {len(value)} out of bounds")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errs.append(f"{path}: missing required {name!r}")
        for k, v in value.items():
            if k in props:
                errs += validate(v, props[k], doc, f"{path}.{k}")
            else:
                extra = schema.get("additionalProperties", True)
                if extra is False:
                    errs.append(f"{path}: unexpected property {k!r}")
                elif isinstance(extra, dict):
                    errs += validate(v, extra, doc, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errs += validate(item, schema["items"], doc, f"{path}[{i}]")
    return errs


def test_the_validator_rejects_what_it_should() -> None:
    doc = document()
    assert validate({"error": {"code": "x", "message": "y"}}, {"$ref": "#/components/schemas/Error"}, doc) == []
    assert validate({"error": {"code": "x"}}, {"$ref": "#/components/schemas/Error"}, doc)
    assert validate({"id": "r", "title": "", "host": "h", "state": "paused", "created_ms": 1}, {"$ref": "#/components/schemas/Room"}, doc)
    assert validate({"qty": True, "request_id": "a"}, {"$ref": "#/components/schemas/BuyRequest"}, doc)
    assert validate({"order": None, "hold": None, "history": [{}]}, doc["paths"]["/api/v1/orders/{order}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"], doc)


# ----------------------------------------------------------------------------- routes
def _routes(app: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in app.router.routes():
        info = r.resource.get_info() if r.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and r.method not in ("HEAD", "*"):
            out.setdefault(path, set()).add(r.method.lower())
    return out


def test_every_api_route_is_documented_and_every_documented_path_is_served(settings: Any) -> None:
    from gateway.app import build_app

    app = build_app(settings)  # builds the routes; nothing is started
    served = _routes(app)
    doc = document()
    documented = {path: set(ops) for path, ops in doc["paths"].items()}
    api = {p: m for p, m in served.items() if p.startswith("/api/v1")}
    missing = {p: sorted(m - documented.get(p, set())) for p, m in api.items() if m - documented.get(p, set())}
    assert not missing, f"routes without an OpenAPI entry (add them to gateway/openapi.py): {missing}"
    ghosts = {p: sorted(m - served.get(p, set())) for p, m in documented.items() if m - served.get(p, set())}
    assert not ghosts, f"documented but not served: {ghosts}"
    assert doc["openapi"].startswith("3.1")


def test_the_document_is_well_formed() -> None:
    doc = document()
    for path, ops in doc["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op["summary"] and op["responses"], where
            assert any(s.startswith("2") for s in op["responses"]), f"{where} has no success response"
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, f"{where}: path parameters {declared} != {names}"
            for status, resp in op["responses"].items():
                for media in resp.get("content", {}).values():
                    validate(None, media["schema"], doc)  # resolves every $ref or fails
                assert status.isdigit(), where


# ----------------------------------------------------------------------------- real responses
class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, doc: Json) -> None:
        self.http, self.base, self.doc = http, base, doc
        self.checked: list[str] = []

    async def call(self, method: str, path: str, template: str, *, token: str | None = None, body: Json = None,
                   headers: dict[str, str] | None = None, status: int = 200) -> Json:
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.base + path, json=body, headers=h) as r:
            data = await r.json()
            assert r.status == status, f"{method} {path}: {r.status} {data}"
        op = self.doc["paths"][template][method.lower()]
        resp = op["responses"].get(str(status))
        assert resp is not None, f"{method} {template}: status {status} is not documented"
        schema = resp["content"]["application/json"]["schema"]
        errs = validate(data, schema, self.doc)
        assert not errs, f"{method} {template} -> {status}:\n" + "\n".join(errs[:10])
        self.checked.append(f"{method} {template} {status}")
        return data


async def test_real_responses_match_their_documented_schemas(gateway_factory: Any, token: Any) -> None:
    node = await gateway_factory()
    host = token("h1", "host", rooms=("r1",))
    viewer = token("v1", "viewer")
    ops = token("o1", "ops")
    async with aiohttp.ClientSession() as http:
        async with http.get(node.url + "/api/v1/openapi.json") as r:
            assert r.status == 200
            doc = await r.json()
        assert doc == document(), "the served document is the module's"
        api = Api(http, node.url, doc)

        await api.call("POST", "/api/v1/rooms", "/api/v1/rooms", token=host, body={"id": "r1", "title": "Show"}, status=201)
        await api.call("GET", "/api/v1/rooms/nope", "/api/v1/rooms/{room}", status=404)
        await api.call("POST", "/api/v1/rooms/r1/live", "/api/v1/rooms/{room}/live", token=host)
        await api.call("GET", "/api/v1/rooms/r1", "/api/v1/rooms/{room}")
        await api.call("POST", "/api/v1/rooms/r1/announce", "/api/v1/rooms/{room}/announce", token=host, body={"text": "hi"})
        await api.call("POST", "/api/v1/rooms/r1/live", "/api/v1/rooms/{room}/live", token=viewer, status=403)
        p = await api.call("POST", "/api/v1/products", "/api/v1/products", token=host, body={"name": "Mug", "price": 1200}, status=201)
        await api.call("POST", "/api/v1/rooms/r1/pin", "/api/v1/rooms/{room}/pin", token=host, body={"product_id": p["id"]})
        now = int(time.time() * 1000)
        camp = {"room": "r1", "product_id": p["id"], "price": 990, "stock": 5, "per_user_limit": 2,
                "starts_ms": now + 60_000, "duration_s": 600}
        created = await api.call("POST", "/api/v1/campaigns", "/api/v1/campaigns", token=host, body=camp, status=201)
        sale = created["campaigns"][0]["sale_id"]
        await api.call("POST", f"/api/v1/sales/{sale}/start", "/api/v1/sales/{sale}/start", token=host)
        await api.call("GET", "/api/v1/campaigns?room=r1", "/api/v1/campaigns", token=host)
        res = await api.call("POST", f"/api/v1/sales/{sale}/buy", "/api/v1/sales/{sale}/buy", token=viewer,
                             body={"qty": 1, "request_id": "req-1"}, status=201)
        await api.call("POST", f"/api/v1/sales/{sale}/buy", "/api/v1/sales/{sale}/buy", token=viewer,
                       body={"qty": 5, "request_id": "req-2"}, status=409)
        oid = res["order_id"]
        await api.call("POST", f"/api/v1/orders/{oid}/pay", "/api/v1/orders/{order}/pay", token=viewer, headers={"Idempotency-Key": "k1"})
        await api.call("GET", f"/api/v1/orders/{oid}", "/api/v1/orders/{order}", token=viewer)
        await api.call("GET", "/api/v1/orders", "/api/v1/orders", token=viewer)
        await api.call("GET", f"/api/v1/sales/{sale}/stats", "/api/v1/sales/{sale}/stats", token=host)
        lot = await api.call("POST", "/api/v1/rooms/r1/lotteries", "/api/v1/rooms/{room}/lotteries", token=host,
                             body={"prize": {"kind": "product", "id": p["id"]}, "winners": 1, "duration_s": 60}, status=201)
        await api.call("GET", f"/api/v1/lotteries/{lot['id']}", "/api/v1/lotteries/{id}")
        await api.call("GET", "/api/v1/rooms/r1/lotteries", "/api/v1/rooms/{room}/lotteries")
        drop = await api.call("POST", "/api/v1/rooms/r1/coupons", "/api/v1/rooms/{room}/coupons", token=host,
                              body={"kind": "full_reduction", "value": 200, "quantity": 3}, status=201)
        await api.call("POST", f"/api/v1/coupons/{drop['drop_id']}/claim", "/api/v1/coupons/{drop}/claim", token=viewer, status=201)
        await api.call("POST", f"/api/v1/coupons/{drop['drop_id']}/claim", "/api/v1/coupons/{drop}/claim", token=viewer, status=409)
        await api.call("GET", f"/api/v1/coupons/{drop['drop_id']}", "/api/v1/coupons/{drop}")
        await api.call("GET", "/api/v1/users/v1/coupons", "/api/v1/users/{user}/coupons", token=viewer)
        await api.call("POST", "/api/v1/wallets/v1/topup", "/api/v1/wallets/{user}/topup", token=viewer,
                       body={"amount": 100}, headers={"Idempotency-Key": "t1"}, status=201)
        await api.call("GET", "/api/v1/wallets/v1", "/api/v1/wallets/{user}", token=viewer)
        await api.call("GET", "/api/v1/gifts", "/api/v1/gifts")
        await api.call("GET", "/api/v1/rooms/r1/leaderboard", "/api/v1/rooms/{room}/leaderboard")
        await api.call("GET", "/api/v1/points/v1", "/api/v1/points/{user}", token=viewer)
        await api.call("GET", "/api/v1/rooms/r1/likes", "/api/v1/rooms/{room}/likes")
        await api.call("GET", "/api/v1/rooms/r1/online", "/api/v1/rooms/{room}/online")
        await api.call("GET", "/api/v1/ops/overview", "/api/v1/ops/overview", token=viewer, status=403)

        async def sampled() -> dict | None:  # the commerce figures are sampled every few seconds
            ov = await api.call("GET", "/api/v1/ops/overview", "/api/v1/ops/overview", token=ops)
            return ov if ov["campaigns"] and ov["rooms"] else None

        ov = await wait_until(sampled, interval=0.2, what="the sale and the room in the ops overview")
        assert [c["sale_id"] for c in ov["campaigns"]] == [sale]
        assert [r["room"] for r in ov["rooms"]] == ["r1"]
        await api.call("GET", "/api/v1/ops/series?since=0", "/api/v1/ops/series", token=ops)
        await api.call("GET", "/api/v1/ops/alerts", "/api/v1/ops/alerts", token=ops)
        await api.call("GET", f"/api/v1/ops/inventory/{sale}", "/api/v1/ops/inventory/{sale}", token=ops)
        async with http.get(node.url + "/api/v1/docs") as r:
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            assert "docs.js" in await r.text()
    assert len(set(api.checked)) >= 35


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health_responses_match(gateway_factory: Any, path: str) -> None:
    node = await gateway_factory()
    doc = document()
    async with aiohttp.ClientSession() as http, http.get(node.url + path) as r:
        assert r.status == 200
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert validate(await r.json(), schema, doc) == []


# ----------------------------------------------------------------------------- ids and examples
def test_every_operation_has_a_unique_operation_id_from_the_route_table() -> None:
    doc = document()
    ids = [(path, method, spec.get("operationId")) for path, methods in doc["paths"].items()
           for method, spec in methods.items() if isinstance(spec, dict)]
    assert [x for x in ids if not x[2]] == []
    names = [x[2] for x in ids]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", n) for n in names), names
    by = {(path, method): op for path, method, op in ids}
    assert by[("/api/v1/rooms/{room}/lotteries", "post")] == "lotteriesStart"
    assert by[("/api/v1/sales/{sale}/buy", "post")] == "salesBuy"


def test_every_request_body_and_answer_has_an_example_that_its_schema_accepts() -> None:
    import jsonschema

    doc = document()
    root = {"components": doc["components"]}
    checked = 0
    for path, methods in doc["paths"].items():
        for method, spec in methods.items():
            if not isinstance(spec, dict):
                continue
            media = [("request", spec.get("requestBody", {}).get("content", {}).get("application/json"))]
            media += [(status, r.get("content", {}).get("application/json")) for status, r in spec["responses"].items()]
            for where, m in media:
                if m is None or "schema" not in m:
                    continue
                assert "example" in m, f"{method.upper()} {path} {where}: no example"
                errors = list(jsonschema.Draft202012Validator({**root, **m["schema"]}).iter_errors(m["example"]))
                assert not errors, f"{method.upper()} {path} {where}: {errors[0].message}"
                assert not validate(m["example"], m["schema"], doc), f"{method.upper()} {path} {where}"
                checked += 1
    assert checked > 200
