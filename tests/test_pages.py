"""The demo pages in a real browser against a real ``livecommerce dev``.

Headless Debian chromium driven by Playwright (``executable_path=/usr/bin/chromium``; the
Playwright browser download is never used). One ``livecommerce dev`` process is spawned
from a clean temporary directory with no ``LC_*`` variables, exactly as a newcomer runs
it; the tests open the URLs it prints and use the pages with clicks, asserting the text a
person would see. Screenshots go to ``reports/screenshots/``.

Without chromium (or the playwright package) the tests skip with the reason, except under
``CI=1`` where they fail: CI installs chromium from Debian's packages.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from livecommerce.alerts import ALERTS
from tests.pages_support import SHOTS, Dev
from tests.pages_support import expect as _expect
from tests.pages_support import page as _page

# a whole show in one test, on machines that may be busy: more than the suite's 120 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def ops_page(ctx: Any, dev: Dev) -> Iterator[tuple[Any, list[str]]]:
    """The ops dashboard, opened before the show so its charts record it."""
    errors: list[str] = []
    page = _page(ctx, dev.ops, errors)
    yield page, errors
    page.close()


def _colored_pixels_above_zero(page: Any, canvas_id: str, rgb: tuple[int, int, int]) -> int:
    """Pixels of a series colour above the chart's zero line and below its legend row:
    a line that left zero was drawn."""
    return int(page.evaluate(
        """([id, [r, g, b]]) => { const c = document.getElementById(id), dpr = window.devicePixelRatio || 1;
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0;
             for (let y = Math.ceil(22 * dpr); y < c.height - 22 * dpr; y++)
               for (let x = Math.ceil(44 * dpr); x < c.width; x++) {
                 const i = (y * c.width + x) * 4;
                 if (Math.abs(d[i] - r) < 40 && Math.abs(d[i + 1] - g) < 40 && Math.abs(d[i + 2] - b) < 40) n++;
               }
             return n; }""",
        [canvas_id, list(rgb)],
    ))


def test_host_runs_a_whole_show_and_the_viewer_sees_each_step(ctx: Any, dev: Dev, ops_page: Any, browser: Any) -> None:
    expect = _expect()
    expect(ops_page[0].locator("#status")).to_have_text("all normal")
    errors: list[str] = []
    host = _page(ctx, dev.host, errors)
    viewer = _page(ctx, dev.viewer, errors)

    # the room does not exist yet: the host creates it and goes live
    expect(host.locator("#create-room")).to_be_visible()
    host.fill("#new-title", "Scarves & more")
    host.click("#create-room")
    expect(host.locator("#show-title")).to_have_text("Scarves & more")
    host.click("#go-live")
    expect(host.locator("#room-state")).to_have_text("LIVE")
    expect(viewer.locator("#live-badge")).to_have_text("● LIVE")
    expect(viewer.locator("#title")).to_have_text("Scarves & more")
    expect(viewer.locator("#online")).to_have_text("2")  # the viewer and the host console

    # comments fly across the stream and land in the chat; markup is shown as text
    viewer.fill("#comment-text", "hello from the browser")
    viewer.click("#send")
    expect(viewer.locator("#danmaku .dm", has_text="hello from the browser")).to_be_visible()
    expect(viewer.locator("#chat")).to_contain_text("hello from the browser")
    evil = '<img src=x onerror="window.__xss=1">'
    viewer.fill("#comment-text", evil)
    viewer.click("#send")
    expect(viewer.locator("#chat li .text").last).to_have_text(evil)
    expect(host.locator("#feed")).to_contain_text(evil)
    assert viewer.locator("#chat img, #danmaku img").count() == 0
    assert host.locator("#feed img").count() == 0
    assert viewer.evaluate("window.__xss") is None and host.evaluate("window.__xss") is None

    # likes: the button counts at once, the room's total comes back from the server
    for _ in range(3):
        viewer.click("#like")
    expect(viewer.locator("#likes")).to_have_text("3")
    expect(host.locator("#st-likes")).to_have_text("3")

    # product: create and pin; the viewer's card shows it
    host.fill("#p-name", "Silk scarf")
    host.fill("#p-price", "39.90")
    host.click("#product-form button[type=submit]")
    expect(viewer.locator("#product-name")).to_have_text("Silk scarf")
    expect(host.locator("#pinned")).to_contain_text("Silk scarf")

    # flash sale: create the campaign, start it; the viewer sees the price, stock and Buy
    host.fill("#s-price", "9.90")
    host.fill("#s-stock", "3")
    host.fill("#s-limit", "2")
    host.click("#sale-form button[type=submit]")
    row = host.locator("#campaigns tr").first
    expect(row).to_contain_text("scheduled")
    row.get_by_role("button", name="Start").click()
    expect(row).to_contain_text("live")
    expect(viewer.locator("#sale-state")).to_contain_text("Flash sale live")
    expect(viewer.locator("#stock-text")).to_have_text("3 of 3 left")
    expect(viewer.locator("#product")).to_contain_text("$9.90")
    viewer.screenshot(path=str(SHOTS / "viewer-sale-live.png"), animations="disabled")

    # the same room on a phone (390x844, where live commerce happens): the pinned product and
    # its Buy are on the first screen, over the video's lower edge; nothing runs over the LIVE badge
    phone_ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone = _page(phone_ctx, f"{dev.base}/static/viewer.html?room=demo&token={dev.token('viewer', 'phone1')}", errors)
        expect(phone.locator("#stock-text")).to_have_text("3 of 3 left")
        buy, video = phone.locator("#buy").bounding_box(), phone.locator("#stage").bounding_box()
        assert buy and video and buy["y"] + buy["height"] <= min(844, video["y"] + video["height"]) and buy["y"] >= video["y"], (buy, video)
        badge, lanes = phone.locator("#live-badge").bounding_box(), phone.locator("#danmaku").bounding_box()
        assert badge and lanes and lanes["y"] >= badge["y"] + badge["height"], (badge, lanes)
        card = phone.locator("#product-panel").bounding_box()
        assert card and card["y"] >= badge["y"] + badge["height"], (card, badge)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        phone.screenshot(path=str(SHOTS / "viewer-phone.png"), animations="disabled")
        phone.close()
    finally:
        phone_ctx.close()

    # buy: the reply is shown, the order waits for payment, the stock bar moves
    viewer.click("#buy")
    expect(viewer.locator("#buy-msg")).to_contain_text("Reserved!")
    order = viewer.locator("#orders .order").first
    expect(order).to_contain_text("1 \u00d7 $9.90 = $9.90")
    expect(order).to_contain_text("Reserved · pay within")
    expect(viewer.locator("#stock-text")).to_have_text("2 of 3 left")

    # pay with an Idempotency-Key: paid
    order.get_by_role("button", name="Pay $9.90").click()
    expect(order).to_contain_text("Paid ✓ $9.90")
    expect(viewer.locator("#buy-msg")).to_have_text("")  # "Reserved!" is over once paid
    expect(viewer.locator("#buy")).to_have_text("Buy now")  # 1 of the 2 a person may hold
    expect(host.locator("#st-paid")).to_have_text("1")
    expect(host.locator("#st-gmv")).to_have_text("$9.90")

    # coupons: the host drops, the viewer claims
    host.fill("#c-value", "2")
    host.fill("#c-qty", "5")
    host.click("#coupon-form button[type=submit]")
    coupon = viewer.locator("#coupons .coupon").first
    expect(coupon).to_contain_text("$2.00 off")
    expect(coupon).to_contain_text("5 of 5 left")
    coupon.get_by_role("button", name="Claim").click()
    expect(coupon).to_contain_text("Claimed ✓")

    # a reload shows the room as it is: the stock left, the paid order, the claimed coupon
    viewer.reload()
    expect(viewer.locator("#stock-text")).to_have_text("2 of 3 left")
    expect(viewer.locator("#orders .order").first).to_contain_text("Paid ✓ $9.90")
    expect(viewer.locator("#coupons .coupon").first).to_contain_text("Claimed ✓")

    # gifts: top up test coins, send a rose; the banner and the leaderboard show it
    viewer.click("#topup")
    expect(viewer.locator("#coins")).to_have_text("1,000")
    viewer.click("#open-gifts")  # the gift panel is a bottom sheet
    expect(viewer.locator("#sheet-coins")).to_have_text("1,000")
    viewer.click("#gift-bar button[data-gift=rose]")
    expect(viewer.locator("#gift-lane .gift-banner")).to_contain_text("sent Rose")
    viewer.click("#gift-bar button[data-gift=rose]")  # again within the combo window: one growing combo
    expect(viewer.locator("#gift-lane .gift-banner .combo")).to_have_text("\u00d72")
    expect(viewer.locator("#gift-lane .gift-banner")).to_have_count(1)
    expect(viewer.locator("#coins")).to_have_text("998")
    expect(viewer.locator("#leaderboard")).to_contain_text(viewer.locator("#gift-lane .gift-banner b").first.inner_text())
    viewer.keyboard.press("Escape")
    expect(viewer.locator("#gift-sheet")).to_be_hidden()
    # the danmaku lanes never run over the LIVE badge
    badge, lanes = viewer.locator("#live-badge").bounding_box(), viewer.locator("#danmaku").bounding_box()
    assert badge and lanes and lanes["y"] >= badge["y"] + badge["height"], (badge, lanes)

    # announcement
    host.fill("#a-text", "Next drop in 5 minutes!")
    host.click("#announce-form button[type=submit]")
    expect(viewer.locator("#stage .notice")).to_have_text("📢 Next drop in 5 minutes!")

    # lottery: the host starts a short one, the viewer enters and sees the verifiable result
    host.fill("#l-title", "Scarf lucky bag")
    host.fill("#l-duration", "3")
    host.click("#lottery-form button[type=submit]")
    lot = viewer.locator("#lottery .lottery").first
    expect(lot).to_contain_text("Scarf lucky bag")
    lot.get_by_role("button", name="Enter").click()
    expect(lot).to_contain_text("You're in")
    expect(lot).to_contain_text("Winners: viewer1", timeout=20_000)
    expect(lot).to_contain_text("You won!")
    link = lot.get_by_role("link", name="Verify the draw (public record)")
    href = link.get_attribute("href")
    assert href and href.startswith("/api/v1/lotteries/")
    record = dev.get(href)
    assert record["winners"] == ["viewer1"] and record["seed"] and record["proof"]["entrants"] == ["viewer1"]

    # the viewer's own points and level (awarded by the points worker for the paid order)
    expect(viewer.locator("#level")).to_contain_text("Lv")
    expect(viewer.locator("#points")).not_to_have_text(re.compile("^(\u2013|0)$"))  # a dash until known

    # live stats on the host console
    expect(host.locator("#st-online")).to_have_text("2")
    expect(host.locator("#st-stock")).to_have_text("2")

    viewer.screenshot(path=str(SHOTS / "viewer.png"), animations="disabled")
    host.screenshot(path=str(SHOTS / "host.png"), full_page=True, animations="disabled")

    assert not errors, errors
    host.close()
    viewer.close()


def test_sold_out_is_shown_to_a_late_buyer(ctx: Any, dev: Dev) -> None:
    """A second viewer joins late (the sale is on), buys the last units, and the Buy button
    turns into Sold out."""
    expect = _expect()
    errors: list[str] = []
    tok = dev.token("viewer", "bob")
    viewer = _page(ctx, f"{dev.base}/static/viewer.html?room=demo&token={tok}", errors)
    expect(viewer.locator("#sale-state")).to_contain_text("Flash sale live")
    expect(viewer.locator("#stock-text")).to_have_text("2 of 3 left")
    viewer.click("#buy")
    expect(viewer.locator("#orders .order")).to_have_count(1)
    viewer.click("#buy")
    expect(viewer.locator("#orders .order")).to_have_count(2)
    expect(viewer.locator("#stock-text")).to_have_text("Sold out")
    expect(viewer.locator("#buy")).to_be_disabled()
    viewer.screenshot(path=str(SHOTS / "viewer-sold-out.png"), animations="disabled")
    assert not errors, errors
    viewer.close()


def test_ops_dashboard_shows_rooms_campaigns_charts_and_alerts(dev: Dev, ops_page: Any) -> None:
    """The dashboard was open during the show: its charts drew it."""
    expect = _expect()
    ops, errors = ops_page
    expect(ops.locator("#status")).to_have_text("all normal")
    room = ops.locator("#rooms tr[data-room=demo]")
    expect(room).to_contain_text("Scarves & more")
    expect(room).to_contain_text("3 → 2 → 1")  # funnel: distinct viewers (viewer1, the phone page, the late buyer) → buyers → paid
    camp = ops.locator("#campaigns tr").first
    expect(camp).to_contain_text("sold_out")
    expect(camp).to_contain_text("0 / 3")
    expect(ops.locator("#t-gmv")).to_have_text("$9.90")
    expect(ops.locator("#alerts .alert")).to_have_count(len(ALERTS))
    expect(ops.locator("#alerts")).to_contain_text("Redis and SQL agree")
    # live charts: online rose above zero, gifts and comments were counted, stock burnt down
    blue, orange, green = (0x4F, 0xC3, 0xF7), (0xFF, 0xB7, 0x4D), (0x81, 0xC7, 0x84)
    assert _colored_pixels_above_zero(ops, "c-online", blue) > 20, "online chart shows no viewers"
    assert _colored_pixels_above_zero(ops, "c-rates", blue) > 20, "comments/s chart is flat"
    assert _colored_pixels_above_zero(ops, "c-rates", orange) > 20, "gifts/s chart is flat"
    assert _colored_pixels_above_zero(ops, "c-gmv", green) > 20, "GMV chart is flat"
    assert _colored_pixels_above_zero(ops, "c-burn", blue) > 20, "burn-down shows no stock"
    assert _colored_pixels_above_zero(ops, "c-funnel", green) > 20, "funnel has no paid bar"
    camp.get_by_role("button", name="Check orders").click()
    expect(ops.locator("#inventory")).to_contain_text("conserved=true")
    ops.screenshot(path=str(SHOTS / "ops.png"), full_page=True, animations="disabled")
    # the same alerts are Prometheus gauges
    with urllib.request.urlopen(dev.base + "/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'lc_alert_active{alert="stock_drift"} 0.0' in metrics
    assert not errors, errors


def test_the_host_ends_the_show_and_its_commerce_closes(ctx: Any, dev: Dev, ops_page: Any) -> None:
    """Last of the show (the late buyer and the dashboard came first): ending the room ends
    the viewer's show and the host gets the summary; the dashboard then shows the peak as the
    last show's (viewers still there may outnumber it: M2 7/7's "peak 7 while 40 connected")."""
    expect = _expect()
    errors: list[str] = []
    host = _page(ctx, dev.host, errors)
    viewer = _page(ctx, dev.viewer, errors)
    expect(host.locator("#room-state")).to_have_text("LIVE")
    expect(viewer.locator("#live-badge")).to_have_text("● LIVE")
    expect(viewer.locator("#topup")).to_be_visible()  # `livecommerce dev` turns test coins on
    host.click("#end-show")  # the first tap only arms it: ending cannot be undone
    expect(host.locator("#end-show")).to_have_text("Tap again to end the show")
    expect(viewer.locator("#live-badge")).to_have_text("● LIVE")
    host.click("#end-show")
    expect(viewer.locator("#live-badge")).to_have_text("ENDED")
    expect(viewer.locator("#sale-state")).to_have_text("Flash sale ended")  # the end closed the sale
    expect(host.locator("#summary")).to_contain_text("comments")
    ops, ops_errors = ops_page
    expect(ops.locator("#rooms tr[data-room=demo]")).to_contain_text("(last show)")
    assert not errors and not ops_errors, (errors, ops_errors)
    host.close()
    viewer.close()


def test_api_docs_page_lists_the_operations(ctx: Any, dev: Dev) -> None:
    expect = _expect()
    errors: list[str] = []
    page = _page(ctx, dev.base + "/api/v1/docs", errors)
    op = page.locator("details.op", has_text="Pay a reserved order")  # not /payments, which the path also prefixes
    expect(op).to_contain_text("Pay a reserved order")
    op.locator("summary").click()
    expect(op).to_contain_text("Idempotency-Key")
    page.fill("#filter", "lotteries")
    expect(page.locator("details.op")).to_have_count(4)
    page.screenshot(path=str(SHOTS / "api-docs.png"), animations="disabled")
    page.goto(dev.base + "/")
    expect(page.locator("h1")).to_have_text("livecommerce")
    assert not errors, errors
    page.close()


def test_moderators_work_a_room_from_the_host_console_and_ops_read_the_audit_log(ctx: Any, dev: Dev) -> None:
    """A room of its own (the demo show has ended): a viewer reports a comment, the host
    deletes it from the reports queue, mutes and kicks from the feed's comment menu, turns on
    slow mode; the viewers' pages apply each step; the ops dashboard's audit log lists them."""
    expect = _expect()
    errors: list[str] = []
    room = "modroom"
    host = _page(ctx, f"{dev.base}/static/host.html?room={room}&token={dev.token('host', 'host1', room)}", errors)
    expect(host.locator("#create-room")).to_be_visible()
    host.fill("#new-title", "Moderated show")
    host.click("#create-room")
    expect(host.locator("#show-title")).to_have_text("Moderated show")
    troll = _page(ctx, f"{dev.base}/static/viewer.html?room={room}&token={dev.token('viewer', 'troll')}", errors)
    fan = _page(ctx, f"{dev.base}/static/viewer.html?room={room}&token={dev.token('viewer', 'fan1')}", errors)
    expect(troll.locator("#me")).to_contain_text("troll")
    expect(fan.locator("#me")).to_contain_text("fan1")

    # a viewer reports a comment with a reason; the host's queue shows it and deletes it
    troll.fill("#comment-text", "cheap followers at spam.example")
    troll.click("#send")
    line = fan.locator("#chat li", has_text="cheap followers")
    expect(line).to_be_visible()
    line.locator("button.report").click()
    line.locator("select.report-reason").select_option("spam")
    line.get_by_role("button", name="Send report").click()
    expect(line).to_contain_text("reported ✓")
    report = host.locator("#reports li.report").first
    expect(report).to_contain_text("spam · troll · reported by fan1")
    expect(report).to_contain_text("cheap followers")
    report.get_by_role("button", name="Delete comment").click()
    expect(fan.locator("#chat li", has_text="cheap followers")).to_have_count(0)
    expect(troll.locator("#chat li", has_text="cheap followers")).to_have_count(0)
    expect(host.locator("#feed li.deleted", has_text="cheap followers")).to_be_visible()
    expect(host.locator("#reports")).to_contain_text("No open reports.")

    # mute from the feed's comment menu: the viewer is told, and told again when commenting
    troll.fill("#comment-text", "you cannot stop me")
    troll.click("#send")
    host.locator("#feed li", has_text="you cannot stop me").get_by_role("button", name="Mute 10 min").click()
    expect(troll.locator("#chat-rules")).to_contain_text("you are muted until")
    troll.fill("#comment-text", "hello?")
    troll.click("#send")
    expect(troll.locator(".toast", has_text="You are muted until")).to_be_visible()
    expect(host.locator("#m-out")).to_contain_text("troll (muted)")

    # slow mode from the panel: the viewer's composer says so, a second comment waits
    host.select_option("#m-slow", "10")
    host.click("#m-apply")
    expect(fan.locator("#chat-rules")).to_have_text("slow mode: one comment per 10 s")
    fan.fill("#comment-text", "first")
    fan.click("#send")
    expect(fan.locator("#chat li", has_text="first")).to_be_visible()
    fan.fill("#comment-text", "second")
    fan.click("#send")
    expect(fan.locator(".toast", has_text="Slow mode: wait")).to_be_visible()

    # kick: the viewer's page is closed with 4403 and does not come back
    host.locator("#feed li", has_text="you cannot stop me").get_by_role("button", name="Kick").click()
    expect(troll.locator("#room-state")).to_have_text("kicked")
    expect(troll.locator(".toast", has_text="You were kicked from this room")).to_be_visible()
    host.screenshot(path=str(SHOTS / "host-moderation.png"), full_page=True, animations="disabled")

    # ops: the audit log, filtered to the room
    ops = _page(ctx, dev.ops, errors)
    ops.fill("#audit-room", room)
    ops.click("#audit-form button[type=submit]")
    rows = ops.locator("#audit tr")
    expect(rows.first).to_contain_text("kick")
    for action in ("comment.delete", "mute", "chat", "kick"):
        expect(ops.locator("#audit")).to_contain_text(action)
    expect(ops.locator("#audit tr", has_text="comment.delete")).to_contain_text("report")
    ops.screenshot(path=str(SHOTS / "ops-audit.png"), full_page=True, animations="disabled")
    assert not errors, errors
    for p in (host, troll, fan, ops):
        p.close()
