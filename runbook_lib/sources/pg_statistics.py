"""Statistics snapshots from a live PostgreSQL 13-17, in the fixture bundle's column shapes.

``collect(conn)`` reads, in one go:

* ``pg_stat_statements`` with the columns the installed extension version has (1.8 renamed
  ``total_time``/``mean_time`` to ``total_exec_time``/``mean_exec_time``; 1.9 added ``toplevel`` and
  ``pg_stat_statements_info``; 1.11 renamed ``blk_read_time`` to ``shared_blk_read_time``), summed per
  ``queryid`` for the current database;
* ``pg_stat_user_tables`` and ``pg_statio_user_tables`` (one row per table);
* every index with its definition, columns and validity (``pg_index.indisvalid``);
* ``pg_stat_activity`` (client backends) and the settings that bound it (``max_connections``).

Counters are cumulative, so the analysis works on two snapshots: ``window(conn, seconds)`` takes one at
each end of a window; ``since_reset(conn)`` pairs the current one with an all-zero snapshot at the last
statistics reset. ``diagnose.statements.to_snapshots(start, end, requests)`` turns a pair into the ``Snapshots`` the
hypotheses read, through the same pure functions the notebooks use on recorded bundles.

Tables outside the ``public`` schema are named ``schema.table``; those in ``public`` by their bare name.
A missing extension or missing privileges raise a typed error with the fix, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from runbook_lib.diagnosis_defaults import PG_MAX_WINDOW_S as MAX_WINDOW_S
from runbook_lib.errors import ExtensionMissing, InsufficientPrivilege, PgDiagnosisError, TargetUnreachable
from runbook_lib.redaction import postgres_endpoint, redact_text
from runbook_lib.sources.pg_explain import MARKER, marked

# Bounded connects and reads: the statistics views answer in milliseconds; a server that needs longer
# is reported, not waited on.
CONNECT_TIMEOUT_S = 10
READ_STATEMENT_TIMEOUT_MS = 30_000
APPLICATION_NAME = "runbook-diagnose"
# pg_stat_statements shows this instead of the text of another role's statement without pg_read_all_stats.
HIDDEN_QUERY = "<insufficient privilege>"

STATEMENT_COLUMNS = ["queryid", "query", "calls", "total_exec_time", "rows", "shared_blks_hit",
                     "shared_blks_read"]
TABLE_COLUMNS = ["relname", "n_live_tup", "seq_scan", "seq_tup_read", "idx_scan", "n_tup_ins", "n_tup_upd",
                 "n_tup_del"]
STATIO_COLUMNS = ["relname", "heap_blks_read", "heap_blks_hit", "idx_blks_read", "idx_blks_hit"]
INDEX_COLUMNS = ["tablename", "indexname", "indexdef", "valid", "columns", "method", "partial", "unique",
                 "size_bytes", "idx_scan"]
ACTIVITY_COLUMNS = ["pid", "datname", "usename", "application_name", "state", "wait_event_type", "wait_event",
                    "duration_s", "xact_duration_s", "query", "client_addr"]


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


def pgss_columns(version: str) -> dict[str, str]:
    """Our column name -> the server's pg_stat_statements column for that extension version."""
    v = _version(version)
    cols = {"calls": "calls", "rows": "rows", "shared_blks_hit": "shared_blks_hit",
            "shared_blks_read": "shared_blks_read"}
    if v >= (1, 8):  # PostgreSQL 13: planning time split out, *_time -> *_exec_time
        cols |= {"total_exec_time": "total_exec_time", "mean_exec_time": "mean_exec_time",
                 "total_plan_time": "total_plan_time"}
    else:
        cols |= {"total_exec_time": "total_time", "mean_exec_time": "mean_time"}
    if v >= (1, 11):  # PostgreSQL 17: blk_*_time -> shared_blk_*_time (local_blk_*_time added)
        cols |= {"blk_read_time": "shared_blk_read_time", "blk_write_time": "shared_blk_write_time"}
    else:
        cols |= {"blk_read_time": "blk_read_time", "blk_write_time": "blk_write_time"}
    return cols


