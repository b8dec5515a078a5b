"""The viewer page on a node that takes no payments (issue 19 part 7): no provider and the dev
``/pay`` off (``LC_DEV_PAY=0``): ``welcome.payments`` is ``none``, and an order, in the cart
sheet and in My orders, has no Pay button but a line saying payments are not configured
(``tests/test_pages_pay.py`` pays through a provider); and the wording of a checkout refused
for a moved price. Headless Debian chromium on a 390x844
phone against ``livecommerce dev`` of this checkout (``tests/pages_support.py``); no console
error."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pages_support import PHONE, Dev, expect, page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ROOM = "nopayroom"
NONE = "Payments are not configured on this server."


@pytest.fixture(scope="module")
def dev_env() -> dict[str, str]:
    return {"LC_DEV_PAY": "0"}


def test_an_order_on_a_node_without_payments_offers_no_pay(browser: Any, dev: Dev) -> None:
    ex = expect()
    errors: list[str] = []
    tok = dev.token("host", "nopayhost", ROOM)
    dev.call("POST", "/api/v1/rooms", tok, {"id": ROOM, "title": "No pay"})
    dev.call("POST", f"/api/v1/rooms/{ROOM}/live", tok)
    dev.call("POST", "/api/v1/products", tok, {"id": "cup", "name": "Paper cup", "price": 300, "stock": 10})
    dev.call("PUT", f"/api/v1/rooms/{ROOM}/bag", tok, {"product_ids": ["cup"]})
    phone = browser.new_context(**PHONE)
    try:
        v = page(phone, f"{dev.base}/static/viewer.html?room={ROOM}&token={dev.token('viewer', 'nopayfan')}", errors)
        ex(v.locator("#live-badge")).to_have_text("● LIVE")
        v.click("#open-bag")
        v.locator("#bag-sheet li[data-product=cup] button.open-product").click()
        ps = v.locator("#product-sheet")
        ps.locator("#add-to-cart").click()
        ex(v.locator("#cart-count")).to_have_text("1")
        ps.locator(".sheet-close").click()
        v.click("#open-cart")
        cart = v.locator("#cart-sheet")
        cart.locator("#checkout").click()
        order = cart.locator(".cart-order")
        ex(order).to_contain_text("Reserved · pay within")
        ex(order.locator(".no-pay")).to_have_text(NONE)
        ex(order.locator("button.pay")).to_have_count(0)
        oid = order.get_attribute("data-order")
        mine = v.locator(f"#orders .order[data-order='{oid}']")
        ex(mine.locator(".no-pay")).to_have_text(NONE)
        ex(mine.locator("button.pay")).to_have_count(0)
        ex(mine.get_by_role("button", name="Cancel")).to_be_visible()  # cancelling still works
        # a checkout refused for a moved price (a race between the cart's read and the hold, so
        # the page's own wording is read from its refusal text) names the line in a sentence
        said = v.evaluate("""async () => {
            const { Shop } = await import("/static/shop.js");
            const { ApiError } = await import("/static/common.js");
            const shop = Object.create(Shop.prototype);
            shop.cart = { lines: [{ product_id: "hoodie", sku: "s1", name: "Fleece hoodie", attrs: { colour: "blue", size: "M" } }] };
            return shop.refusal(new ApiError(409, "price_changed", "hoodie/s1: the price changed", { product_id: "hoodie", sku: "s1" }));
        }""")
        assert said == "The price of Fleece hoodie (blue · M) changed: check the new price and check out again. Nothing was ordered.", said
    finally:
        phone.close()
    assert not errors, errors
