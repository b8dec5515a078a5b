"""`livecommerce dev` from a clean directory with no services configured (the real command)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.waiting import wait_until
from tests.wsclient import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
async def test_dev_starts_with_no_services_and_a_viewer_sees_its_own_comment(tmp_path: Path):
    exe = Path(sys.executable).with_name("livecommerce")
    assert exe.exists(), "the console script is installed with the package"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env["LC_LOG_JSON"] = "0"
    proc = await asyncio.create_subprocess_exec(
        str(exe), "dev", "--port", str(port), "--room", "demo",
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        out = ""
        url = None
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and url is None:
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 5)
            except TimeoutError:
                continue
            if not line:
                pytest.fail(f"livecommerce dev exited early:\n{out}")
            out += line.decode()
            m = re.search(r"websocket:\s+(ws://\S+)", out)
            if m and "(embedded)" in out:
                url = m.group(1)
        assert url, f"no websocket URL printed:\n{out}"
        drain = asyncio.ensure_future(proc.stdout.read())
        token = re.search(r"token=([\w.-]+)", url).group(1)  # type: ignore[union-attr]
        base = url.split("?")[0]

        async def connected() -> Client | None:  # the server may still be binding
            try:
                return await Client.connect(base, "demo", token, fmt="json")
            except OSError:
                return None

        c = await wait_until(connected, interval=0.2, what="a WebSocket connection to `livecommerce dev`")
        assert c is not None
        assert c.welcome["d"]["user"] == "viewer1"
        await c.send("comment", text="hello from a newcomer")
        e = await c.next_event(10)
        while e["t"] != "comment":
            e = await c.next_event(10)
        assert e["d"]["text"] == "hello from a newcomer"
        await c.close()
        assert (tmp_path / ".livecommerce").is_dir()
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 20)
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
