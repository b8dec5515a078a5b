"""``livecommerce db upgrade`` and ``livecommerce db status``.

The main CLI adds these with ``cli_db.register(subparsers)``; each sub-command sets
``args.func`` to ``func(args, settings=None) -> int`` (the exit code). The URL is
``--database-url``, else ``settings.database_url`` (``LC_DATABASE_URL``). Also runnable alone:
``python -m livecommerce.cli_db db upgrade``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from . import migrations
from .config import Settings
from .errors import ConfigError, LiveCommerceError

_URL_HELP = (
    "database URL: sqlite+aiosqlite:///path/file.db or "
    "postgresql+asyncpg://user[:password]@host[:port]/db[?schema=NAME] "
    "(default: LC_DATABASE_URL, else the SQLite file under .livecommerce/)"
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``db`` command (with ``upgrade`` and ``status``) to an argparse
    ``add_subparsers()`` object; return the ``db`` parser."""
    db: argparse.ArgumentParser = subparsers.add_parser(
        "db",
        help="create or upgrade the SQL schema, or show its version",
        description=(
            "Manage the SQL schema of orders, ledgers, campaigns, coupons and lotteries. "
            "Nothing creates tables implicitly: run `db upgrade` once before starting the "
            "gateway or workers, and again after upgrading livecommerce."
        ),
    )
    sub = db.add_subparsers(dest="db_command", metavar="{upgrade,status}")
    sub.required = True

    up = sub.add_parser(
        "upgrade",
        help="apply pending schema migrations (idempotent)",
        description=(
            "Apply every migration step newer than the database's version, in one "
            "transaction; concurrent runs are serialised. Safe to run repeatedly. "
            f"Latest version: {migrations.LATEST}."
        ),
    )
    up.add_argument("--database-url", metavar="URL", default=None, help=_URL_HELP)
    up.add_argument(
        "--to",
        dest="target",
        type=int,
        metavar="VERSION",
        default=None,
        help=f"stop at this version (default: the latest, {migrations.LATEST}); no downgrades",
    )
    up.set_defaults(func=cmd_upgrade)

    st = sub.add_parser(
        "status",
        help="show the schema version and pending migrations",
        description="Print the database's schema version and the steps `db upgrade` would apply. "
        "Exit code 0 when up to date, 3 when steps are pending.",
    )
    st.add_argument("--database-url", metavar="URL", default=None, help=_URL_HELP)
    st.set_defaults(func=cmd_status)
    return db


def _url(args: argparse.Namespace, settings: Settings | None) -> str:
    if args.database_url:
        return str(args.database_url)
    return (settings or Settings.from_env()).database_url


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable url>"


def cmd_upgrade(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run ``db upgrade``; 0 on success, 1 when the database fails, 2 on bad configuration."""
    try:
        url = _url(args, settings)
        before = asyncio.run(migrations.status(url)).current
        after = asyncio.run(migrations.upgrade(url, target=args.target))
    except ConfigError as exc:
        print(f"db upgrade: {exc.message}", file=sys.stderr)
        return 2
    except LiveCommerceError as exc:
        print(f"db upgrade: {exc.message}", file=sys.stderr)
        return 1
    if after == before:
        print(f"{_shown(url)}: schema already at version {after}")
    else:
        print(f"{_shown(url)}: schema upgraded from version {before} to {after}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run ``db status``; 0 when up to date, 3 when steps are pending, 1/2 on errors."""
    from .cli import sqlite_file

    try:
        url = _url(args, settings)
        path = sqlite_file(url)
        if path is not None and not Path(path).expanduser().exists():  # do not create it here
            print(f"{_shown(url)}: no database yet (latest schema version {migrations.LATEST}); "
                  "run `livecommerce db upgrade` to create it")
            return 3
        st = asyncio.run(migrations.status(url))
    except ConfigError as exc:
        print(f"db status: {exc.message}", file=sys.stderr)
        return 2
    except LiveCommerceError as exc:
        print(f"db status: {exc.message}", file=sys.stderr)
        return 1
    print(f"{_shown(url)}: schema version {st.current} (latest {st.latest})")
    for version, description in st.pending:
        print(f"  pending {version}: {description}")
    if not st.up_to_date:
        print("run `livecommerce db upgrade` to apply them")
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="livecommerce")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
