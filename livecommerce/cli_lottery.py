"""``livecommerce lottery verify FILE|URL``: re-run a lottery draw from its published record.

The record is the JSON that ``GET /api/v1/lotteries/{id}`` serves (or a file holding it,
or a ``lottery.ended`` event's ``d`` with an inline entrant list). The command checks the
seed against the committed ``seed_hash``, the entrant list against its digest and count,
recomputes the winners with the documented algorithm (:func:`livecommerce.lottery.draw`),
and prints ``MATCH`` (exit 0) or ``MISMATCH`` with every reason (exit 1). An unreadable
file or URL prints an error and exits 1 too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import LiveCommerceError
from .lottery import ALGORITHM, verify_record


def load_record(source: str, *, timeout_s: float = 10.0) -> Any:
    """Read a record from a path or an ``http(s)://`` URL.

    A gateway's ``/api/v1/lotteries/{id}`` is read with :mod:`livecommerce.client` (its
    error answer named by code: ``HTTP 404 not_found: ...``); any other URL as plain JSON.

    Raises:
        OSError: unreadable file or URL. ValueError: not JSON. ClientError: the gateway's
            error answer, or none.
    """
    api = re.fullmatch(r"(https?://.+?)/api/v1/lotteries/([^/?#]+)", source)
    if api is not None:
        return asyncio.run(_from_gateway(api.group(1), api.group(2), timeout_s))
    if source.startswith(("http://", "https://")):
        req = urllib.request.Request(source, headers={"Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))
    return json.loads(Path(source).read_text(encoding="utf-8"))


async def _from_gateway(base: str, lottery_id: str, timeout_s: float) -> Any:
    from urllib.parse import unquote

    from .client import NO_RETRY, Client

    async with Client(base, timeout_s=timeout_s, retry=NO_RETRY) as api:  # one attempt: the person at the terminal retries
        return await api.lotteries_get(unquote(lottery_id))


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    try:
        record = load_record(args.source)
    except (OSError, ValueError, LiveCommerceError) as exc:
        print(f"error: cannot read a lottery record from {args.source}: {exc}", file=sys.stderr)
        return 1
    verdict = verify_record(record)
    lid = record.get("id", "?") if isinstance(record, dict) else "?"
    if args.json:
        print(json.dumps({"id": lid, "ok": verdict.ok, "reasons": verdict.reasons, "recomputed": verdict.recomputed}))
        return 0 if verdict.ok else 1
    if verdict.ok:
        n = len(record["proof"]["entrants"])
        print(f"MATCH: lottery {lid}: winners {record['winners']} recomputed from the seed and {n} entrants ({ALGORITHM}); "
              "the seed matches the published seed_hash")
        return 0
    print(f"MISMATCH: lottery {lid}:")
    for r in verdict.reasons:
        print(f"  - {r}")
    return 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lottery",
        help="lottery tools (verify a published draw)",
        description="Tools for lucky-bag lotteries.",
    )
    sub = p.add_subparsers(dest="lottery_command", metavar="SUBCOMMAND")
    v = sub.add_parser(
        "verify",
        help="recompute a draw from its published record and say whether it matches",
        description=f"Re-run the draw ({ALGORITHM}) from a record: a JSON file or the URL "
        "http(s)://HOST/api/v1/lotteries/ID. Exit 0 on match, 1 on mismatch or error.",
    )
    v.add_argument("source", metavar="FILE|URL", help="record file or GET /api/v1/lotteries/{id} URL")
    v.add_argument("--json", action="store_true", help="print the verdict as JSON")
    v.set_defaults(func=cmd_verify)
