"""The viewer's cart sheet against the real cart (issue 19 part 7, the contract of
docs/commerce.md "Cart and checkout"), on a 390x844 phone in headless Debian chromium, with
``livecommerce dev`` of this checkout (the harness of ``tests/pages_support.py``):

* a host lists a hoodie in two SKUs (colour x size, their own prices and stock) and socks,
  goes live and drops a shop coupon; the viewer claims it, picks a SKU in the SKU picker,
  adds 2, adds the other SKU and the socks, opens the cart sheet: the lines with their
  prices and the subtotal; changes a quantity with the line's + and removes a line; the
  coupon is proposed by default with its discount and the total; checks out, sees the order
  reserved with its amount, pays it (the dev ``/pay`` the page offers) and sees it paid, and
  paid in order tracking; the API agrees (the order paid for subtotal - discount, the stock
  down by the units bought);
* a refusal: another buyer takes the last unit of a line (through the API) while it sits in
  the viewer's open cart; Checkout names the product, the line shows why, nothing is reserved;
* a room coupon not claimed yet is offered in the cart with what it would save, and claimed
  there: then proposed by default, the total down by its discount.

Every step waits on what the page shows; no console error and no uncaught page error.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.pages_support import PHONE, SHOTS, Dev, box, expect, page
from tests.waiting import wait_until_sync

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
ROOM = "cartroom"
HOST = "carthost"
BUYER = "cartfan"
TIMES, MINUS = "\u00d7", "\u2212"  # as the page writes them


def _stock(dev: Dev, pid: str) -> dict[str, int]:
    """Each SKU's available units as the catalogue shows them, by its attrs joined."""
    got = dev.get(f"/api/v1/products/{pid}")
    return {"/".join(s["attrs"].values()) or s["id"]: int(s["stock"]) for s in got["skus"]}


@pytest.fixture(scope="module")
def show(dev: Dev) -> dict[str, str]:
    """A live room with a hoodie in two SKUs (blue M $28.00 x 3, red S $25.00 x 4), socks
    ($9.00 x 5), both in the room's list, and a shop coupon ($10 off $50+) dropped."""
    tok = dev.token("host", HOST, ROOM)
    dev.call("POST", "/api/v1/rooms", tok, {"id": ROOM, "title": "Hoodie hour"})
    dev.call("POST", f"/api/v1/rooms/{ROOM}/live", tok)
    dev.call("POST", "/api/v1/products", tok, {"id": "hoodie", "name": "Fleece hoodie", "skus": [
        {"attrs": {"colour": "blue", "size": "M"}, "price": 2800, "stock": 3},
        {"attrs": {"colour": "red", "size": "S"}, "price": 2500, "stock": 4},
    ]})
    dev.call("POST", "/api/v1/products", tok, {"id": "socks", "name": "Wool socks", "price": 900, "stock": 5})
    dev.call("PUT", f"/api/v1/rooms/{ROOM}/bag", tok, {"product_ids": ["hoodie", "socks"], "explaining": "hoodie"})
    dev.call("POST", f"/api/v1/rooms/{ROOM}/coupons", tok, {"id": "shop10", "kind": "full_reduction", "threshold": 5000,
                                                            "value": 1000, "quantity": 20, "expires_in_s": 3600})
    return {"host": tok}


def _thumb_sized(p: Any, sheet: str) -> None:
    """Every control of the open sheet at least 44 px high, nothing wider than the sheet, no
    line's text cut off."""
    small = p.evaluate("""(sel) => [...document.querySelectorAll(`${sel} button, ${sel} select, ${sel} a`)]
        .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().height < 44)
        .map((e) => `${e.textContent.trim() || e.getAttribute('aria-label')}: ${e.getBoundingClientRect().height}px`)""", sheet)
    assert small == [], small
    wide = p.evaluate("""(sel) => { const s = document.querySelector(sel);
        return [s, ...s.querySelectorAll('li, .row, b')].filter((e) => e.scrollWidth > e.clientWidth + 1)
          .map((e) => `${e.tagName}.${e.className}: ${e.scrollWidth} > ${e.clientWidth}`); }""", sheet)
    assert wide == [], wide
    assert box(p, sheet)["width"] <= 390


