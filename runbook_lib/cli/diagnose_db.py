"""``runbook diagnose db``: diagnose a live PostgreSQL from the terminal.

    runbook diagnose db --dsn "host=db.internal dbname=app user=sre" --window 60 --request-rate 18

With ``--window SECONDS`` two snapshots are taken that far apart and the report covers the deltas;
without it, everything since the last statistics reset. ``--json`` prints the findings and the proposed
index DDL as JSON. The password comes from ``--password-env NAME`` or libpq's own PGPASSWORD / .pgpass,
never from the DSN; every DSN printed goes through redaction.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from runbook_lib.diagnosis_defaults import PG_MAX_WINDOW_S
from runbook_lib.errors import PgDiagnosisError
from runbook_lib.redaction import postgres_endpoint, redact_text
from runbook_lib.settings import Postgres, SecretRef


def _positive(v: str) -> float:
    x = float(v)
    if not x > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return x


def register(subparsers) -> None:
    p = subparsers.add_parser("db", help="N+1, missing indexes (HypoPG) and pool sizing from a live PostgreSQL",
                              description="Diagnose a live PostgreSQL from its statistics: N+1 statements, "
                                          "statements reading far more than they return, missing indexes "
                                          "(HypoPG what-if), connections and a pool size.")
    p.add_argument("--dsn", required=True, help="libpq DSN or URL, without a password")
    p.add_argument("--window", type=_positive, metavar="SECONDS",
                   help=f"take two snapshots this far apart (<= {PG_MAX_WINDOW_S}); default: since the last "
                        "statistics reset")
    p.add_argument("--json", action="store_true", help="print the findings and proposed index DDL as JSON")
    req = p.add_mutually_exclusive_group()
    req.add_argument("--request-rate", type=_positive, metavar="RPS",
                     help="HTTP requests per second during the window (for calls per request / N+1)")
    req.add_argument("--requests", type=_positive, metavar="N", help="HTTP requests served during the window")
    p.add_argument("--password-env", metavar="NAME", help="environment variable holding the password")
    p.add_argument("--pool-size", type=int, metavar="N", help="the app's pool maximum per replica")
    p.add_argument("--replicas", type=int, default=1, metavar="N", help="app replicas sharing the server")
    p.set_defaults(func=run)


def run(args) -> int:
    # imported here: psycopg, pglast and the advisor cost a second, and `runbook --help` builds this parser
    import psycopg

    if args.window and args.window > PG_MAX_WINDOW_S:
        raise PgDiagnosisError(f"--window {args.window:g} is longer than {PG_MAX_WINDOW_S} s",
                               hint="diagnose a shorter window, or omit --window to read since the last reset")
    try:
        Postgres(dsn=args.dsn)
    except ValidationError as e:
        raise PgDiagnosisError(e.errors()[0]["msg"].removeprefix("Value error, "),
                               hint="pass the password with --password-env NAME or PGPASSWORD") from None
    password = SecretRef(env=args.password_env).reveal().get_secret_value() if args.password_env else None
    endpoint = postgres_endpoint(args.dsn)
    try:
        d = _diagnose(args, password, endpoint)
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PgDiagnosisError(f"reading statistics from {endpoint} failed: {redact_text(first)}") from None
    print(d.to_json() if args.json else d.to_text(), end="" if not args.json else "\n")
    return 0


def _diagnose(args, password: str | None, endpoint: str):
    from runbook_lib.report import db_diagnosis as report
    from runbook_lib.sources import pg_statistics as stats

    with stats.connect(args.dsn, password) as conn:
        if args.window:
            if not args.json:
                print(f"taking two snapshots {args.window:.0f} s apart on {endpoint} ...", file=sys.stderr)
            start, end = stats.window(conn, args.window)
            mode = "window"
        else:
            start, end = stats.since_reset(conn)
            mode = "since_reset"
        seconds = stats.window_seconds(start, end)
        requests = args.requests or (args.request_rate * seconds if args.request_rate else None)
        app_pool = {"db_pool_max": args.pool_size, "replicas": args.replicas} if args.pool_size else \
            {"replicas": args.replicas}
        return report.diagnose(conn, start, end, requests, app_pool=app_pool, endpoint=endpoint, mode=mode)