def pgss_has_toplevel(version: str) -> bool:
    return _version(version) >= (1, 9)  # PostgreSQL 14


def pgss_has_info(version: str) -> bool:
    return _version(version) >= (1, 9)  # pg_stat_statements_info (dealloc, stats_reset)


def table_key(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


@dataclass
class DbSnapshot:
    """One reading of the statistics; ``taken_at`` is the server's clock."""

    taken_at: datetime
    statements: pd.DataFrame
    tables: pd.DataFrame
    statio: pd.DataFrame
    indexes: pd.DataFrame
    activity: pd.DataFrame
    settings: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def zero(cls, like: DbSnapshot, taken_at: datetime) -> DbSnapshot:
        """All counters at zero (the state right after a statistics reset)."""
        return cls(taken_at, like.statements.iloc[0:0], like.tables.iloc[0:0], like.statio.iloc[0:0],
                   like.indexes, like.activity.iloc[0:0], like.settings, [])


# --- connection --------------------------------------------------------------------------------------


def connect(dsn: str, password: str | None = None) -> psycopg.Connection:
    """Autocommit connection for reading statistics; reads are bounded by statement_timeout."""
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S,
                              "application_name": APPLICATION_NAME}
    if password is not None:
        kwargs["password"] = password
    try:
        conn = psycopg.connect(dsn, **kwargs)
    except psycopg.Error as e:  # also an unparseable DSN (ProgrammingError)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TargetUnreachable(postgres_endpoint(dsn), f"cannot connect to {postgres_endpoint(dsn)}: {redact_text(first)}") from None
    conn.execute(marked(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{READ_STATEMENT_TIMEOUT_MS}ms"))))
    return conn


def connect_settings(pg) -> psycopg.Connection:
    """A statistics connection from the parameters' ``postgres`` section (``Postgres{dsn, password: SecretRef}``):
    the password from the SecretRef, never from the DSN."""
    password = pg.password.reveal().get_secret_value() if pg.password is not None else None
    return connect(pg.dsn, password)


def _frame(cur: psycopg.Cursor, columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(cur.fetchall(), columns=columns)


# --- readers -----------------------------------------------------------------------------------------

_SETTINGS_SQL = """
SELECT current_setting('server_version'), current_setting('server_version_num')::int,
       current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
       (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'), current_database(),
       (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'),
       (SELECT extversion FROM pg_extension WHERE extname = 'hypopg'),
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'),
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()),
       pg_postmaster_start_time(), now()
"""


def server_settings(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute(marked(_SETTINGS_SQL)).fetchone()
    (version, num, max_conn, reserved, preload, db, pgss, hypopg, read_all, reset, started, now) = row
    return {"server_version": version, "server_version_num": num, "max_connections": max_conn,
            "superuser_reserved_connections": reserved, "shared_preload_libraries": preload, "database": db,
            "pg_stat_statements_version": pgss, "hypopg_version": hypopg, "pg_read_all_stats": bool(read_all),
            "tables_stats_reset": reset or started, "now": now}


def require_pg_stat_statements(settings: dict[str, Any]) -> str:
    """The installed extension version, or ExtensionMissing saying exactly what to change."""
    preload = settings.get("shared_preload_libraries")  # None: hidden without pg_read_all_settings
    if preload is not None and "pg_stat_statements" not in preload:
        raise ExtensionMissing(
            "pg_stat_statements is not loaded on this server",
            hint="add it to postgresql.conf: shared_preload_libraries = 'pg_stat_statements' (needs a restart), "
                 "then in this database: CREATE EXTENSION pg_stat_statements;")
    if not settings.get("pg_stat_statements_version"):
        raise ExtensionMissing(
            f"pg_stat_statements is loaded but not created in database {settings.get('database')!r}",
            hint="CREATE EXTENSION pg_stat_statements; (as a superuser or the database owner)")
    return settings["pg_stat_statements_version"]


def read_statements(conn: psycopg.Connection, version: str) -> pd.DataFrame:
    """pg_stat_statements summed per queryid for the current database (top-level statements)."""
    cols = pgss_columns(version)
    wanted = ["calls", "total_exec_time", "rows", "shared_blks_hit", "shared_blks_read"]
    sums = sql.SQL(", ").join(
        sql.SQL("sum({})::float8 AS {}").format(sql.Identifier(cols[c]), sql.Identifier(c)) for c in wanted)
    where = [sql.SQL("s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"),
             sql.SQL("s.queryid IS NOT NULL"), sql.SQL("s.query NOT LIKE {}").format(sql.Literal(MARKER + "%"))]
    if pgss_has_toplevel(version):
        where.append(sql.SQL("s.toplevel"))
    q = marked(sql.SQL("SELECT s.queryid, min(s.query), {} FROM pg_stat_statements s WHERE {} GROUP BY s.queryid").format(
        sums, sql.SQL(" AND ").join(where)))
    try:
        with conn.cursor() as cur:
            cur.execute(q)
            df = _frame(cur, STATEMENT_COLUMNS)
    except psycopg.errors.ObjectNotInPrerequisiteState as e:  # created but not preloaded
        raise ExtensionMissing(f"pg_stat_statements cannot be read: {str(e).strip().splitlines()[0]}",
                               hint="shared_preload_libraries = 'pg_stat_statements' in postgresql.conf, "
                                    "then restart the server") from None
    except psycopg.errors.InsufficientPrivilege as e:
        raise InsufficientPrivilege(f"cannot read pg_stat_statements: {str(e).strip().splitlines()[0]}") from None
    for c in wanted:
        df[c] = df[c].astype(float)
    df["queryid"] = df["queryid"].astype("int64")
    return df


def hidden_statements(conn: psycopg.Connection, version: str) -> tuple[int, float]:
    """(entries, ms of exec time) of other roles' statements this role may not see (queryid NULL)."""
    q = marked(sql.SQL("SELECT count(*), coalesce(sum({}), 0)::float8 FROM pg_stat_statements s WHERE s.dbid = "
                       "(SELECT oid FROM pg_database WHERE datname = current_database()) AND "
                       "(s.queryid IS NULL OR s.query = {})").format(
        sql.Identifier(pgss_columns(version)["total_exec_time"]), sql.Literal(HIDDEN_QUERY)))
    n, ms = conn.execute(q).fetchone()
    return int(n), float(ms)


def stats_reset_at(conn: psycopg.Connection, version: str, settings: dict[str, Any]) -> datetime:
    """When pg_stat_statements was last reset (1.9+), else when the database's counters were."""
    if pgss_has_info(version):
        row = conn.execute(marked("SELECT stats_reset FROM pg_stat_statements_info")).fetchone()
        if row and row[0] is not None:
            return row[0]
    return settings["tables_stats_reset"]


_TABLES_SQL = """
SELECT schemaname, relname, n_live_tup, seq_scan, coalesce(seq_tup_read, 0), coalesce(idx_scan, 0),
       n_tup_ins, n_tup_upd, n_tup_del
FROM pg_stat_user_tables
"""
_STATIO_SQL = """
SELECT schemaname, relname, coalesce(heap_blks_read, 0), coalesce(heap_blks_hit, 0),
       coalesce(idx_blks_read, 0), coalesce(idx_blks_hit, 0)
FROM pg_statio_user_tables
"""


def _keyed(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    data = [(table_key(r[0], r[1]), *r[2:]) for r in rows]
    df = pd.DataFrame(data, columns=columns)
    for c in columns[1:]:
        df[c] = df[c].astype("int64")
    return df


def read_tables(conn: psycopg.Connection) -> tuple[pd.DataFrame, pd.DataFrame]:
    tables = _keyed(conn.execute(marked(_TABLES_SQL)).fetchall(), TABLE_COLUMNS)
    statio = _keyed(conn.execute(marked(_STATIO_SQL)).fetchall(), STATIO_COLUMNS)
    return tables, statio


_INDEXES_SQL = """
SELECT n.nspname, t.relname, i.relname, pg_get_indexdef(x.indexrelid), x.indisvalid,
       array(SELECT CASE WHEN k.attnum = 0 THEN NULL ELSE a.attname::text END
             FROM unnest(x.indkey[0:x.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum ORDER BY k.ord),
       am.amname, x.indpred IS NOT NULL, x.indisunique, pg_relation_size(x.indexrelid),
       coalesce(s.idx_scan, 0)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = x.indexrelid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1, 2, 3
"""


def read_indexes(conn: psycopg.Connection) -> pd.DataFrame:
    rows = conn.execute(marked(_INDEXES_SQL)).fetchall()
    data = [(table_key(r[0], r[1]), r[2], r[3], bool(r[4]), list(r[5]), r[6], bool(r[7]), bool(r[8]),
             int(r[9]), int(r[10])) for r in rows]
    return pd.DataFrame(data, columns=INDEX_COLUMNS)


_ACTIVITY_SQL = """
SELECT pid, datname, usename, application_name, coalesce(state, 'unknown'), wait_event_type, wait_event,
       extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start ELSE state_change END)::float8,
       extract(epoch FROM now() - xact_start)::float8, query, coalesce(host(client_addr), 'local')
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def read_activity(conn: psycopg.Connection) -> pd.DataFrame:
    return _frame(conn.execute(marked(_ACTIVITY_SQL)), ACTIVITY_COLUMNS)


def collect(conn: psycopg.Connection) -> DbSnapshot:
    """Every statistic the diagnosis reads, at one moment (the server's ``now()``)."""
    settings = server_settings(conn)
    version = require_pg_stat_statements(settings)
    statements = read_statements(conn, version)
    tables, statio = read_tables(conn)
    warnings = []
    statements = statements[statements["query"] != HIDDEN_QUERY].reset_index(drop=True)
    hidden, hidden_ms = hidden_statements(conn, version)
    if hidden:
        warnings.append(f"{hidden} statement(s) of other roles ({hidden_ms / 1000:,.1f} s of DB time so far) are "
                        f"hidden ({HIDDEN_QUERY}); GRANT pg_read_all_stats to this role to see them")
    activity = read_activity(conn)
    if not settings["pg_read_all_stats"] and (activity["query"] == HIDDEN_QUERY).any():
        warnings.append("pg_stat_activity hides other roles' queries; GRANT pg_read_all_stats to see them")
    return DbSnapshot(settings["now"], statements, tables, statio, read_indexes(conn), activity, settings, warnings)


def window(conn: psycopg.Connection, seconds: float, wait: Callable[[float], None] = time.sleep
           ) -> tuple[DbSnapshot, DbSnapshot]:
    """Two snapshots ``seconds`` apart (bounded by MAX_WINDOW_S)."""
    if not 0 < seconds <= MAX_WINDOW_S:
        raise PgDiagnosisError(f"window of {seconds} s is out of range", hint=f"use 0 < --window <= {MAX_WINDOW_S}")
    start = collect(conn)
    wait(seconds)
    return start, collect(conn)


def since_reset(conn: psycopg.Connection) -> tuple[DbSnapshot, DbSnapshot]:
    """(all-zero snapshot at the last statistics reset, current snapshot)."""
    end = collect(conn)
    reset = stats_reset_at(conn, end.settings["pg_stat_statements_version"], end.settings)
    return DbSnapshot.zero(end, reset), end


def window_seconds(start: DbSnapshot, end: DbSnapshot) -> float:
    return max((end.taken_at - start.taken_at).total_seconds(), 0.0)


def statio_deltas(start: pd.DataFrame, end: pd.DataFrame) -> pd.DataFrame:
    """Blocks read from disk vs found in shared buffers per table over the window, with hit ratios."""
    s, e = start.set_index("relname"), end.set_index("relname")
    cols = STATIO_COLUMNS[1:]
    d = e[cols].sub(s[cols].reindex(e.index).fillna(0))
    heap = d["heap_blks_read"] + d["heap_blks_hit"]
    d["heap_hit_ratio"] = (d["heap_blks_hit"] / heap).where(heap > 0)
    return d.sort_values("heap_blks_read", ascending=False)
