"""Entry points for the notebooks' evidence layer in lab and live mode (fixture mode reads the bundle).

    snap, meta = live.snapshots(settings.postgres, window_s=60, request_rate=18.0)
    candidates = live.index_proposals(settings.postgres, snap)

``snapshots`` returns the same ``Snapshots`` (statements, tables, indexes, activity) and meta dict as
``evidence.from_bundle``; statements are grouped by pglast fingerprint. ``index_proposals`` returns
HypoPG-checked proposals as dicts with the keys ``impact.propose`` reads (table, columns, reason,
share) plus ddl, size_bytes, weighted_reduction and the statements each helps.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ..diagnose import db as db_dx
from ..diagnose.hypotheses import Snapshots
from ..settings import Postgres
from . import advisor, stats


def connect(pg: Postgres) -> psycopg.Connection:
    """A statistics-reading connection; the password from the SecretRef, never from the DSN."""
    password = pg.password.reveal().get_secret_value() if pg.password is not None else None
    return stats.connect(pg.dsn, password)


def snapshots(pg: Postgres, window_s: float | None = None, request_rate: float | None = None,
              requests: float | None = None) -> tuple[Snapshots, dict[str, Any]]:
    """Two snapshots ``window_s`` apart (or since the last statistics reset) reduced to deltas.

    ``request_rate`` (requests/s over the window, e.g. the request_rate signal's mean) or ``requests``
    gives calls per request; without either, N+1 cannot be judged (calls_per_request is NaN)."""
    with connect(pg) as conn:
        start, end = stats.window(conn, window_s) if window_s else stats.since_reset(conn)
    seconds = stats.window_seconds(start, end)
    n = requests if requests is not None else (request_rate * seconds if request_rate else None)
    snap = stats.to_snapshots(start, end, n)
    snap.statements = db_dx.fingerprint_groups(snap.statements)
    meta = {"window": {"start": start.taken_at.isoformat(), "end": end.taken_at.isoformat()}, "requests": n,
            "from": f"PostgreSQL {end.settings['server_version']} ({'window' if window_s else 'since reset'})",
            "missing": [] if n else ["request count (calls per request)"], "warnings": end.warnings,
            "settings": {k: end.settings[k] for k in ("max_connections", "server_version",
                                                      "pg_stat_statements_version")}}
    return snap, meta


def index_proposals(pg: Postgres, snap: Snapshots) -> list[dict[str, Any]]:
    """HypoPG-evaluated index proposals for ``snapshots()`` output (raises ExtensionMissing without hypopg)."""
    with connect(pg) as conn:
        result = advisor.advise(conn, snap.statements, snap.tables, snap.indexes)
    return [p.as_dict() for p in result.proposals]
