"""``runbook diagnose db|cache``: the runbook's diagnosis at a terminal, outside notebooks.

Each target registers itself: ``runbook_lib.pg.cli.register(subparsers)`` adds ``db`` and
``runbook_lib.cache.cli.register(subparsers)`` adds ``cache``.
"""

from __future__ import annotations

import importlib

_TARGETS = ("runbook_lib.pg.cli", "runbook_lib.cache.cli")


def register(subparsers) -> None:
    p = subparsers.add_parser("diagnose", help="diagnose a live PostgreSQL or Redis from the terminal")
    sub = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name in _TARGETS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue  # that target is not built yet
            raise
        mod.register(sub)
