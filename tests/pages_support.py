"""The one start-up of the page tests: ``livecommerce dev`` of this checkout, headless Debian
chromium through Playwright, and the console-error watch.

Headless Debian chromium driven by Playwright (``executable_path=/usr/bin/chromium``; the
Playwright browser download is never used). One ``livecommerce dev`` process per test module
is spawned from a clean temporary directory with no ``LC_*`` variables, exactly as a newcomer
runs it, from this checkout's code (``python -m`` with the checkout first on the path: the
installed command may import another checkout). A module adds environment variables by
overriding the ``dev_env`` fixture. Screenshots go to ``reports/screenshots/``.

Without chromium (or the playwright package) the tests skip with the reason, except under
``CI=1`` where they fail: CI installs chromium from Debian's packages.

The fixtures (``dev_env``, ``dev_proc``, ``browser``, ``dev``, ``ctx``, all per module)
come as a plugin of ``tests/conftest.py``; a module imports the helpers (``Dev``, ``page``,
``expect``, ``box``, ``SHOTS``, ``PHONE``, ``DESK``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "reports" / "screenshots"
CHROMIUM = os.environ.get("LC_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 20_000  # generous: CI machines may be busy
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESK = {"viewport": {"width": 1280, "height": 800}}


def unavailable() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).exists():
        return f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a person stops it (the embedded Redis goes with it); kill if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LC_")}


@dataclass
class Dev:
    """The running dev process: the page URLs and tokens it printed, its directory."""

    base: str
    viewer: str
    host: str
    ops: str
    cwd: Path
    proc: subprocess.Popen[str]
    tokens: dict[str, str] = field(default_factory=dict)  # the printed viewer/host/ops tokens

    def token(self, role: str, user: str, room: str | None = None) -> str:
        """Another token from the dev process's secret (``livecommerce token`` in its directory)."""
        cmd = [sys.executable, "-m", "livecommerce.cli", "token", "--role", role, "--user", user]
        if room:
            cmd += ["--room", room]
        env = _clean_env()
        env["PYTHONPATH"] = str(ROOT)
        return subprocess.run(cmd, cwd=self.cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()

    def request(self, method: str, path: str, token: str | None = None, body: Any = None,
                headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, Any]:
        """One HTTP call: (status, decoded body), 4xx/5xx included."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json", **(headers or {})}
        if token:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def call(self, method: str, path: str, token: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None) -> Any:
        """One HTTP call that must succeed (2xx): its decoded body."""
        status, got = self.request(method, path, token, body, headers)
        if not 200 <= status < 300:
            raise AssertionError(f"{method} {path}: {status} {got!r}")
        return got

    def get(self, path: str, token: str | None = None) -> Any:
        return self.call("GET", path, token)


@pytest.fixture(scope="module")
def dev_env() -> dict[str, str]:
    """Extra environment of the module's dev process (override it in a module)."""
    return {}


@pytest.fixture(scope="module")
def dev_proc(tmp_path_factory: pytest.TempPathFactory, dev_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """``livecommerce dev`` spawned from a clean directory (the browser starts meanwhile)."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    cwd = tmp_path_factory.mktemp("dev")
    env = _clean_env()
    env.update(LC_LOG_JSON="0", PYTHONPATH=str(ROOT), **dev_env)
    proc = subprocess.Popen([sys.executable, "-m", "livecommerce.cli", "dev", "--port", str(free_port()), "--room", "demo"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc, cwd
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser(dev_proc: Any) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def dev(dev_proc: tuple[subprocess.Popen[str], Path], browser: Any) -> Iterator[Dev]:
    """The running dev process: the URLs and tokens it printed, once it answers /readyz."""
    proc, cwd = dev_proc
    assert proc.stdout is not None
    out = ""
    urls: dict[str, str] = {}
    tokens: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (len(urls) < 3 or len(tokens) < 3):
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            pytest.fail(f"livecommerce dev exited early:\n{out}")
        out += line
        for name in ("viewer page", "host console", "ops dashboard"):
            m = re.match(rf"\s+{name}:\s+(\S+)", line)
            if m:
                urls[name] = m.group(1)
        t = re.match(r"\s+(viewer|host|ops):\s+(\S+)$", line)
        if t:
            tokens[t.group(1)] = t.group(2)
    assert len(urls) == 3 and len(tokens) == 3, f"the page URLs and tokens were not printed:\n{out}"
    base = re.match(r"(http://[^/]+)", urls["viewer page"]).group(1)  # type: ignore[union-attr]
    # drain the log so the process never blocks on a full pipe; it stays in the tmp dir
    drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=(cwd / "dev.log").open("w"))

    def ready() -> bool:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_until_sync(ready, timeout=60, interval=0.2, what="/readyz of `livecommerce dev` to answer 200")
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield Dev(base, urls["viewer page"], urls["host console"], urls["ops dashboard"], cwd, proc, tokens)
    stop(proc)
    drain.wait(5)


@pytest.fixture(scope="module")
def ctx(browser: Any) -> Iterator[Any]:
    """One browser context for the module's pages (each page has its own token in its URL)."""
    c = browser.new_context(viewport={"width": 1360, "height": 900})
    yield c
    c.close()


def console_error(msg: Any, url: str, errors: list[str]) -> None:
    """A console error is a page error (a style or script the CSP blocked, a missing file
    such as the favicon), except an API call the server refused on purpose (a 4xx the page
    shows as a message: a sold-out buy, a duplicate claim)."""
    if msg.type != "error":
        return
    where = (msg.location or {}).get("url", "")
    if "/api/" in where and "status of 4" in msg.text:
        return
    errors.append(f"{url.split('?')[0]}: console: {msg.text} ({where})")


def page(ctx: Any, url: str, errors: list[str]) -> Any:
    """A new page of ``ctx`` at ``url``: its uncaught errors and console errors go to ``errors``."""
    p = ctx.new_page()
    p.set_default_timeout(TIMEOUT_MS)
    p.on("pageerror", lambda e: errors.append(f"{url.split('?')[0]}: {e}"))
    p.on("console", lambda m: console_error(m, url, errors))
    p.goto(url)
    return p


def expect() -> Any:
    """Playwright's ``expect`` with the page tests' timeout."""
    from playwright.sync_api import expect as expect_

    expect_.set_options(timeout=TIMEOUT_MS)
    return expect_


def box(p: Any, sel: str) -> dict[str, float]:
    """The bounding box of ``sel`` on page ``p`` (it must have one)."""
    b = p.locator(sel).bounding_box()
    assert b, f"{sel} has no box"
    return dict(b)
