"""The order-tracking page (a viewer on a 390x844 phone) and the shipping console (host and
ops on a desktop) in a real browser against a real ``livecommerce dev`` of this checkout:
the viewer adds an address, the host ships the paid order from the console, the viewer's
page shows the parcel, ops mark it delivered, the viewer confirms receipt. Same harness as
``tests/pages_support.py`` (Debian chromium through Playwright, no console error allowed).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.pages_support import SHOTS, Dev
from tests.pages_support import expect as _expect
from tests.pages_support import page as _page
from tests.waiting import wait_until_sync

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PHONE = {"width": 390, "height": 844}


def test_a_viewer_tracks_an_order_the_host_ships_and_ops_deliver(dev: Dev, browser: Any) -> None:
    expect = _expect()
    viewer, host, ops = dev.tokens["viewer"], dev.tokens["host"], dev.tokens["ops"]
    sid = f"s{uuid.uuid4().hex[:8]}"
    dev.call("POST", "/api/v1/campaigns", ops, {"id": sid, "room": "demo", "product_id": "mug", "price": 1500, "stock": 5,
                                                 "per_user_limit": 3, "duration_s": 600})
    order = dev.call("POST", f"/api/v1/sales/{sid}/buy", viewer, {"qty": 2, "request_id": uuid.uuid4().hex[:12]})["order_id"]
    dev.call("POST", f"/api/v1/orders/{order}/pay", viewer, {})
    wait_until_sync(lambda: dev.call("GET", f"/api/v1/orders/{order}", viewer)["order"], until=lambda o: o and o["state"] == "paid",
                    timeout=20, what="the order paid in SQL")
    errors: list[str] = []

    # the viewer on a phone: the order waits for shipping; they add an address (a bad phone first)
    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    desk = browser.new_context(viewport={"width": 1360, "height": 900})
    try:
        # the live room links to the orders page, the host console to the shipping console
        live = _page(phone, f"{dev.base}/static/viewer.html?room=demo&token={viewer}", errors)
        live.get_by_role("link", name="My orders").click()
        expect(live).to_have_url(re.compile(r"/static/orders\.html\?room=demo&token="))
        live.close()
        hc = _page(desk, f"{dev.base}/static/host.html?room=demo&token={host}", errors)
        hc.get_by_role("link", name="Orders to ship").click()
        expect(hc).to_have_url(re.compile(r"/static/shipping\.html\?room=demo&token="))
        hc.close()
        mine = _page(phone, f"{dev.base}/static/orders.html?room=demo&token={viewer}", errors)
        card = mine.locator(f"article[data-order='{order}']")
        expect(card.locator(".state")).to_have_text("paid, not shipped yet")
        form = mine.locator("#addr-form")
        form.locator("input[name=name]").fill("Li Wei")
        form.locator("input[name=phone]").fill("call me")
        form.locator("input[name=line1]").fill("1 Nanjing Rd")
        form.locator("input[name=city]").fill("Shanghai")
        form.locator("button[type=submit]").click()
        expect(mine.locator(".toast.error")).to_contain_text("phone")
        form.locator("input[name=phone]").fill("+86 138 0000 0000")
        form.locator("button[type=submit]").click()
        expect(mine.locator("#addresses li")).to_contain_text("1 Nanjing Rd")
        expect(mine.locator("#addresses li .pill.ok")).to_have_text("default")
        assert mine.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing wider than the phone

        # the host's console: the order with the ship-to; a partial parcel, then the rest
        console = _page(desk, f"{dev.base}/static/shipping.html?room=demo&token={host}", errors)
        row = console.locator(f"article[data-order='{order}']")
        expect(row.locator(".ship-to")).to_contain_text("Li Wei")
        row.locator("input[name=carrier]").fill("SF Express")
        row.locator("input[name=tracking]").fill("SF0001")
        row.locator("input[name='qty-mug']").fill("1")
        row.locator("button[type=submit]").click()
        expect(console.locator(".toast.ok")).to_contain_text(f"{order}.s1")
        expect(row.locator(".parcel")).to_have_count(1)  # a partial parcel: still to ship, one unit owed
        expect(row.locator("input[name='qty-mug']")).to_have_value("1")
        console.screenshot(path=str(SHOTS / "shipping-console.png"), full_page=True)
        row.locator("input[name=carrier]").fill("ZTO")
        row.locator("input[name=tracking]").fill("ZT0002")
        row.locator("button[type=submit]").click()
        expect(console.locator(f"article[data-order='{order}']")).to_have_count(0)  # nothing owed: off the list

        # the viewer's page shows both parcels on their way (pushed, and read again)
        expect(card.locator(".parcel")).to_have_count(2)
        expect(card.locator(".state")).to_have_text("on its way")
        expect(card.locator(".parcel .track").first).to_have_text("SF0001")

        # ops mark both delivered from the "on the way" tab; the viewer confirms receipt
        opsc = _page(desk, f"{dev.base}/static/shipping.html?token={ops}&state=shipped", errors)
        orow = opsc.locator(f"article[data-order='{order}']")
        orow.get_by_role("button", name="Mark delivered").first.click()
        expect(opsc.locator(".toast.ok").last).to_contain_text("others are on their way")
        # the row is drawn again with the first parcel delivered: click the other parcel's button,
        # not the first one's before it is replaced (CI saw that click lost once)
        expect(orow.get_by_role("button", name="Mark delivered")).to_have_count(1)
        orow.get_by_role("button", name="Mark delivered").first.click()
        expect(opsc.locator(".toast.ok").last).to_contain_text("Delivered")
        expect(card.locator(".state")).to_have_text("delivered", timeout=20_000)
        mine.screenshot(path=str(SHOTS / "orders-phone.png"), full_page=True)
        card.get_by_role("button", name="Confirm receipt").click()
        expect(card.locator(".state")).to_have_text("completed", timeout=20_000)
        assert dev.call("GET", f"/api/v1/orders/{order}", viewer)["fulfilment"]["progress"] == "completed"
    finally:
        phone.close()
        desk.close()
    assert not errors, errors
