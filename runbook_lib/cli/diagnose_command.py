"""``runbook diagnose db|cache``: the runbook's diagnosis at a terminal, outside notebooks."""

from __future__ import annotations

from runbook_lib.cli import diagnose_cache, diagnose_db


def register(subparsers) -> None:
    p = subparsers.add_parser("diagnose", help="diagnose a live PostgreSQL or Redis from the terminal")
    sub = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    diagnose_db.register(sub)
    diagnose_cache.register(sub)
