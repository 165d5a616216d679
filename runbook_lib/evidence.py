"""Gather the snapshot evidence for root cause (the I/O side of ``diagnose``).

Fixture mode reads the bundle's snapshots. In lab and live mode the snapshots come from the
PostgreSQL and Redis named in the parameters (collectors arrive with the database and cache
issues); until then this says plainly which evidence is missing instead of inventing it.
"""

from __future__ import annotations

import pandas as pd

from .diagnose import cache as cache_dx
from .diagnose import db as db_dx
from .diagnose.hypotheses import Snapshots
from .sources.fixture import FixtureSource


def _requests(signals: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> float:
    rate = signals["request_rate"]
    seg = rate.loc[(rate.index >= start) & (rate.index <= end)].dropna()
    return float(seg.mean() * (end - start).total_seconds()) if len(seg) else float("nan")


def from_bundle(source: FixtureSource, signals: pd.DataFrame) -> tuple[Snapshots, dict]:
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
        redis=cache_dx.info_deltas(b.snapshot("redis_info.start"), b.snapshot("redis_info.end")),
        ttl=cache_dx.ttl_summary(b.snapshot("redis_keys")),
        key_patterns=cache_dx.key_patterns(b.snapshot("redis_keys")),
        app_config=b.snapshot("app_config") if b.has_snapshot("app_config") else None,
    )
    meta = {"window": {"start": start.isoformat(), "end": end.isoformat()}, "requests": requests,
            "from": source.description, "missing": []}
    return snap, meta


def gather(source, signals: pd.DataFrame) -> tuple[Snapshots, dict]:
    """Snapshots for the root-cause step, and a note of where they came from and what is missing."""
    if isinstance(source, FixtureSource):
        return from_bundle(source, signals)
    return Snapshots(), {"window": None, "requests": None, "from": source.description,
                         "missing": ["pg_stat_statements", "pg_stat_user_tables", "pg_stat_activity",
                                     "redis INFO", "redis key sample", "app config"]}
