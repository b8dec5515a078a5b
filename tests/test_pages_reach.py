"""Follower reach in the pages, in headless Debian chromium against ``livecommerce dev`` (the
harness of ``tests/pages_support.py``; this module starts the dev process from this checkout's
code): the host publishes a schedule from the console; a viewer on a phone-sized page follows
the host and sets a reminder; the host goes live; the viewer's bell counts the ``host.live``
notice, the list shows it, Mark all read clears the count."""

from __future__ import annotations

from typing import Any

from tests.pages_support import SHOTS, Dev
from tests.pages_support import expect as _expect
from tests.pages_support import page as _page
from tests.waiting import wait_until_sync


def test_a_follower_on_a_phone_hears_the_host_go_live_and_reads_the_inbox(browser: Any, dev: Dev) -> None:
    expect = _expect()
    errors: list[str] = []
    room = "reachroom"
    desk = browser.new_context(viewport={"width": 1360, "height": 900})
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        host = _page(desk, f"{dev.base}/static/host.html?room={room}&token={dev.token('host', 'host7', room)}", errors)
        expect(host.locator("#create-room")).to_be_visible()
        host.fill("#new-title", "Tea tasting")
        host.click("#create-room")
        expect(host.locator("#show-title")).to_have_text("Tea tasting")
        host.fill("#sc-title", "Spring tea")
        host.fill("#sc-products", "p1, p2")
        host.click("#schedule-form button[type=submit]")
        row = host.locator("#schedules li", has_text="Spring tea")
        expect(row).to_contain_text("p1, p2")
        expect(row).to_contain_text("scheduled")

        viewer = _page(phone, f"{dev.base}/static/viewer.html?room={room}&token={dev.token('viewer', 'fan7')}", errors)
        expect(viewer.locator("#me")).to_contain_text("fan7")
        expect(viewer.locator("#bell-count")).to_be_hidden()
        expect(viewer.locator("#follow")).to_have_text("Follow")
        viewer.click("#follow")
        expect(viewer.locator("#follow")).to_have_text("Following ✓")
        upcoming = viewer.locator("#upcoming li", has_text="Spring tea")
        upcoming.get_by_role("button", name="Remind me").click()
        expect(upcoming.get_by_role("button", name="Reminder set ✓")).to_be_visible()
        # the follow reaches fan_members through the profiles worker: wait for it, then go live
        wait_until_sync(lambda: dev.get("/api/v1/hosts/host7/fans")["followers"] == 1, timeout=30, interval=0.2,
                        what="the follow projected by the profiles worker")
        host.click("#go-live")
        expect(viewer.locator("#bell-count")).to_have_text("1")
        expect(viewer.locator(".toast", has_text="host7 is live: Tea tasting")).to_be_visible()
        viewer.reload()  # a new connection: the count comes back in the frame after the welcome
        expect(viewer.locator("#me")).to_contain_text("fan7")
        expect(viewer.locator("#bell-count")).to_have_text("1")
        viewer.click("#bell")
        item = viewer.locator("#notice-list li.unread", has_text="host7 is live: Tea tasting")
        expect(item).to_be_visible()
        box = viewer.locator("#notices").bounding_box()
        assert box is not None and box["width"] <= 390, box  # the inbox fits the phone's width
        viewer.screenshot(path=str(SHOTS / "viewer-notifications-phone.png"), animations="disabled")
        viewer.click("#notices-read")
        expect(viewer.locator("#bell-count")).to_be_hidden()
        expect(viewer.locator("#notice-list li", has_text="host7 is live")).not_to_have_class("unread")
        viewer.click("#notices-close")
        expect(viewer.locator("#notices")).to_be_hidden()
        host.screenshot(path=str(SHOTS / "host-schedule.png"), full_page=True, animations="disabled")
        assert not errors, errors
    finally:
        desk.close()
        phone.close()
