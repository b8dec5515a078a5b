"""The locustfile cannot rot: short headless locust runs (a subprocess) against a real node.

The mixed scenario must finish with no failure, its event latencies apart from the request
table (``<csv>_events.csv``) and the business ledger clean; a run with the wrong secret must
count every refused socket as a ``connect`` failure at once, not after a welcome timeout.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("locust") is None and not (Path(sys.executable).parent / "locust").exists(),
                                reason="locust not installed (pip install -e '.[dev]')")


async def _locust(node: Any, tmp: Path, secret: str, *, users: int, seconds: int, env: dict[str, str] | None = None,
                  room: str = "lt") -> tuple[int, str, Path]:
    exe = Path(sys.executable).parent / "locust"
    prefix = tmp / "run"
    proc = await asyncio.create_subprocess_exec(
        str(exe) if exe.exists() else "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", "3", "--host", node.url,
        "--csv", str(prefix), "--only-summary",
        env={**os.environ, "LC_SECRET": secret, "LC_ROOM": room, "LC_REPLY_TIMEOUT_S": "10", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=str(tmp),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=seconds + 60)
    return proc.returncode or 0, out.decode(errors="replace"), prefix


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {f"{r['Type']} {r['Name']}": r for r in csv.DictReader(f)}


def _events(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["type"]: r for r in csv.DictReader(f)}


def _text(path: Path) -> str:
    return path.read_text()


async def test_a_short_mixed_run_has_no_failure_and_keeps_events_and_invariants_apart(gateway_factory: Any,
                                                                                     tmp_path: Path) -> None:
    node = await gateway_factory()
    rc, out, prefix = await _locust(node, tmp_path, node.settings.secret, users=12, seconds=8,
                                    env={"LC_SALE_EVERY_S": "2", "LC_SALE_STOCK": "3"})
    assert rc == 0, out[-3000:]
    stats = _rows(Path(f"{prefix}_stats.csv"))
    assert int(stats["WS connect"]["Request Count"]) >= 12 and stats["WS connect"]["Failure Count"] == "0"
    assert not [k for k in stats if k.startswith("EVENT")]  # event latencies are not requests
    assert int(stats[" Aggregated"]["Failure Count"]) == 0
    events = _events(Path(f"{prefix}_events.csv"))
    assert int(events["comment"]["count"]) > 0 or int(events["likes"]["count"]) > 0, events
    ledger = json.loads(_text(Path(f"{prefix}_ledger.json")))
    assert ledger["violations"] == [] and ledger["sockets_dropped"] == 0 and ledger["sockets_opened"] >= 12
    for sale in ledger["sales"].values():  # no sale reserved more than its stock (the run checks it too)
        assert sale["stock"] is None or sale["orders"] <= sale["stock"]


async def test_refused_sockets_are_connect_failures_reported_at_once(gateway_factory: Any, tmp_path: Path) -> None:
    node = await gateway_factory()
    t0 = time.monotonic()
    rc, out, prefix = await _locust(node, tmp_path, "the-wrong-secret-for-this-node-0123456789", users=4, seconds=4,
                                    env={"LC_SCENARIO": "comment_storm"})
    assert rc == 1, out[-3000:]
    stats = _rows(Path(f"{prefix}_stats.csv"))
    connect = stats["WS connect"]
    assert int(connect["Failure Count"]) >= 4 and connect["Failure Count"] == connect["Request Count"]
    failures = _text(Path(f"{prefix}_failures.csv"))
    assert "refused before welcome" in failures or "401" in failures, failures
    assert float(connect["Max Response Time"]) < 5000  # not a 10 s welcome timeout
    assert time.monotonic() - t0 < 60
