"""Red packets in the pages, headless chromium on ``livecommerce dev`` (this checkout's code):
the host console drops a packet (desktop), a viewer on a phone (390x844) sees it under the
stage, grabs it with a thumb-sized button, commenting a password packet's password grabs it
too, and the end's summary (best luck, a link to the verifiable record) appears once the
keeper ends it. Uses the harness of ``tests/pages_support.py``."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.pages_support import expect as expect_
from tests.pages_support import page as _page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[1]


def _post(base: str, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def test_the_host_drops_a_red_packet_and_a_phone_viewer_grabs_it(browser: Any, ctx: Any, dev: Any) -> None:
    expect = expect_()
    room, host_user = "rp", "rphost"
    host_tok = dev.token("host", host_user, room)
    ops_tok = dev.token("ops", "ops9")
    assert _post(dev.base, "/api/v1/rooms", host_tok, {"id": room, "title": "Red packet night"})[0] == 201
    assert _post(dev.base, f"/api/v1/rooms/{room}/live", host_tok, {})[0] == 200
    assert _post(dev.base, f"/api/v1/wallets/{host_user}/topup", ops_tok, {"amount": 500, "idempotency_key": "f1"})[0] == 201
    errors: list[str] = []
    host = _page(ctx, f"{dev.base}/static/host.html?room={room}&token={host_tok}", errors)
    expect(host.locator("#rp-balance")).to_have_text("500")

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        viewer = _page(phone, f"{dev.base}/static/viewer.html?room={room}&token={dev.token('viewer', 'thumb')}", errors)
        expect(viewer.locator("#live-badge")).to_have_text("● LIVE")
        expect(viewer.locator("#redpackets")).to_be_hidden()

        # the host drops 60 coins in 1 share from the console
        host.fill("#rp-amount", "60")
        host.fill("#rp-count", "1")
        host.fill("#rp-greeting", "Lucky you")
        host.click("#redpacket-form button[type=submit]")
        expect(host.locator("#rp-balance")).to_have_text("440")
        expect(host.locator("#redpackets li")).to_contain_text("60 coins / 1 shares")

        # the phone viewer sees it under the stage, in the viewport, and grabs it
        card = viewer.locator(".rp", has_text="Lucky you")
        expect(card).to_be_visible()
        grab = card.locator(".rp-grab")
        box, btn = card.bounding_box(), grab.bounding_box()
        assert box is not None and btn is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and btn["height"] >= 44, (box, btn)
        assert viewer.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
        grab.tap()
        expect(card.locator(".rp-mine")).to_have_text("You got 60 coins")
        expect(viewer.locator("#coins")).to_have_text("60")
        # the keeper ends it (its only share is taken): the summary with best luck and the record
        expect(card.locator(".rp-summary")).to_contain_text("1/1 grabbed · best luck thumb (60)")
        expect(host.locator("#redpackets li")).to_contain_text("ended: 1/1 grabbed, 0 refunded")
        href = card.locator(".rp-summary a").get_attribute("href")
        assert href and href.startswith("/api/v1/redpackets/")

        # a password packet: the viewer's button comments the password, which grabs
        host.fill("#rp-amount", "30")
        host.fill("#rp-count", "3")
        host.fill("#rp-password", "red lantern")
        host.fill("#rp-greeting", "Password time")
        host.click("#redpacket-form button[type=submit]")
        pw = viewer.locator(".rp", has_text="Password time")
        pw.locator(".rp-grab", has_text="red lantern").tap()
        expect(pw.locator(".rp-mine")).to_contain_text("You got")
        expect(viewer.locator("#chat")).to_contain_text("red lantern")
        viewer.screenshot(path=str(ROOT / "reports" / "screenshots" / "redpackets-phone.png"))
        viewer.close()
    finally:
        phone.close()
    host.close()
    assert errors == []
