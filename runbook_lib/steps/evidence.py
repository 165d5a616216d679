"""Gather the snapshot evidence for root cause (the I/O side of ``diagnose``).

Fixture mode reads the bundle's snapshots. Lab and live mode take two snapshots of the PostgreSQL and
Redis named in the parameters ``LIVE_WINDOW_S`` apart (both windows at once) and reduce them to the
same shapes, so the same pure functions judge recorded and live data. Evidence that cannot be read
(no section in the parameters, server unreachable, extension missing) is listed in ``missing`` with
the reason; nothing is invented.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from runbook_lib.diagnose import index_candidates as ix_dx
from runbook_lib.diagnose import statements as db_dx
from runbook_lib.errors import RunbookError
from runbook_lib.model import CacheSnapshot, Snapshots
from runbook_lib.redaction import redact_text
from runbook_lib.report import cache_diagnosis as cache_report
from runbook_lib.settings import Postgres, Settings, resolve_path
from runbook_lib.sources.app_config_file import read_app_config
from runbook_lib.sources.fixture_bundle import FixtureSource

if TYPE_CHECKING:
    import psycopg

# The live readers (psycopg, redis, pglast's advisor) are imported by the functions that use them: a fixture
# run never needs them, and each notebook kernel would pay about a second to import them.

# Live snapshot window: 30 s holds two to six Prometheus scrapes and, at the lab's 18 req/s, ~500
# requests: enough for calls-per-request and hit-ratio deltas, short enough to wait for at 3 a.m.
LIVE_WINDOW_S = 30.0
# The request rate used for calls per request: the mean of the last minutes of the request_rate signal.
RATE_TRAILING = pd.Timedelta(minutes=2)


def _requests(signals: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> float:
    rate = signals["request_rate"]
    seg = rate.loc[(rate.index >= start) & (rate.index <= end)].dropna()
    return float(seg.mean() * (end - start).total_seconds()) if len(seg) else float("nan")


def from_bundle(source: FixtureSource, signals: pd.DataFrame, slo_hit: float,
                sizing_target: float) -> tuple[Snapshots, dict]:
    b = source.bundle
    refs = b.manifest.snapshots
    start = pd.Timestamp(refs["pg_stat_statements.start"].taken_at)
    end = pd.Timestamp(refs["pg_stat_statements.end"].taken_at)
    requests = _requests(signals, start, end)
    snap = Snapshots(
        statements=db_dx.per_request(db_dx.statement_deltas(b.snapshot("pg_stat_statements.start"),
                                                            b.snapshot("pg_stat_statements.end")), requests),
        tables=db_dx.table_deltas(b.snapshot("pg_stat_user_tables.start"), b.snapshot("pg_stat_user_tables.end")),
        indexes=b.snapshot("pg_indexes"),
        activity=b.snapshot("pg_stat_activity"),
    )
    # the recorded Redis evidence goes through the same analysis as a live one (and `runbook diagnose cache`)
    cache = CacheSnapshot("fixture bundle", b.snapshot("redis_info.start"), b.snapshot("redis_info.end"),
                          b.snapshot("redis_keys"),
                          app_config=b.snapshot("app_config") if b.has_snapshot("app_config") else None)
    for k, v in cache_report.hypothesis_snapshots(cache, slo_hit, sizing_target).items():
        setattr(snap, k, v)
    meta = {"window": {"start": start.isoformat(), "end": end.isoformat()}, "requests": requests,
            "from": source.description, "missing": []}
    return snap, meta


def recent_request_rate(signals: pd.DataFrame) -> float | None:
    if "request_rate" not in signals.columns:
        return None
    rate = signals["request_rate"].dropna()
    rate = rate.loc[rate.index >= rate.index.max() - RATE_TRAILING] if len(rate) else rate
    return float(rate.mean()) if len(rate) else None


@dataclass
class LiveWindow:
    """The raw live evidence of one window: two PostgreSQL statistics snapshots and one Redis collection (INFO at
    both ends, names watched in between, the key sample), taken at once; a part that could not be read is None
    with the reason in ``missing``. Reduced to ``Snapshots`` by ``reduce_window``."""

    window_s: float
    pg: tuple[Any, Any] | None = None        # (start, end) pg_statistics.DbSnapshot
    redis: CacheSnapshot | None = None
    missing: list[str] = field(default_factory=list)


def _pg_window(pg: Postgres, window_s: float):
    from runbook_lib.sources import pg_statistics as stats

    with pg_connect(pg) as conn:
        return stats.window(conn, window_s) if window_s else stats.since_reset(conn)


def _redis_window(settings: Settings, window_s: float) -> CacheSnapshot:
    from runbook_lib.sources import redis_snapshot as collect

    client = collect.connect_settings(settings.redis)
    try:
        return collect.collect(client, redact_text(settings.redis.url), window_s=window_s,
                               app_config=_app_config(settings))
    finally:
        client.close()


def collect_window(settings: Settings, window_s: float = LIVE_WINDOW_S) -> LiveWindow:
    """Both live windows at once (PostgreSQL statistics, Redis), ``window_s`` long. Never raises for a server
    that cannot be read: that part is None and ``missing`` says why."""
    raw = LiveWindow(window_s)
    jobs = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        if settings.postgres:
            jobs["PostgreSQL statistics"] = pool.submit(_pg_window, settings.postgres, window_s)
        else:
            raw.missing.append("PostgreSQL statistics: no postgres section in the parameters")
        if settings.redis:
            jobs["Redis INFO and key sample"] = pool.submit(_redis_window, settings, window_s)
        else:
            raw.missing.append("Redis INFO and key sample: no redis section in the parameters")
        for what, job in jobs.items():
            try:
                result = job.result()
            except RunbookError as err:
                raw.missing.append(f"{what}: {redact_text(str(err))}")
                continue
            if what.startswith("PostgreSQL"):
                raw.pg = result
            else:
                raw.redis = result
    return raw


def _app_config(settings: Settings) -> dict | None:
    """The application's cache/pool settings from its config file (``app.config_file``), when the
    parameters name one and it can be read."""
    if not settings.app.config_file:
        return None
    try:
        return read_app_config(resolve_path(settings.app.config_file)).as_dict()
    except RunbookError:
        return None


def gather(settings: Settings, source, signals: pd.DataFrame, window_s: float = LIVE_WINDOW_S,
           run_dir: Path | None = None) -> tuple[Snapshots, dict]:
    """Snapshots for the root-cause step, and a note of where they came from and what is missing.

    Live: the window ``runbook run`` opened when the run began (``evidence_prefetch``, in ``run_dir``), else
    one taken now."""
    if isinstance(source, FixtureSource):
        return from_bundle(source, signals, settings.slo.cache_hit_ratio, settings.slo.cache_sizing_target())
    from runbook_lib.steps import evidence_prefetch

    raw = evidence_prefetch.take(run_dir) if run_dir is not None else None
    if raw is None:
        print(f"taking PostgreSQL and Redis snapshots {window_s:.0f} s apart ...", flush=True)
        raw = collect_window(settings, window_s)
    return reduce_window(settings, raw, signals, source.description)


def reduce_window(settings: Settings, raw: LiveWindow, signals: pd.DataFrame,
                  described: str) -> tuple[Snapshots, dict]:
    """The raw live window reduced to the shapes the diagnosis reads (the same as a bundle's)."""
    snap = Snapshots()
    meta = {"window": None, "requests": None, "from": described, "missing": list(raw.missing)}
    if raw.pg is not None:
        pg_snap, pg_meta = _pg_reduce(*raw.pg, window_s=raw.window_s, request_rate=recent_request_rate(signals))
        snap.statements, snap.tables = pg_snap.statements, pg_snap.tables
        snap.indexes, snap.activity = pg_snap.indexes, pg_snap.activity
        meta.update(window=pg_meta["window"], requests=pg_meta["requests"])
        meta["missing"] += pg_meta.get("missing", [])
    if raw.redis is not None:
        for k, v in cache_report.hypothesis_snapshots(raw.redis, settings.slo.cache_hit_ratio,
                                                      settings.slo.cache_sizing_target()).items():
            setattr(snap, k, v)
    return snap, meta


def index_candidates(settings: Settings, source, snap: Snapshots) -> list[dict]:
    """Index proposals: structural candidates on a bundle; HypoPG-checked ones on a live server."""
    if snap.statements is None or snap.tables is None or snap.indexes is None:
        return []
    if isinstance(source, FixtureSource) or not settings.postgres:
        return ix_dx.candidates(snap.statements, list(db_dx.seq_scan_heavy(snap.tables).index), snap.indexes)
    return pg_index_proposals(settings.postgres, snap)


# --- PostgreSQL, live: two statistics snapshots and HypoPG-checked index proposals -------------------


def pg_connect(pg: Postgres) -> psycopg.Connection:
    """A statistics-reading connection (``pg_statistics.connect_settings``, imported when used)."""
    from runbook_lib.sources import pg_statistics as stats

    return stats.connect_settings(pg)


def pg_snapshots(pg: Postgres, window_s: float | None = None, request_rate: float | None = None,
              requests: float | None = None) -> tuple[Snapshots, dict[str, Any]]:
    """Two snapshots ``window_s`` apart (or since the last statistics reset) reduced to deltas.

    ``request_rate`` (requests/s over the window, e.g. the request_rate signal's mean) or ``requests``
    gives calls per request; without either, N+1 cannot be judged (calls_per_request is NaN)."""
    start, end = _pg_window(pg, window_s)
    return _pg_reduce(start, end, window_s, request_rate, requests)


def _pg_reduce(start, end, window_s: float | None, request_rate: float | None = None,
               requests: float | None = None) -> tuple[Snapshots, dict[str, Any]]:
    from runbook_lib.sources import pg_statistics as stats

    seconds = stats.window_seconds(start, end)
    n = requests if requests is not None else (request_rate * seconds if request_rate else None)
    snap = db_dx.to_snapshots(start, end, n)
    snap.statements = db_dx.fingerprint_groups(snap.statements)
    meta = {"window": {"start": start.taken_at.isoformat(), "end": end.taken_at.isoformat()}, "requests": n,
            "from": f"PostgreSQL {end.settings['server_version']} ({'window' if window_s else 'since reset'})",
            "missing": [] if n else ["request count (calls per request)"], "warnings": end.warnings,
            "settings": {k: end.settings[k] for k in ("max_connections", "server_version",
                                                      "pg_stat_statements_version")}}
    return snap, meta


def pg_index_proposals(pg: Postgres, snap: Snapshots) -> list[dict[str, Any]]:
    """HypoPG-evaluated index proposals for ``snapshots()`` output (raises ExtensionMissing without hypopg)."""
    from runbook_lib.plan import index_advisor as advisor

    with pg_connect(pg) as conn:
        result = advisor.advise(conn, snap.statements, snap.tables, snap.indexes)
    return [p.as_dict() for p in result.proposals]