def _line(sheet: Any, pid: str, attrs: str | None = None) -> Any:
    line = sheet.locator(f"li.cart-line[data-product={pid}]")
    return line.filter(has_text=attrs) if attrs else line


def test_a_phone_viewer_fills_the_cart_checks_out_with_the_proposed_coupon_and_pays(
        browser: Any, dev: Dev, show: dict[str, str]) -> None:
    ex = expect()
    errors: list[str] = []
    before = {"hoodie": _stock(dev, "hoodie"), "socks": _stock(dev, "socks")}
    assert before["hoodie"] == {"blue/M": 3, "red/S": 4} and list(before["socks"].values()) == [5], before
    token = dev.token("viewer", BUYER)
    phone = browser.new_context(**PHONE)
    try:
        v = page(phone, f"{dev.base}/static/viewer.html?room={ROOM}&token={token}", errors)
        ex(v.locator("#live-badge")).to_have_text("● LIVE")

        # the shop coupon dropped in the room: claimed from the room's coupons
        drop = v.locator("#coupons .coupon[data-drop=shop10]")
        ex(drop).to_contain_text("$10.00 off $50.00+")
        drop.locator("button.claim").click()
        ex(drop.locator(".claimed")).to_have_text("Claimed ✓")

        # the bag sheet, the hoodie's SKU picker: blue M, 2 of them
        ex(v.locator("#bag-count")).to_have_text("2")
        v.click("#open-bag")
        bag = v.locator("#bag-sheet")
        ex(bag.locator("li.bag-item")).to_have_count(2)
        bag.locator("li[data-product=hoodie] button.open-product").click()
        ps = v.locator("#product-sheet")
        ex(ps.locator("#sku-price")).to_have_text("$25.00 \u2013 $28.00")
        ps.locator(".opt[data-option=colour] .chip[data-value=blue]").click()
        ps.locator(".opt[data-option=size] .chip[data-value=M]").click()
        ex(ps.locator("#sku-price")).to_have_text("$28.00")
        ex(ps.locator("#sku-stock")).to_have_text("3 left")
        ps.get_by_role("button", name="one more").click()
        ex(ps.locator("#sku-qty")).to_have_text("2")
        ex(ps.locator("#buy-now")).to_have_text("Buy now $56.00")
        _thumb_sized(v, "#product-sheet")
        v.screenshot(path=str(SHOTS / "viewer-phone-sku-qty.png"), animations="disabled")
        ps.locator("#add-to-cart").click()
        ex(ps.locator("#sku-msg")).to_have_text(f"Added 2 {TIMES} blue · M to your cart")
        ex(v.locator("#cart-count")).to_have_text("2")
        # the other SKU, one of it
        # red comes in S only: picking red drops M (its chip stays enabled, marked "other")
        ps.locator(".opt[data-option=colour] .chip[data-value=red]").click()
        size_m = ps.locator(".opt[data-option=size] .chip[data-value=M]")
        ex(size_m).to_have_attribute("aria-pressed", "false")
        ex(size_m).to_have_class(re.compile(r"\bother\b"))
        ex(size_m).to_be_enabled()
        ex(ps.locator("#sku-stock")).to_have_text("Choose size")
        ps.locator(".opt[data-option=size] .chip[data-value=S]").click()
        ex(ps.locator("#sku-price")).to_have_text("$25.00")
        ex(ps.locator("#sku-qty")).to_have_text("1")
        ps.locator("#add-to-cart").click()
        ex(ps.locator("#sku-msg")).to_have_text(f"Added 1 {TIMES} red · S to your cart")
        ex(v.locator("#cart-count")).to_have_text("3")
        # back to the list, the socks (one SKU: chosen for the viewer)
        ps.locator("#product-back").click()
        bag.locator("li[data-product=socks] button.open-product").click()
        ex(ps.locator("#sku-price")).to_have_text("$9.00")
        ex(ps.locator("#sku-stock")).to_have_text("5 left")
        ps.locator("#add-to-cart").click()
        ex(ps.locator("#sku-msg")).to_have_text(f"Added 1 {TIMES} Wool socks to your cart")
        ex(v.locator("#cart-count")).to_have_text("4")
        ps.locator(".sheet-close").click()
        ex(ps).to_be_hidden()

        # the cart sheet: three lines, their prices, the subtotal
        v.click("#open-cart")
        cart = v.locator("#cart-sheet")
        ex(cart).to_be_visible()
        ex(cart.locator("li.cart-line")).to_have_count(3)
        blue, red, socks = _line(cart, "hoodie", "blue · M"), _line(cart, "hoodie", "red · S"), _line(cart, "socks")
        ex(blue).to_contain_text("Fleece hoodie")
        ex(blue.locator(".price-now")).to_have_text("$28.00")
        ex(blue.locator(".line-qty")).to_have_text("2")
        ex(red.locator(".price-now")).to_have_text("$25.00")
        ex(socks.locator(".price-now")).to_have_text("$9.00")
        ex(cart.locator("#cart-subtotal")).to_have_text("$90.00")  # 2 x 28 + 25 + 9
        # one more pair of socks with the line's +, then the red hoodie out
        socks.get_by_role("button", name="one more").click()
        ex(socks.locator(".line-qty")).to_have_text("2")
        ex(cart.locator("#cart-subtotal")).to_have_text("$99.00")
        red.get_by_role("button", name="Remove").click()
        ex(cart.locator("li.cart-line")).to_have_count(2)
        ex(cart.locator("#cart-subtotal")).to_have_text("$74.00")
        ex(v.locator("#cart-count")).to_have_text("4")
        # the claimed coupon is proposed by default: its discount and the total
        ex(cart.locator("#cart-coupon")).to_have_value("proposed")
        ex(cart.locator("#cart-coupon option:checked")).to_contain_text(f"Best: {MINUS}$10.00")
        ex(cart.locator("#cart-discount")).to_have_text(f"{MINUS}$10.00")
        ex(cart.locator("#cart-total")).to_have_text("$64.00")
        ex(cart.locator("#checkout")).to_have_text("Checkout $64.00")
        v.screenshot(path=str(SHOTS / "viewer-phone-cart.png"), animations="disabled")
        _thumb_sized(v, "#cart-sheet")

        # checkout: the order reserved with its amount, the cart empty
        cart.locator("#checkout").click()
        order = cart.locator(".cart-order")
        ex(order).to_have_count(1)
        ex(order).to_contain_text("Reserved · pay within")
        ex(order).to_contain_text("4 items · $74.00 $64.00")
        ex(cart.locator("#cart-empty")).to_be_visible()
        ex(v.locator("#cart-count")).to_be_hidden()
        oid = order.get_attribute("data-order")
        assert oid and oid.startswith("cart."), oid
        held = dev.get(f"/api/v1/orders/{oid}", token)
        assert held["cart"]["state"] == "reserved" and held["cart"]["amount"] == 6400, held
        # paying: the page's Pay (the dev /pay of `livecommerce dev`)
        order.get_by_role("button", name="Pay $64.00").click()
        ex(order.locator(".pill.ok")).to_have_text("Paid ✓ $64.00")
        ex(order).to_contain_text("Paid: the host ships it")
        v.screenshot(path=str(SHOTS / "viewer-phone-cart-paid.png"), animations="disabled")
        _thumb_sized(v, "#cart-sheet")
        ex(v.locator(f"#orders .order[data-order='{oid}'] .pill.ok")).to_have_text("Paid ✓ $64.00")

        # the API agrees: paid, subtotal - discount; the stock went down by the units bought
        got = wait_until_sync(lambda: dev.get(f"/api/v1/orders/{oid}", token), until=lambda o: o["order"] and o["order"]["state"] == "paid",
                              timeout=20, what="the cart order paid in SQL")
        assert got["order"]["amount"] == 6400 and got["order"]["qty"] == 4, got["order"]
        assert sorted((ln["product_id"], ln["qty"], ln["unit_price"]) for ln in got["lines"]) == [("hoodie", 2, 2800), ("socks", 2, 900)]
        assert _stock(dev, "hoodie") == {"blue/M": 1, "red/S": 4}
        assert _stock(dev, "socks") == {k: n - 2 for k, n in before["socks"].items()}

        # order tracking: the page's link, the order paid there
        order.get_by_role("link", name="Track the order").click()
        ex(v).to_have_url(re.compile(r"/static/orders\.html\?room=cartroom&token="))
        card = v.locator(f"article[data-order='{oid}']")
        ex(card.locator(".state")).to_have_text("paid, not shipped yet")
        ex(card.locator(".head b")).to_have_text("$64.00")
        assert v.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        phone.close()
    assert not errors, errors


