"""``runbook diagnose cache --redis URL [--window SECONDS] [--json]``: the cache diagnosis at a terminal.

Takes INFO at the start and end of the window (deltas: hit ratio, evictions and expirations per second),
then a throttled SCAN sample; prints a readable report, or the whole report as JSON with ``--json``.
Read-only: nothing is written to Redis. A password is never taken from the URL: ``--password-env NAME``
names the environment variable that holds it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runbook_lib.diagnosis_defaults import MAX_STALENESS_S, SAMPLE_SIZE, TARGET_HIT_RATIO, WATCH_EVERY_S
from runbook_lib.errors import CacheError
from runbook_lib.redaction import redis_endpoint
from runbook_lib.settings import SecretRef, credential_in

DEFAULT_WINDOW_S = 10.0
# A window longer than this is a typo (an hour of waiting at a terminal).
MAX_WINDOW_S = 3600.0


def _app_config(args) -> dict | None:
    if args.app_config:
        try:
            return json.loads(Path(args.app_config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CacheError(f"cannot read app config {args.app_config}: {e}",
                             hint="pass a JSON file with cache_ttl_s and cache_key_scheme") from None
    return None


def run(args) -> int:
    # imported here: redis and the cache model cost a second, and `runbook --help` builds this parser
    from runbook_lib.report.cache_diagnosis import build_report, render_text
    from runbook_lib.sources.redis_snapshot import collect, connect

    if credential_in(args.redis):
        raise CacheError("the Redis URL carries a password",
                         hint="put it in an environment variable and pass --password-env NAME")
    if not 0 <= args.window <= MAX_WINDOW_S:
        raise CacheError(f"--window must be in 0..{MAX_WINDOW_S:.0f} seconds")
    password = SecretRef(env=args.password_env).reveal().get_secret_value() if args.password_env else None
    app_config = _app_config(args)
    client = connect(args.redis, password)
    try:
        if not args.json:
            print(f"watching {redis_endpoint(args.redis)} for {args.window:g} s ...", file=sys.stderr, flush=True)
        snap = collect(client, redis_endpoint(args.redis), args.window, args.sample,
                       app_metrics_urls=args.app_metrics, prometheus_url=args.prometheus,
                       prometheus_selector=args.prometheus_selector, app_config=app_config,
                       watch_every_s=args.watch or None)
    finally:
        client.close()
    report = build_report(snap, args.target_hit_ratio, args.max_staleness)
    print(json.dumps(report, indent=2, default=str) if args.json else render_text(report))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("cache", help="diagnose a live Redis cache (read-only): hit ratio, TTLs, keys, memory",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--redis", required=True, metavar="URL", help="redis://host:port/db (no password in it)")
    p.add_argument("--password-env", metavar="NAME", help="environment variable holding the Redis password")
    p.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, metavar="SECONDS",
                   help="seconds between the two INFO snapshots; the TTL prediction extrapolates the requests "
                        "seen in it, and its range narrows with minutes of traffic (default: %(default)s)")
    p.add_argument("--sample", type=int, default=SAMPLE_SIZE, metavar="N",
                   help="keys to sample with SCAN (default: %(default)s)")
    p.add_argument("--watch", type=float, default=WATCH_EVERY_S, metavar="SECONDS",
                   help="names-only SCAN pass this often during the window, to count key versions; 0: off "
                        "(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--app-metrics", action="append", metavar="URL",
                   help="the app's /metrics URL (repeat per replica): its own hit/miss counters over the window")
    p.add_argument("--prometheus", metavar="URL", help="or: Prometheus holding the app's cache_hits/cache_misses")
    p.add_argument("--prometheus-selector", default="", metavar="SEL", help='e.g. {job="lab"}')
    p.add_argument("--app-config", metavar="FILE", help="JSON file with the app's cache settings (cache_ttl_s, ...); the lab's is "
                        "$RUNBOOK_LAB_DIR/config.json")
    p.add_argument("--target-hit-ratio", type=float, default=TARGET_HIT_RATIO,
                   help="steady hit ratio the TTL is sized for, at the low end of the prediction's range "
                        "(default: %(default)s)")
    p.add_argument("--max-staleness", type=float, default=MAX_STALENESS_S, metavar="SECONDS",
                   help="how old a cached response may be (a product decision): the longest TTL to recommend "
                        "(default: %(default)s)")
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runbook diagnose")
    register(parser.add_subparsers(dest="target", required=True))
    args = parser.parse_args(argv)
    return args.func(args)
