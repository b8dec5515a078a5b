"""Follower reach in the pages, in headless Debian chromium against ``livecommerce dev`` (the
harness of ``tests/test_pages.py``; this module starts the dev process from this checkout's
code): the host publishes a schedule from the console; a viewer on a phone-sized page follows
the host and sets a reminder; the host goes live; the viewer's bell counts the ``host.live``
notice, the list shows it, Mark all read clears the count."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_pages import (  # noqa: F401  (fixtures)
    SHOTS,
    Dev,
    _expect,
    _free_port,
    _page,
    _stop,
    _unavailable,
    browser,
    dev,
)
from tests.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dev_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``livecommerce dev`` from this checkout (``python -m livecommerce.cli``: the installed
    command may import another checkout's pages)."""
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    cwd = tmp_path_factory.mktemp("dev")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_LOG_JSON="0", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "livecommerce.cli", "dev", "--port", str(_free_port()), "--room", "demo"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc, cwd
    finally:
        _stop(proc)


def test_a_follower_on_a_phone_hears_the_host_go_live_and_reads_the_inbox(browser: Any, dev: Dev) -> None:  # noqa: F811
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
