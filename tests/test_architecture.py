"""The layering rules of STYLE.md, checked by scanning imports.

* the protocol and the pure domain modules import no asyncio, redis, sqlalchemy, aiohttp,
  aiokafka;
* no library module imports ``gateway`` or ``workers`` (the CLI loads them by name).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "livecommerce"
IO_LIBS = {"asyncio", "redis", "sqlalchemy", "aiohttp", "aiokafka", "websockets", "socket", "aiosqlite", "asyncpg"}
PURE = ["protocol/codec.py", "protocol/commands.py", "protocol/events.py", "comments.py", "auth.py", "errors.py", "keys.py"]
PURE += [p for p in ("flash_sale.py", "orders.py", "lottery.py", "points.py", "wallet.py", "coupons.py", "gifts.py", "likes.py", "rooms.py") if (ROOT / p).exists()]
PURE += ["hot_room.py", "presence.py"]
PURE += ["alerts.py"]  # the ops alert rules (gateway.ops samples, livecommerce.ops_redis stores)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_pure_modules_do_no_io():
    for rel in PURE:
        bad = imports_of(ROOT / rel) & IO_LIBS
        assert not bad, f"{rel} imports {bad}"


def test_library_never_imports_gateway_or_workers():
    for path in ROOT.rglob("*.py"):
        bad = imports_of(path) & {"gateway", "workers"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
