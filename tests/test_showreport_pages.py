"""The show report as the host console's end card, headless chromium on ``livecommerce dev``
(this checkout's code): a viewer watches, buys and pays, the host ends the show from a phone
(390x844) and the end card shows the report in human units ("42 min"-style duration, GMV in
the currency, rates in percent) without overflowing the screen; the desktop console shows the
same card after a reload, and its Earnings panel the host's statement with a CSV download.
Uses the harness of ``tests/pages_support.py``."""

from __future__ import annotations

import json
import re
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


def _stat(page: Any, label: str) -> str:
    """The figure above ``label`` on the end card."""
    return str(page.locator("#ec-stats div", has=page.locator("span", has_text=re.compile(rf"^{re.escape(label)}( \(.*\))?$"))).locator("b")
               .inner_text())


def test_the_host_ends_a_show_on_a_phone_and_the_end_card_shows_the_report(browser: Any, ctx: Any, dev: Any) -> None:
    expect = expect_()
    room, host_user = "report", "rephost"
    host_tok, ops_tok, fan_tok = dev.token("host", host_user, room), dev.token("ops", "ops7"), dev.token("viewer", "fan7")
    assert _post(dev.base, "/api/v1/rooms", host_tok, {"id": room, "title": "Report night"})[0] == 201
    assert _post(dev.base, f"/api/v1/rooms/{room}/live", host_tok, {})[0] == 200
    assert _post(dev.base, "/api/v1/products", ops_tok, {"id": "rep-tea", "name": "Tea", "price": 1250})[0] in (200, 201)
    st, sale = _post(dev.base, "/api/v1/campaigns", ops_tok, {"id": "rep-sale", "room": room, "product_id": "rep-tea", "price": 1250,
                                                            "stock": 5, "per_user_limit": 2, "duration_s": 600})
    assert st == 201, sale
    errors: list[str] = []
    viewer = _page(ctx, f"{dev.base}/static/viewer.html?room={room}&token={fan_tok}", errors)
    expect(viewer.locator("#live-badge")).to_have_text("● LIVE")
    st, order = _post(dev.base, "/api/v1/sales/rep-sale/buy", fan_tok, {"qty": 2, "request_id": "rep-1"})
    assert st == 201, order
    assert _post(dev.base, f"/api/v1/orders/{order['order_id']}/pay", fan_tok, {})[1]["outcome"] == "paid"

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        host = _page(phone, f"{dev.base}/static/host.html?room={room}&token={host_tok}", errors)
        expect(host.locator("#room-state")).to_have_text("LIVE")
        expect(host.locator("#end-card")).to_be_hidden()
        host.click("#end-show")  # two taps: ending cannot be undone
        host.click("#end-show")
        expect(host.locator("#end-card")).to_be_visible()
        expect(host.locator("#ec-stats")).to_contain_text("viewers")
        assert re.fullmatch(r"\d+ s|\d+ min", _stat(host, "duration")), _stat(host, "duration")
        assert _stat(host, "viewers") == "1"
        # the paid order reaches SQL through the orders worker within moments: Refresh until it shows
        for _ in range(40):
            if _stat(host, "GMV") == "¥25.00":
                break
            host.click("#ec-refresh")
            host.wait_for_timeout(250)
        assert (_stat(host, "GMV"), _stat(host, "orders paid"), _stat(host, "refund rate")) == ("¥25.00", "1", "0.0%")
        assert _stat(host, "viewers → buyers") == "100.0%"
        expect(host.locator("#ec-products")).to_contain_text("Tea · 2 sold · ¥25.00")
        expect(host.locator("#ec-gifters")).to_contain_text("No gifts.")
        card = host.locator("#end-card").bounding_box()
        assert card is not None and card["x"] >= 0 and card["x"] + card["width"] <= 390, card  # fits the phone
        assert host.evaluate("document.documentElement.scrollWidth") <= 390
        host.close()
    finally:
        phone.close()

    desktop = _page(ctx, f"{dev.base}/static/host.html?room={room}&token={host_tok}", errors)  # after a reload
    expect(desktop.locator("#end-card")).to_be_visible()
    expect(desktop.locator("#ec-stats")).to_contain_text("¥25.00")
    # the Earnings panel: the host's statement (no gifts in this show: all zero) and its CSV
    expect(desktop.locator("#e-stats")).to_contain_text("closing")
    with desktop.expect_download() as got:
        desktop.click("#e-csv")
    lines = Path(got.value.path()).read_text().splitlines()
    assert lines[0].startswith("ts_ms,time_utc,kind,") and lines[1].split(",")[2] == "opening" and lines[-1].split(",")[2] == "closing"
    desktop.close()
    viewer.close()
    assert not errors, errors
