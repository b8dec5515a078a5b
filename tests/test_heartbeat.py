"""The node's heartbeat: one sweep pings idle connections and closes the ones that do not
answer (what aiohttp's timer per connection did)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from tests.waiting import wait_until


async def test_an_idle_client_is_pinged_and_closed_when_it_never_answers(gateway_factory: Any,
                                                                           token: Callable[..., str]) -> None:
    node = await gateway_factory(heartbeat_s=0.5)
    url = f"{node.ws}?room=hb&format=json&token="
    async with aiohttp.ClientSession() as http:
        mute = await http.ws_connect(url + token("mute"), autoping=False, heartbeat=None)
        alive = await http.ws_connect(url + token("alive"), autoping=False, heartbeat=None)
        assert (await mute.receive_json())["t"] == "welcome"
        assert (await alive.receive_json())["t"] == "welcome"
        msg = await mute.receive(timeout=5)  # skipped frames: online counts
        while msg.type == WSMsgType.TEXT:
            msg = await mute.receive(timeout=5)
        assert msg.type == WSMsgType.PING  # the node's ping; never answered
        pinged = 0
        while pinged < 2:  # the other one answers every ping and stays
            msg = await alive.receive(timeout=5)
            if msg.type == WSMsgType.PING:
                pinged += 1
                await alive.pong(msg.data)
        while msg.type not in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
            msg = await mute.receive(timeout=5)
        assert mute.closed or msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        conns = node.gw.hub.rooms["hb"].conns["json"]
        await wait_until(lambda: {c.user for c in conns}, until=lambda users: users == {"alive"},
                         what="only the answering client left in the room")
        await alive.send_json({"t": "comment", "id": 1, "d": {"text": "still here"}})
        while True:
            got = await alive.receive(timeout=5)
            if got.type == WSMsgType.PING:
                await alive.pong(got.data)
            elif got.type == WSMsgType.TEXT and got.json().get("id") == 1:
                assert got.json()["t"] == "ack", got.json()
                break
        # a client's own ping is answered, and counts as being heard
        await alive.ping(b"hi")
        while (got := await alive.receive(timeout=5)).type != WSMsgType.PONG:
            if got.type == WSMsgType.PING:
                await alive.pong(got.data)
        assert got.data == b"hi"
        await alive.close()
