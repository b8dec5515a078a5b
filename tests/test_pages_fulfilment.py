"""The order-tracking page (a viewer on a 390x844 phone) and the shipping console (host and
ops on a desktop) in a real browser against a real ``livecommerce dev`` of this checkout:
the viewer adds an address, the host ships the paid order from the console, the viewer's
page shows the parcel, ops mark it delivered, the viewer confirms receipt. Same harness as
``tests/test_pages.py`` (Debian chromium through Playwright, no console error allowed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.test_pages import ARGS, CHROMIUM, SHOTS, _expect, _free_port, _page, _stop, _unavailable
from tests.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
PHONE = {"width": 390, "height": 844}


@dataclass
class Dev:
    base: str
    tokens: dict[str, str]

    def call(self, method: str, path: str, token: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()!r}") from None


@pytest.fixture(scope="module")
def dev() -> Iterator[Dev]:
    """``python -m livecommerce.cli dev`` of this checkout, from a clean directory."""
    reason = _unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    cwd = Path(os.environ.get("TMPDIR", "/tmp")) / f"lc-ship-{uuid.uuid4().hex[:8]}"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LC_LOG_JSON="0", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "livecommerce.cli", "dev", "--port", str(_free_port()), "--room", "demo"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        out, toks = "", {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(toks) < 3:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"livecommerce dev exited early:\n{out}")
            out += line
            m = re.match(r"\s+(viewer|host|ops):\s+(\S+)$", line)
            if m:
                toks[m.group(1)] = m.group(2)
            b = re.match(r"\s+viewer page:\s+(http://[^/]+)", line)
            if b:
                base = b.group(1)
        assert len(toks) == 3, out
        drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=(cwd / "dev.log").open("w"))

        def ready() -> bool:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until_sync(ready, timeout=60, interval=0.2, what="/readyz of `livecommerce dev`")
        SHOTS.mkdir(parents=True, exist_ok=True)
        yield Dev(base, toks)
    finally:
        _stop(proc)
    drain.wait(5)


@pytest.fixture(scope="module")
def browser(dev: Dev) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


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
