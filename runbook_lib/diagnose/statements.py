"""Database evidence from two statistics snapshots (pure: DataFrames in, DataFrames out).

Counters in pg_stat_statements and pg_stat_user_tables are cumulative since the last reset, so
everything here works on the difference between a snapshot at the start and one at the end of
the incident window.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from runbook_lib.model import Snapshots

# N+1: a statement run this many times per HTTP request (or more) is a loop issuing queries.
# Sentry's N+1 detector flags 5 repeats of the same span; we use the same bar per request.
N_PLUS_ONE_MIN_CALLS_PER_REQUEST = 5.0
# ... returning few rows each time (one parent's children), not a batch.
N_PLUS_ONE_MAX_ROWS_PER_CALL = 20.0
# ... and costing a real share of database time (else it is harmless chatter).
N_PLUS_ONE_MIN_TIME_SHARE = 0.10
# A table is "seq-scan heavy" when most of its reads are sequential scans and each scan reads many
# rows (pghero flags tables over 10k rows with a low index-use rate).
SEQ_SCAN_MIN_ROWS = 10_000
SEQ_SCAN_MIN_SHARE = 0.5

_COUNTERS = ("calls", "total_exec_time", "rows", "shared_blks_hit", "shared_blks_read")


def statement_deltas(start: pd.DataFrame, end: pd.DataFrame) -> pd.DataFrame:
    """Per statement (queryid): calls, time and rows during the window, biggest time first."""
    s = start.set_index("queryid")
    e = end.set_index("queryid")
    cols = [c for c in _COUNTERS if c in e.columns]
    d = e[cols].sub(s[cols].reindex(e.index).fillna(0))
    # a statement whose counters went down was reset in between: its end value is the delta
    reset = (d["calls"] < 0)
    d.loc[reset, cols] = e.loc[reset, cols]
    d["query"] = e["query"]
    d = d[d["calls"] > 0].copy()
    d["mean_ms"] = d["total_exec_time"] / d["calls"]
    d["rows_per_call"] = d["rows"] / d["calls"]
    total = d["total_exec_time"].sum()
    d["time_share"] = d["total_exec_time"] / total if total else 0.0
    return d.sort_values("total_exec_time", ascending=False)


def per_request(deltas: pd.DataFrame, requests: float) -> pd.DataFrame:
    """Add calls per HTTP request and DB milliseconds per request."""
    d = deltas.copy()
    d["calls_per_request"] = d["calls"] / requests if requests else float("nan")
    d["ms_per_request"] = d["total_exec_time"] / requests if requests else float("nan")
    return d


# A statement "reads far more than it returns" when it touches at least this many buffer pages (shared blocks
# hit or read) per row it returns: a B-tree lookup touches ~3-5 pages per row (root, inner, leaf, heap), so 20
# is 4-5x that: the plan walks rows it then throws away (a sequential scan, or an index on a column that does
# not narrow the search, which no seq-scan counter shows). The lab's orders-by-user query reads ~77 pages per
# row at scale 0.1 (100k orders) and ~770 at scale 1; a statement served by a fitting index reads 1-5.
# Judged only for statements with OVERREAD_MIN_TIME_SHARE of the DB time.
OVERREAD_BLOCKS_PER_ROW = 20.0
OVERREAD_MIN_TIME_SHARE = 0.05


def blocks_per_row(deltas: pd.DataFrame) -> pd.Series:
    """Buffer pages touched per row returned (a call returning nothing counts as one row)."""
    blocks = deltas["shared_blks_hit"].fillna(0) + deltas.get("shared_blks_read", 0).fillna(0)
    rows = deltas["rows"].clip(lower=deltas["calls"]) if "calls" in deltas else deltas["rows"]
    return blocks / rows.clip(lower=1)


def over_reading(deltas: pd.DataFrame) -> pd.DataFrame:
    """Statements with a large share of DB time that read far more buffers than the rows they return, with
    ``blocks_per_row``, whatever scan their plan uses (a call returning nothing counts as one row)."""
    if deltas is None or not len(deltas) or "shared_blks_hit" not in deltas:
        return pd.DataFrame(columns=[*(deltas.columns if deltas is not None else []), "blocks_per_row"])
    d = deltas.copy()
    d["blocks_per_row"] = blocks_per_row(d)
    return d[(d["time_share"] >= OVERREAD_MIN_TIME_SHARE) & (d["blocks_per_row"] >= OVERREAD_BLOCKS_PER_ROW)]


def n_plus_one(deltas: pd.DataFrame) -> pd.DataFrame:
    """Statements that look like a loop issuing one query per parent row (needs per_request())."""
    return deltas[(deltas["calls_per_request"] >= N_PLUS_ONE_MIN_CALLS_PER_REQUEST)
                  & (deltas["rows_per_call"] <= N_PLUS_ONE_MAX_ROWS_PER_CALL)
                  & (deltas["time_share"] >= N_PLUS_ONE_MIN_TIME_SHARE)]


def table_deltas(start: pd.DataFrame, end: pd.DataFrame) -> pd.DataFrame:
    s = start.set_index("relname")
    e = end.set_index("relname")
    cols = ["seq_scan", "seq_tup_read", "idx_scan", "n_tup_ins", "n_tup_upd", "n_tup_del"]
    d = e[cols].sub(s[cols].reindex(e.index).fillna(0))
    d["n_live_tup"] = e["n_live_tup"]
    scans = d["seq_scan"] + d["idx_scan"]
    d["seq_share"] = (d["seq_scan"] / scans).where(scans > 0, 0.0)
    d["rows_per_seq_scan"] = (d["seq_tup_read"] / d["seq_scan"]).where(d["seq_scan"] > 0, 0.0)
    return d.sort_values("seq_tup_read", ascending=False)


def seq_scan_heavy(tables: pd.DataFrame) -> pd.DataFrame:
    return tables[(tables["n_live_tup"] >= SEQ_SCAN_MIN_ROWS) & (tables["seq_share"] >= SEQ_SCAN_MIN_SHARE)
                  & (tables["seq_scan"] > 0)]


def indexes_by_table(indexes: pd.DataFrame) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _, row in indexes.iterrows():
        out.setdefault(row["tablename"], []).append(row["indexname"])
    return out


# A session idle in an open transaction for this long is holding its connection, not pausing between two
# statements: a web request's transaction lasts milliseconds, so 10 s is already two orders of magnitude out.
IDLE_TX_HOLD_S = 10.0
IDLE_TX_STATES = ("idle in transaction", "idle in transaction (aborted)")


def idle_tx_holders(activity: pd.DataFrame | None, min_idle_s: float = IDLE_TX_HOLD_S) -> pd.DataFrame:
    """Sessions holding a connection idle in an open transaction, grouped by who holds them: columns
    application_name, usename, client_addr, sessions, longest_idle_s, longest_xact_s; most sessions first.
    A recorded bundle without ``client_addr`` / ``usename`` groups them under ``?``."""
    cols = ["application_name", "usename", "client_addr", "sessions", "longest_idle_s", "longest_xact_s"]
    if activity is None or not len(activity) or "state" not in activity:
        return pd.DataFrame(columns=cols)
    a = activity.loc[activity["state"].isin(IDLE_TX_STATES) & (activity["duration_s"] >= min_idle_s)].copy()
    if not len(a):
        return pd.DataFrame(columns=cols)
    for c in ("application_name", "usename", "client_addr"):
        a[c] = a[c].fillna("?").astype(str) if c in a else "?"
    if "xact_duration_s" not in a:
        a["xact_duration_s"] = a["duration_s"]
    g = a.groupby(["application_name", "usename", "client_addr"]).agg(
        sessions=("state", "size"), longest_idle_s=("duration_s", "max"), longest_xact_s=("xact_duration_s", "max"))
    return g.reset_index().sort_values(["sessions", "longest_idle_s"], ascending=False, ignore_index=True)[cols]


def activity_by_state(activity: pd.DataFrame) -> pd.DataFrame:
    g = activity.groupby("state").agg(connections=("state", "size"), longest_s=("duration_s", "max"))
    return g.sort_values("connections", ascending=False)


def _fingerprint(query: str) -> str:
    import pglast  # imported here: the notebooks' other helpers do not need the parser

    try:
        return pglast.fingerprint(query)
    except Exception:  # noqa: BLE001 - an unparseable text (truncated, hidden) is its own group
        return f"text:{query}"


def fingerprint_groups(deltas: pd.DataFrame) -> pd.DataFrame:
    """Statement deltas summed per pglast fingerprint (needs per_request() columns).

    pg_stat_statements gives one queryid per role, per database and per IN-list length; the same
    statement issued from a loop can so be split over several rows. Grouping by the parse-tree
    fingerprint puts them back together before N+1 detection. The index is the queryid with the most
    time in each group; ``queryids`` lists all of them. Same columns as the input otherwise.
    """
    if deltas.empty:
        out = deltas.copy()
        out["fingerprint"] = pd.Series(dtype=str)
        out["queryids"] = pd.Series(dtype=object)
        return out
    d = deltas.copy()
    d["fingerprint"] = [_fingerprint(q) for q in d["query"]]
    d = d.sort_values("total_exec_time", ascending=False)
    counters = [c for c in _COUNTERS if c in d.columns] + [c for c in ("calls_per_request", "ms_per_request")
                                                           if c in d.columns]
    g = d.groupby("fingerprint", sort=False)
    out = g[counters].sum()
    out["query"] = g["query"].first()
    out["queryids"] = g.apply(lambda x: [int(i) for i in x.index], include_groups=False)
    out["fingerprint"] = out.index
    out.index = pd.Index([int(g.get_group(f).index[0]) for f in out.index], name=deltas.index.name or "queryid")
    out["mean_ms"] = out["total_exec_time"] / out["calls"]
    out["rows_per_call"] = out["rows"] / out["calls"]
    total = out["total_exec_time"].sum()
    out["time_share"] = out["total_exec_time"] / total if total else 0.0
    return out.sort_values("total_exec_time", ascending=False)


def to_snapshots(start: Any, end: Any, requests: float | None) -> Snapshots:
    """The ``Snapshots`` the hypotheses and the index candidates read, from two live snapshots
    (``sources.pg_statistics.DbSnapshot``: statements, tables, indexes, activity).

    ``requests``: HTTP requests served during the window (request_rate x window seconds); None leaves
    calls per request unknown (NaN), so no statement is flagged N+1.
    """
    deltas = statement_deltas(start.statements, end.statements)
    return Snapshots(statements=per_request(deltas, requests or 0.0),
                     tables=table_deltas(start.tables, end.tables),
                     indexes=end.indexes, activity=end.activity)
