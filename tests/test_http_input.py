"""Bad HTTP input gets a documented 4xx JSON error, never a 500, and changes nothing.

* one body reader: bounded size and depth (a 3,000-deep array is 400 ``bad_request`` on every
  documented route that takes a body, without a traceback in the log);
* query, path and header values are checked against the OpenAPI document the server
  serves (``?limit=-1``, ``?limit=1e20``, ``?offset=-5``, a user id with a slash);
* aiohttp's own refusals (unknown route, wrong method, body too large, a request line it
  cannot parse) answer the JSON error body too.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from gateway.openapi import document
from gateway.validation import MAX_DEPTH, json_depth, parse_json
from livecommerce.errors import BadFrame


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def test_depth_is_counted_on_the_bytes_and_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert json_depth(b'"\\"[[[["') == 0
    assert json_depth(b"[" * 3000 + b"]" * 3000) == 3000
    with pytest.raises(BadFrame) as exc:
        parse_json(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert exc.value.code == "bad_request"
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert parse_json(b"[18446744073709551615, -9223372036854775808]") == [2**64 - 1, -(2**63)]
    for bad in (b"NaN", b'{"a": Infinity}', b"\xff\xfe", b"{", b'{"n": 18446744073709551616}', b"[-9223372036854775809]"):
        with pytest.raises(BadFrame) as exc:
            parse_json(bad)
        assert exc.value.code == "bad_json"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


async def test_a_deeply_nested_body_is_400_on_every_route_that_takes_one(gateway_factory: Any, token: Callable[..., str],
                                                                          http: aiohttp.ClientSession, caplog: Any) -> None:
    node = await gateway_factory()
    ops, viewer = token("ops1", "ops"), token("v1")
    deep = b"[" * 3000 + b"]" * 3000
    doc = document()["paths"]
    routes = [(m.upper(), p) for p, ms in doc.items() for m, spec in ms.items() if "requestBody" in spec]
    # the routes of the report are among them
    for want in ("/api/v1/sales/{sale}/buy", "/api/v1/tickets", "/api/v1/growth/acquire", "/api/v1/rooms/{room}/announce",
                 "/api/v1/wallets/{user}/topup", "/api/v1/campaigns"):
        assert ("POST", want) in routes
    caplog.set_level(logging.INFO)
    for method, path in routes:
        ops_only = doc[path][method.lower()].get("x-roles") == ["ops"]
        for tok in (ops, viewer):
            r = await http.request(method, node.url + _concrete(path), data=deep,
                                   headers={**bearer(tok), "Content-Type": "application/json"})
            body = await r.json()
            if tok == viewer and ops_only:  # who may call is judged before the input
                assert (r.status, body["error"]["code"]) == (403, "forbidden"), (method, path, body)
                continue
            assert r.status == 400, (method, path, r.status, body)
            assert body["error"]["code"] == "bad_request", (method, path, body)
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], "a deep body was logged as an error"
    assert not [rec for rec in caplog.records if "Traceback" in (rec.exc_text or "")]
    # the node still serves everyone else
    r = await http.get(node.url + "/api/v1/orders", headers=bearer(viewer))
    assert r.status == 200


@pytest.mark.parametrize("query", ["limit=-1", "limit=0", "limit=501", "limit=1e20", "limit=abc", "offset=-5", "offset=1.5",
                                   "state=lost", "limit=1&limit=2"])
async def test_query_values_outside_the_document_are_400_naming_the_parameter(gateway_factory: Any, token: Callable[..., str],
                                                                              http: aiohttp.ClientSession, query: str) -> None:
    node = await gateway_factory()
    r = await http.get(f"{node.url}/api/v1/orders?{query}", headers=bearer(token("ops1", "ops")))
    body = await r.json()
    assert r.status == 400, body
    assert body["error"]["code"] == "invalid"
    assert query.split("=")[0] in body["error"]["message"]


async def test_user_ids_in_paths_are_checked_and_nothing_is_created(gateway_factory: Any, token: Callable[..., str],
                                                                    http: aiohttp.ClientSession, redis: Any, prefix: str) -> None:
    node = await gateway_factory()
    ops = token("ops1", "ops")
    for user in ("..%2Ffz1", "a%20b", "x" * 65, ".hidden"):
        r = await http.post(f"{node.url}/api/v1/wallets/{user}/topup", json={"amount": 10},
                            headers={**bearer(ops), "Idempotency-Key": "k1"})
        body = await r.json()
        assert r.status == 400 and body["error"]["code"] == "invalid", (user, body)
        assert "user" in body["error"]["message"]
    r = await http.post(f"{node.url}/api/v1/wallets/%7Bslot%7D/topup", json={"amount": 10}, headers=bearer(ops))
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"  # braces never match a route
    assert [k async for k in redis.scan_iter(match=f"{prefix}:*fz1*")] == []
    r = await http.post(f"{node.url}/api/v1/wallets/fz1/topup", json={"amount": 10}, headers={**bearer(ops), "Idempotency-Key": "k1"})
    assert r.status == 201


async def test_who_may_call_is_judged_before_the_input(gateway_factory: Any, token: Callable[..., str],
                                                       http: aiohttp.ClientSession) -> None:
    node = await gateway_factory()
    url = f"{node.url}/api/v1/wallets/u1/topup"
    r = await http.post(url, json={"amount": -3})
    assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
    r = await http.post(f"{node.url}/api/v1/segments", json={"bad": True}, headers=bearer(token("v1")))
    assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    r = await http.post(f"{node.url}/api/v1/segments", json={"bad": True}, headers=bearer(token("o1", "ops")))
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid"


async def test_headers_and_bodies_are_checked_against_the_document(gateway_factory: Any, token: Callable[..., str],
                                                                  http: aiohttp.ClientSession) -> None:
    node = await gateway_factory()
    ops = token("ops1", "ops")
    r = await http.post(f"{node.url}/api/v1/wallets/u1/topup", json={"amount": 10}, headers={**bearer(ops), "Idempotency-Key": "k" * 129})
    assert r.status == 400 and "Idempotency-Key" in (await r.json())["error"]["message"]
    r = await http.post(f"{node.url}/api/v1/wallets/u1/topup", json={"amount": -3}, headers=bearer(ops))
    body = await r.json()
    assert r.status == 400 and "amount" in body["error"]["message"], body
    r = await http.post(f"{node.url}/api/v1/wallets/u1/topup", json=[1, 2], headers=bearer(ops))
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid"


async def test_aiohttp_level_errors_answer_the_documented_json_body(gateway_factory: Any, token: Callable[..., str],
                                                                   http: aiohttp.ClientSession, caplog: Any) -> None:
    node = await gateway_factory()
    r = await http.get(node.url + "/api/v1/no-such-thing")
    assert r.status == 404 and r.content_type == "application/json"
    assert (await r.json())["error"]["code"] == "not_found"
    r = await http.delete(node.url + "/api/v1/campaigns")
    assert r.status == 405 and r.content_type == "application/json"
    assert (await r.json())["error"]["code"] == "method_not_allowed" and "POST" in r.headers["Allow"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off while read
        for _ in range(100):
            yield b" " * 1024

    r = await http.post(f"{node.url}/api/v1/wallets/u1/topup", data=chunks(), headers=bearer(token("ops1", "ops")))
    assert r.status == 413 and r.content_type == "application/json", await r.text()
    assert (await r.json())["error"]["code"] == "frame_too_big"
    r = await http.post(f"{node.url}/api/v1/wallets/u1/topup", data=b"{" + b" " * 70_000 + b"}", headers=bearer(token("ops1", "ops")))
    assert r.status == 413 and (await r.json())["error"]["code"] == "frame_too_big"
    # a request line the HTTP parser refuses
    host, port = node.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400 ", head), raw[:200]
    assert b"application/json" in head and b'"code": "bad_request"' in body, raw[:400]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], "a client's bad request logged as an error"
