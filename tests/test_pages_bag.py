"""The shop in the pages (issue 19 part 7, issue 21's phone layout), in headless Debian
chromium against ``livecommerce dev`` from this checkout (the harness of
``tests/pages_support.py``), at a phone's 390x844 and a desktop's 1280x800:

* the host console keeps the room's product list (小黄车) on the server: add, reorder, mark
  the item being explained (讲解中), remove; a second console tab sees each change as it
  happens and a reload shows the same list (nothing in localStorage);
* the viewer's phone layout: the product card and its Buy over the video on the first
  screen, nothing over the LIVE badge; the product list, a product's SKU picker and the gift
  panel are bottom sheets that open and close; the list follows ``bag.changed`` live; the
  SKU picker disables sold-out options and shows the chosen SKU's price and stock;
* the ops dashboard: the charts' time range is in each series request; payment callbacks
  are listed with their signature check (one signed with the dev process's secret, one not).

Screenshots go to ``reports/screenshots/`` (the README's come from here: ``docs/img/``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from livecommerce.payments import SIGNATURE_HEADER, sign_header
from tests.pages_support import DESK, PHONE, SHOTS, Dev, box
from tests.pages_support import expect as _expect
from tests.pages_support import page as _page

ROOM = "bagroom"
HOST = "host9"
SECRET = "pages-test-webhook-secret-0123456789abcdef"  # the dev process verifies callbacks with it

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def dev_env() -> dict[str, str]:
    """A payment webhook secret (no provider: callbacks are still verified and listed)."""
    return {"LC_PAYMENT_WEBHOOK_SECRET": SECRET}


@pytest.fixture(scope="module")
def show(dev: Dev) -> dict[str, str]:
    """A live room of host9 with two products: a tee in three SKUs (one sold out) and a mug."""
    tok = dev.token("host", HOST, ROOM)
    assert dev.request("POST", "/api/v1/rooms", tok, {"id": ROOM, "title": "Tee time"})[0] == 201
    assert dev.request("POST", f"/api/v1/rooms/{ROOM}/live", tok)[0] == 200
    tee = {"id": "tee", "name": "Cotton tee", "skus": [
        {"attrs": {"colour": "red", "size": "M"}, "price": 1999, "stock": 5},
        {"attrs": {"colour": "red", "size": "L"}, "price": 2099, "stock": 0},
        {"attrs": {"colour": "blue", "size": "M"}, "price": 2199, "stock": 3},
    ]}
    assert dev.request("POST", "/api/v1/products", tok, tee)[0] == 201
    assert dev.request("POST", "/api/v1/products", tok, {"id": "mug", "name": "Tea mug", "price": 990, "stock": 10})[0] == 201
    return {"host": tok, "host_url": f"{dev.base}/static/host.html?room={ROOM}&token={tok}"}


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


def test_the_host_keeps_the_rooms_list_on_the_server(browser: Any, dev: Dev, show: dict[str, str]) -> None:
    expect = _expect()
    errors: list[str] = []
    desk, phone = browser.new_context(**DESK), browser.new_context(**PHONE)
    try:
        host = _page(desk, show["host_url"], errors)
        expect(host.locator("#bag-pick option[value=tee]")).to_be_attached()
        host.select_option("#bag-pick", "tee")
        host.click("#bag-add")
        expect(host.locator("#bag li.bag-item")).to_have_count(1)
        host.select_option("#bag-pick", "mug")
        host.click("#bag-add")
        expect(host.locator("#bag li.bag-item")).to_have_count(2)
        expect(host.locator("#bag-add")).to_be_disabled()  # both products are listed

        # a second console tab (on a phone) sees each change as it happens, and makes its own
        other = _page(phone, show["host_url"], errors)
        expect(other.locator("#bag li.bag-item")).to_have_count(2)
        host.locator("#bag li[data-product=mug] button.up").click()
        expect(other.locator("#bag li.bag-item").first).to_have_attribute("data-product", "mug")
        other.locator("#bag li[data-product=tee] button.explain").click()
        expect(host.locator("#bag li.explaining")).to_have_attribute("data-product", "tee")
        expect(host.locator("#bag li[data-product=tee]")).to_contain_text("讲解中")
        expect(host.locator("#bag li[data-product=tee] button.explain")).to_have_text("Stop explaining")

        # the server keeps it: the API answers it, a reload shows it, the browser stores nothing
        bag = dev.get(f"/api/v1/rooms/{ROOM}/bag")
        assert [i["product_id"] for i in bag["items"]] == ["mug", "tee"] and bag["explaining"] == "tee", bag
        host.reload()
        expect(host.locator("#bag li.bag-item")).to_have_count(2)
        expect(host.locator("#bag li.bag-item").first).to_have_attribute("data-product", "mug")
        expect(host.locator("#bag li.explaining")).to_have_attribute("data-product", "tee")
        assert host.evaluate("Object.keys(localStorage)") == []
        # the flash-sale picker offers the listed products
        expect(host.locator("#s-product option[value=tee]")).to_be_attached()
        assert other.evaluate("document.documentElement.scrollWidth") <= 390  # the console fits a phone
        host.screenshot(path=str(SHOTS / "host-bag.png"), animations="disabled")
        other.locator("#bag-panel").scroll_into_view_if_needed()
        other.screenshot(path=str(SHOTS / "host-bag-phone.png"), animations="disabled")

        # remove from one tab: gone in the other; add back from the picker
        other.locator("#bag li[data-product=mug] button.remove").click()
        expect(host.locator("#bag li.bag-item")).to_have_count(1)
        host.select_option("#bag-pick", "mug")
        host.click("#bag-add")
        expect(other.locator("#bag li.bag-item")).to_have_count(2)
        assert [i["product_id"] for i in dev.get(f"/api/v1/rooms/{ROOM}/bag")["items"]] == ["tee", "mug"]
        assert not errors, errors
    finally:
        desk.close()
        phone.close()


def test_a_viewer_on_a_phone_shops_from_bottom_sheets(browser: Any, dev: Dev, show: dict[str, str]) -> None:
    expect = _expect()
    errors: list[str] = []
    put = dev.request("PUT", f"/api/v1/rooms/{ROOM}/bag", show["host"], {"product_ids": ["tee", "mug"], "explaining": "tee"})
    assert put[0] == 200, put
    phone = browser.new_context(**PHONE)
    try:
        v = _page(phone, f"{dev.base}/static/viewer.html?room={ROOM}&token={dev.token('viewer', 'shopper1')}", errors)
        expect(v.locator("#live-badge")).to_have_text("● LIVE")
        # the first screen: the item being explained over the video, with its Buy
        expect(v.locator("#product-panel")).to_contain_text("Cotton tee")
        expect(v.locator("#product-panel")).to_contain_text("讲解中")
        expect(v.locator("#buy-list")).to_be_visible()
        buy, stage, badge, card = box(v, "#buy-list"), box(v, "#stage"), box(v, "#live-badge"), box(v, "#product-panel")
        assert buy["y"] + buy["height"] <= 844, buy  # no scrolling to buy
        assert stage["y"] <= card["y"] and card["y"] + card["height"] <= stage["y"] + stage["height"], (card, stage)  # over the video
        for sel in ("#product-panel", "#danmaku", "#gift-lane"):
            assert not _overlap(box(v, sel), badge), f"{sel} runs over the LIVE badge"
        assert v.evaluate("document.documentElement.scrollWidth") <= 390
        v.screenshot(path=str(SHOTS / "viewer-phone-explaining.png"), animations="disabled")

        # the product list: a bottom sheet, the explained item marked; it follows the host live
        expect(v.locator("#bag-count")).to_have_text("2")
        v.click("#open-bag")
        sheet = v.locator("#bag-sheet")
        expect(sheet).to_be_visible()
        expect(sheet.locator("li.bag-item")).to_have_count(2)
        expect(sheet.locator("li.explaining")).to_have_attribute("data-product", "tee")
        expect(sheet.locator("li.explaining")).to_contain_text("讲解中")
        assert box(v, "#bag-sheet")["y"] + box(v, "#bag-sheet")["height"] <= 844 + 1
        v.screenshot(path=str(SHOTS / "viewer-phone-bag.png"), animations="disabled")
        assert dev.request("PUT", f"/api/v1/rooms/{ROOM}/bag/explaining", show["host"], {"product_id": "mug"})[0] == 200
        expect(sheet.locator("li.explaining")).to_have_attribute("data-product", "mug")
        sheet.locator(".sheet-close").click()
        expect(sheet).to_be_hidden()
        expect(v.locator("#product-panel")).to_contain_text("Tea mug")  # the card follows the marker

        # a product: one chip row per option; sold-out SKUs cannot be picked; the SKU's price
        v.click("#open-bag")
        sheet.locator("li[data-product=tee] button.open-product").click()
        ps = v.locator("#product-sheet")
        expect(ps).to_be_visible()
        expect(sheet).to_be_hidden()  # one sheet at a time
        expect(ps.locator("#sku-price")).to_have_text("$19.99 \u2013 $21.99")
        expect(ps.locator(".opt[data-option=size] .chip[data-value=L]")).to_be_disabled()  # red-L: 0 left, no blue-L
        ps.locator(".opt[data-option=colour] .chip[data-value=blue]").click()
        ps.locator(".opt[data-option=size] .chip[data-value=M]").click()
        expect(ps.locator("#sku-price")).to_have_text("$21.99")
        expect(ps.locator("#sku-stock")).to_have_text("3 left")
        ps.locator(".opt[data-option=colour] .chip[data-value=red]").click()
        expect(ps.locator("#sku-price")).to_have_text("$19.99")
        expect(ps.locator("#sku-stock")).to_have_text("5 left")
        expect(ps.locator(".opt[data-option=size] .chip[data-value=L]")).to_be_disabled()
        expect(ps.locator(".opt[data-option=colour] .chip[data-value=red]")).to_have_attribute("aria-pressed", "true")
        v.screenshot(path=str(SHOTS / "viewer-phone-sku.png"), animations="disabled")
        v.keyboard.press("Escape")
        expect(ps).to_be_hidden()

        # the gift panel: a bottom sheet too; a tap above it closes it and Buy is there again
        v.click("#open-gifts")
        gifts = v.locator("#gift-sheet")
        expect(gifts).to_be_visible()
        expect(gifts.locator("button[data-gift=rose]")).to_be_visible()
        assert box(v, "#gift-sheet")["y"] > box(v, "#stage")["y"] + 100  # the video stays in view above it
        v.screenshot(path=str(SHOTS / "viewer-phone-gifts.png"), animations="disabled")
        v.mouse.click(195, 200)
        expect(gifts).to_be_hidden()
        expect(v.locator("#buy-list")).to_be_visible()
        assert not errors, errors
    finally:
        phone.close()


def test_a_viewer_on_a_desktop_opens_the_same_sheets(browser: Any, dev: Dev, show: dict[str, str]) -> None:
    expect = _expect()
    errors: list[str] = []
    desk = browser.new_context(**DESK)
    try:
        v = _page(desk, f"{dev.base}/static/viewer.html?room={ROOM}&token={dev.token('viewer', 'shopper2')}", errors)
        expect(v.locator("#buy-list")).to_be_visible()
        buy = box(v, "#buy-list")
        assert buy["y"] + buy["height"] <= 800, buy
        assert not _overlap(box(v, "#danmaku"), box(v, "#live-badge"))
        v.click("#open-bag")
        expect(v.locator("#bag-sheet li.bag-item")).to_have_count(2)
        v.locator("#bag-sheet li[data-product=tee] button.open-product").click()
        ps = v.locator("#product-sheet")
        ps.locator(".opt[data-option=colour] .chip[data-value=blue]").click()
        ps.locator(".opt[data-option=size] .chip[data-value=M]").click()
        expect(ps.locator("#sku-price")).to_have_text("$21.99")
        v.screenshot(path=str(SHOTS / "viewer-desktop-sku.png"), animations="disabled")
        ps.locator(".sheet-close").click()
        expect(ps).to_be_hidden()
        v.click("#open-gifts")
        expect(v.locator("#gift-sheet")).to_be_visible()
        v.keyboard.press("Escape")
        expect(v.locator("#gift-sheet")).to_be_hidden()
        v.screenshot(path=str(SHOTS / "viewer-desktop.png"), animations="disabled")
        assert not errors, errors
    finally:
        desk.close()


def test_ops_picks_the_charts_range_and_reads_payment_callbacks(browser: Any, dev: Dev) -> None:
    expect = _expect()
    errors: list[str] = []
    # two callbacks: one signed with the webhook secret (verified; its intent is unknown), one not
    body = json.dumps({"id": "evt_pages_1", "type": "payment.succeeded", "created": int(time.time()),
                       "data": {"intent_id": "pi_x", "order_id": "o-nowhere", "amount": 1999, "currency": "CNY"}}).encode()
    signed = dev.request("POST", "/api/v1/payments/webhook", None, raw=body,
                   headers={SIGNATURE_HEADER: sign_header(SECRET, int(time.time()), body)})
    forged = dev.request("POST", "/api/v1/payments/webhook", None, raw=body,
                   headers={SIGNATURE_HEADER: sign_header("not-the-secret-" * 3, int(time.time()), body)})
    assert signed[0] == 400 and forged[0] == 401, (signed, forged)
    ops_url = f"{dev.base}/static/ops.html?token={dev.token('ops', 'ops9')}"
    for size, name in ((DESK, "ops-payments"), (PHONE, "ops-phone")):
        ctx = browser.new_context(**size)
        try:
            ops = _page(ctx, ops_url, errors)
            expect(ops.locator("#status")).to_have_text("all normal")
            rows = ops.locator("#callbacks tr")
            expect(rows).to_have_count(2)
            expect(rows.nth(0)).to_contain_text("✗ bad_signature")
            expect(rows.nth(0)).to_contain_text("refused")
            expect(rows.nth(1)).to_contain_text("✓ verified")
            expect(rows.nth(1)).to_contain_text("payment.succeeded")
            expect(rows.nth(1)).to_contain_text("o-nowhere")
            expect(ops.locator("#shipments")).to_contain_text("Nothing to ship")
            # the range is in the requests (and the page's URL)
            with ops.expect_request(lambda r: "/api/v1/ops/series" in r.url and "range_s=3600" in r.url):
                ops.click("#range button[data-range='3600']")
            expect(ops.locator("#range button[data-range='3600']")).to_have_attribute("aria-pressed", "true")
            assert "range=3600" in ops.url
            with ops.expect_request(lambda r: "/api/v1/ops/series" in r.url and "range_s=86400" in r.url):
                ops.click("#range button[data-range='86400']")
            ops.reload()
            expect(ops.locator("#range button[data-range='86400']")).to_have_attribute("aria-pressed", "true")
            with ops.expect_request(lambda r: "/api/v1/ops/series" in r.url and "range_s=600" in r.url):
                ops.click("#range button[data-range='600']")
            if name == "ops-phone":
                assert ops.evaluate("document.documentElement.scrollWidth") <= 390 + 1
            ops.screenshot(path=str(SHOTS / f"{name}.png"), full_page=name == "ops-payments", animations="disabled")
        finally:
            ctx.close()
    # a range the picker does not offer is a 400 with a reason, not a 500
    bad = dev.request("GET", "/api/v1/ops/series?range_s=7", dev.token("ops", "ops9"))
    assert bad[0] == 400 and bad[1]["error"]["code"] == "invalid", bad
    assert not errors, errors
