"""Test coins (M2 1/7): a viewer topping up its own wallet is a dev and demo feature, off
unless ``LC_TEST_COINS=1`` (``livecommerce dev`` turns it on); ops top-ups always work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from livecommerce.config import Settings


def test_test_coins_are_off_unless_asked_for() -> None:
    assert Settings().test_coins is False
    assert Settings.from_env({}).test_coins is False
    assert Settings.from_env({"LC_TEST_COINS": "1"}).test_coins is True


async def test_without_test_coins_a_viewer_cannot_top_up_its_own_wallet_but_ops_can(
    gateway_factory: Any, token: Callable[..., str]
) -> None:
    node = await gateway_factory(test_coins=False)
    url = f"{node.url}/api/v1/wallets/alice/topup"
    viewer = {"Authorization": f"Bearer {token('alice')}"}
    ops = {"Authorization": f"Bearer {token('ops1', 'ops')}"}
    async with aiohttp.ClientSession() as http:
        r = await http.post(url, json={"amount": 500, "idempotency_key": "self-1"}, headers=viewer)
        body = await r.json()
        assert r.status == 403 and body["error"]["code"] == "test_coins_disabled", body
        assert "LC_TEST_COINS" in body["error"]["message"]
        r = await http.get(f"{node.url}/api/v1/wallets/alice", headers=viewer)
        assert (await r.json())["balance"] == 0  # nothing was credited
        r = await http.post(url, json={"amount": 500, "idempotency_key": "ops-1"}, headers=ops)
        assert r.status == 201 and (await r.json())["balance"] == 500
        r = await http.get(f"{node.url}/api/v1/wallets/alice", headers=viewer)
        assert (await r.json())["balance"] == 500
        # someone else's wallet stays forbidden as before
        r = await http.post(f"{node.url}/api/v1/wallets/bob/topup", json={"amount": 5, "idempotency_key": "x-1"}, headers=viewer)
        assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"


async def test_with_test_coins_a_viewer_tops_up_its_own_wallet(gateway_factory: Any, token: Callable[..., str]) -> None:
    node = await gateway_factory(test_coins=True)
    async with aiohttp.ClientSession() as http:
        r = await http.post(f"{node.url}/api/v1/wallets/carol/topup", json={"amount": 300, "idempotency_key": "self-1"},
                            headers={"Authorization": f"Bearer {token('carol')}"})
        assert r.status == 201 and (await r.json())["balance"] == 300


async def test_welcome_says_whether_test_coins_are_on(gateway_factory: Any, token: Callable[..., str]) -> None:
    from tests.wsclient import Client

    for on in (False, True):
        node = await gateway_factory(test_coins=on)
        c = await Client.connect(node.ws, "tc1", token("dave"))
        assert c.welcome["d"].get("test_coins", False) is on  # the viewer page shows its top-up button only then
        await c.close()
