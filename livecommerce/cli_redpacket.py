"""``livecommerce redpacket verify FILE|URL``: re-run a red packet's split from its record.

The record is the JSON that ``GET /api/v1/redpackets/{id}`` serves once the packet has ended
(or a file holding it). The command checks the seed against the committed ``seed_hash``,
recomputes the shares with the documented algorithm (:func:`livecommerce.redpackets.split`),
checks that the i-th grab got share i, that nobody grabbed twice and that the grabs and the
refund add up to the amount, and prints ``MATCH`` (exit 0) or ``MISMATCH`` with every reason
(exit 1). An unreadable file or URL prints an error and exits 1 too.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cli_lottery import load_record
from .config import Settings
from .redpackets import ALGORITHM, verify_record


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    try:
        record = load_record(args.source)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read a red packet record from {args.source}: {exc}", file=sys.stderr)
        return 1
    verdict = verify_record(record)
    pid = record.get("id", "?") if isinstance(record, dict) else "?"
    if args.json:
        print(json.dumps({"id": pid, "ok": verdict.ok, "reasons": verdict.reasons, "recomputed": verdict.recomputed}))
        return 0 if verdict.ok else 1
    if verdict.ok:
        print(f"MATCH: red packet {pid}: {len(record['grabs'])} grabs got shares {verdict.recomputed} recomputed from the "
              f"seed ({ALGORITHM}); grabbed {sum(g['amount'] for g in record['grabs'])} + refunded {record['refunded']} "
              f"= {record['amount']}; the seed matches the published seed_hash")
        return 0
    print(f"MISMATCH: red packet {pid}:")
    for r in verdict.reasons:
        print(f"  - {r}")
    return 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "redpacket",
        help="red packet tools (verify a published split)",
        description="Tools for red packets (红包).",
    )
    sub = p.add_subparsers(dest="redpacket_command", metavar="SUBCOMMAND")
    v = sub.add_parser(
        "verify",
        help="recompute a red packet's shares from its published record and say whether they match",
        description=f"Re-run the split ({ALGORITHM}) from a record: a JSON file or the URL "
        "http(s)://HOST/api/v1/redpackets/ID (once the packet has ended). Exit 0 on match, 1 on mismatch or error.",
    )
    v.add_argument("source", metavar="FILE|URL", help="record file or GET /api/v1/redpackets/{id} URL")
    v.add_argument("--json", action="store_true", help="print the verdict as JSON")
    v.set_defaults(func=cmd_verify)