def test_a_line_sold_out_under_the_viewer_is_named_and_nothing_is_reserved(
        browser: Any, dev: Dev, show: dict[str, str]) -> None:
    ex = expect()
    errors: list[str] = []
    token, rival = dev.token("viewer", "cartfan2"), dev.token("viewer", "rival")
    left = _stock(dev, "hoodie")["blue/M"]
    (socks,) = _stock(dev, "socks").values()
    assert left >= 1, left
    mine = lambda: dev.get("/api/v1/orders?limit=20", token)["orders"]  # noqa: E731
    assert mine() == []
    phone = browser.new_context(**PHONE)
    try:
        v = page(phone, f"{dev.base}/static/viewer.html?room={ROOM}&token={token}", errors)
        ex(v.locator("#live-badge")).to_have_text("● LIVE")
        v.click("#open-bag")
        v.locator("#bag-sheet li[data-product=hoodie] button.open-product").click()
        ps = v.locator("#product-sheet")
        ps.locator(".opt[data-option=colour] .chip[data-value=blue]").click()
        ps.locator(".opt[data-option=size] .chip[data-value=M]").click()
        ex(ps.locator("#sku-stock")).to_have_text(f"{left} left")
        for _ in range(left - 1):
            ps.get_by_role("button", name="one more").click()
        ex(ps.locator("#sku-qty")).to_have_text(str(left))
        ps.locator("#add-to-cart").click()
        ex(v.locator("#cart-count")).to_have_text(str(left))
        ps.locator("#product-back").click()
        v.locator("#bag-sheet li[data-product=socks] button.open-product").click()
        ex(ps.locator("#sku-stock")).to_have_text(f"{socks} left")
        ps.locator("#add-to-cart").click()
        ex(v.locator("#cart-count")).to_have_text(str(left + 1))
        v.keyboard.press("Escape")
        ex(ps).to_be_hidden()
        v.click("#open-cart")
        cart = v.locator("#cart-sheet")
        blue = _line(cart, "hoodie", "blue · M")
        ex(blue.locator(".line-qty")).to_have_text(str(left))
        ex(blue.locator(".line-problem")).to_have_count(0)
        ex(cart.locator("#checkout")).to_be_enabled()

        # another buyer takes the last units through the API while the cart sheet is open
        sku = next(s["id"] for s in dev.get("/api/v1/products/hoodie")["skus"] if s["attrs"] == {"colour": "blue", "size": "M"})
        dev.call("POST", f"/api/v1/rooms/{ROOM}/cart/items", rival, {"product_id": "hoodie", "sku": sku, "qty": left})
        took = dev.call("POST", f"/api/v1/rooms/{ROOM}/cart/checkout", rival, {}, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert took["amount"] == 2800 * left, took
        assert _stock(dev, "hoodie")["blue/M"] == 0

        # the viewer's checkout is refused: the message names the product, the line says why
        cart.locator("#checkout").click()
        ex(cart.locator("#cart-msg")).to_have_text("Sold out: Fleece hoodie (blue · M). Nothing was ordered.")
        ex(blue.locator(".line-problem")).to_have_text("Sold out")
        ex(blue).to_have_class(re.compile(r"\bproblem\b"))
        ex(cart.locator(".cart-order")).to_have_count(0)
        # the checkout takes the whole cart: it waits until the refused line is changed or removed
        ex(cart.locator("#checkout")).to_be_disabled()
        ex(cart.locator("#cart-blocked")).to_be_visible()
        ex(cart.locator("#cart-subtotal")).to_have_text("$9.00")
        v.screenshot(path=str(SHOTS / "viewer-phone-cart-refused.png"), animations="disabled")
        # nothing reserved: no order of the viewer's, the socks' stock untouched, the lines kept
        assert mine() == []
        assert list(_stock(dev, "socks").values()) == [socks]
        view = dev.get(f"/api/v1/rooms/{ROOM}/cart", token)
        assert [(ln["product_id"], ln["qty"], ln["problem"]) for ln in view["lines"]] == [("hoodie", left, "sold_out"), ("socks", 1, None)], view
        # the sold-out line out: the rest can be checked out
        blue.get_by_role("button", name="Remove").click()
        ex(cart.locator("li.cart-line")).to_have_count(1)
        ex(cart.locator("#cart-blocked")).to_have_count(0)
        ex(cart.locator("#checkout")).to_be_enabled()
        ex(cart.locator("#checkout")).to_have_text("Checkout $9.00")
    finally:
        phone.close()
    assert not errors, errors


def test_a_room_coupon_not_claimed_yet_is_offered_in_the_cart_and_claimed_there(
        browser: Any, dev: Dev, show: dict[str, str]) -> None:
    ex = expect()
    errors: list[str] = []
    dev.call("POST", "/api/v1/products", show["host"], {"id": "scarf", "name": "Silk scarf", "price": 6000, "stock": 5})
    token = dev.token("viewer", "cartclaimer")
    dev.call("POST", f"/api/v1/rooms/{ROOM}/cart/items", token, {"product_id": "scarf"})  # $60: over the coupon's $50
    before = dev.get(f"/api/v1/rooms/{ROOM}/cart", token)["coupons"]
    assert before["proposed"] == [] and [(c["drop_id"], c["saves"]) for c in before["claimable"]] == [("shop10", 1000)]
    phone = browser.new_context(**PHONE)
    try:
        v = page(phone, f"{dev.base}/static/viewer.html?room={ROOM}&token={token}", errors)
        ex(v.locator("#live-badge")).to_have_text("● LIVE")
        ex(v.locator("#cart-count")).to_have_text("1")
        v.click("#open-cart")
        cart = v.locator("#cart-sheet")
        offer = cart.locator(".claim-offer[data-drop=shop10]")
        ex(offer).to_contain_text("claim it and save $10.00")
        ex(cart.locator("#cart-total")).to_have_text("$60.00")
        _thumb_sized(v, "#cart-sheet")
        offer.get_by_role("button", name="Claim").click()
        # claimed: no longer offered, proposed by default, the total down by its discount
        ex(cart.locator(".claim-offer")).to_have_count(0)
        ex(cart.locator("#cart-coupon")).to_have_value("proposed")
        ex(cart.locator("#cart-discount")).to_have_text(f"{MINUS}$10.00")
        ex(cart.locator("#cart-total")).to_have_text("$50.00")
        after = dev.get(f"/api/v1/rooms/{ROOM}/cart", token)["coupons"]
        assert after["discount"] == 1000 and len(after["proposed"]) == 1 and after["claimable"] == []
    finally:
        phone.close()
    assert not errors, errors
