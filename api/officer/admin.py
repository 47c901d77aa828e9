"""Create the first accounts outside demo mode: ``python -m api.officer.admin``.

No account exists by default (only ``LPT_DEMO=1`` seeds demo ones), so a deployment creates its
first admin here; that admin then creates the others in the app (``POST /api/v1/accounts``).
The password is read from the terminal (or ``--password-stdin``), never from the command line.

    python -m api.officer.admin create --username jsmith --role admin --name "J Smith"
    python -m api.officer.admin create --username pc123 --role officer --name "PC 123" \\
        --wards E05001677,E05001671 --team "Hull Central NPT"
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from api.officer.accounts import ROLES, AccountStore
from lpt.db import create_pool, migrate
from lpt.settings import get_settings

MIN_PASSWORD = 12


def _codes(raw: str) -> list[str]:
    return [c.strip().upper() for c in raw.split(",") if c.strip()]


async def _create(args: argparse.Namespace, password: str) -> int:
    settings = get_settings()
    await migrate(settings)
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        account = await AccountStore(pool).create(
            args.username,
            args.name,
            args.role,
            password=password,
            team=args.team,
            ward_codes=_codes(args.wards),
            local_authority_codes=_codes(args.authorities),
        )
    finally:
        await pool.close()
    print(f"created {account.role} {account.username} ({account.account_id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.officer.admin")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create", help="create an account with a password")
    p.add_argument("--username", required=True)
    p.add_argument("--name", required=True, help="display name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--team", default=None)
    p.add_argument("--wards", default="", help="ward codes, comma-separated")
    p.add_argument("--authorities", default="", help="local authority codes, comma-separated")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    args = parser.parse_args(argv)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 2
    if len(password) < MIN_PASSWORD:
        print(f"password must have at least {MIN_PASSWORD} characters", file=sys.stderr)
        return 2
    if args.role != "admin" and not (args.wards or args.authorities):
        print("give the account an area: --wards and/or --authorities", file=sys.stderr)
        return 2
    return asyncio.run(_create(args, password))


if __name__ == "__main__":
    raise SystemExit(main())
