"""One database diagnosis: every finding from two snapshots, as a dict/JSON or a terminal report.

``diagnose(conn, start, end, requests)`` runs the pure analyses on the window's deltas (N+1 by
fingerprint, seq-scan-heavy tables, pool) and the HypoPG advisor (the only part that needs the
connection). Statements are grouped by pglast fingerprint first: pg_stat_statements gives the same
statement several queryids when a driver binds a parameter as int2 for small values and int4 for
larger ones (psycopg does), and per-queryid figures would then undercount calls per request. A missing HypoPG does not stop the rest: the advisor's error and its fix are reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import psycopg

from runbook_lib.diagnose import statements as db_dx
from runbook_lib.errors import PgDiagnosisError
from runbook_lib.plan import index_advisor as advisor
from runbook_lib.plan import pool_sizing as pool
from runbook_lib.plan import query_rewrites as rewrite
from runbook_lib.redaction import redact, redact_text
from runbook_lib.sources import pg_statistics as stats

# Statements listed in the report (the JSON carries the same).
TOP_STATEMENTS = 10
# Query text is cut to this many characters in the text report (JSON keeps the whole text).
QUERY_WIDTH = 100


@dataclass
class DbDiagnosis:
    endpoint: str
    server: dict[str, Any]
    window: dict[str, Any]
    requests: float | None
    statements: list[dict[str, Any]]
    n_plus_one: list[dict[str, Any]]
    rewrites: list[dict[str, Any]]
    seq_scan_heavy: list[dict[str, Any]]
    over_reading: list[dict[str, Any]]
    index_proposals: list[dict[str, Any]]
    advisor: dict[str, Any]
    pool: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return redact(_clean(asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=str)

    def to_text(self) -> str:
        return redact_text(render_text(self))


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _records(df: pd.DataFrame, cols: list[str], index: str) -> list[dict[str, Any]]:
    d = df[[c for c in cols if c in df.columns]].copy()
    d.insert(0, index, d.index)
    return d.to_dict("records")


def diagnose(conn: psycopg.Connection, start: stats.DbSnapshot, end: stats.DbSnapshot, requests: float | None,
             app_pool: dict[str, Any] | None = None, endpoint: str = "", mode: str = "window") -> DbDiagnosis:
    seconds = stats.window_seconds(start, end)
    snap = db_dx.to_snapshots(start, end, requests)
    statements = snap.statements
    groups = db_dx.fingerprint_groups(statements)
    n1 = db_dx.n_plus_one(groups) if requests else groups.iloc[0:0]
    warnings = list(end.warnings)
    if not requests:
        warnings.append("no request count given (--requests or --request-rate): calls per request and N+1 "
                        "detection need it")
    heavy = db_dx.seq_scan_heavy(snap.tables).join(
        stats.statio_deltas(start.statio, end.statio)[["heap_blks_read", "heap_hit_ratio"]], how="left")
    try:
        adv = advisor.advise(conn, groups, snap.tables, snap.indexes).as_dict()
        adv["error"] = None
    except PgDiagnosisError as e:
        adv = {"proposals": [], "evaluated": 0, "skipped": [], "notes": [], "error": str(e), "hint": e.hint}
    except psycopg.Error as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        adv = {"proposals": [], "evaluated": 0, "skipped": [], "notes": [], "error": f"advisor failed: {first}",
               "hint": "the other findings stand; rerun, or check the role may CREATE hypothetical indexes (hypopg)"}
    proposals = adv.pop("proposals")
    st = end.settings
    server = {k: st.get(k) for k in ("server_version", "pg_stat_statements_version", "hypopg_version",
                                     "max_connections", "database")}
    cols = ["query", "calls", "calls_per_request", "rows_per_call", "mean_ms", "ms_per_request", "time_share"]
    return DbDiagnosis(
        endpoint=endpoint, server=server,
        window={"mode": mode, "start": start.taken_at.isoformat(), "end": end.taken_at.isoformat(),
                "seconds": round(seconds, 3)},
        requests=requests,
        statements=_records(groups.head(TOP_STATEMENTS), [*cols, "queryids"], "queryid"),
        n_plus_one=_records(n1, [*cols, "queryids"], "queryid"),
        rewrites=[r.as_dict() for r in rewrite.recommend(n1, groups)],
        seq_scan_heavy=_records(heavy, ["n_live_tup", "seq_scan", "seq_tup_read", "idx_scan", "seq_share",
                                        "rows_per_seq_scan", "heap_blks_read", "heap_hit_ratio"], "table"),
        over_reading=_records(db_dx.over_reading(groups), ["query", "calls", "rows_per_call", "blocks_per_row",
                                                           "time_share"], "queryid"),
        index_proposals=proposals, advisor=adv,
        pool=pool.diagnose(end.activity, st, statements, seconds, app_pool, database=st.get("database")),
        warnings=warnings)


# --- text -------------------------------------------------------------------------------------------


def _cut(q: str, width: int = QUERY_WIDTH) -> str:
    q = " ".join(str(q).split())
    return q if len(q) <= width else q[: width - 1] + "…"


def _num(v: Any, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def render_text(d: DbDiagnosis) -> str:
    s = d.server
    w = d.window
    out = [(f"PostgreSQL diagnosis: {d.endpoint} (PostgreSQL {s['server_version']}, pg_stat_statements "
            f"{s['pg_stat_statements_version']}, hypopg {s['hypopg_version'] or 'not installed'})")]
    how = "two snapshots" if w["mode"] == "window" else "since the last statistics reset"
    rate = f" ({d.requests / w['seconds']:.1f}/s)" if d.requests and w["seconds"] else ""
    out.append(f"Window: {w['start']} -> {w['end']} ({w['seconds']:.0f} s, {how}); requests: "
               f"{_num(d.requests, ',.0f')}{rate}")
    out += ["", "Top statements by DB time",
            f"  {'share':>6} {'calls':>9} {'calls/req':>9} {'rows/call':>9} {'mean ms':>9}  query"]
    for r in d.statements:
        out.append(f"  {r['time_share']:>6.1%} {r['calls']:>9,.0f} {_num(r.get('calls_per_request'), '>9.1f')} "
                   f"{r['rows_per_call']:>9.1f} {r['mean_ms']:>9.2f}  {_cut(r['query'], 70)}")
    if not d.statements:
        out.append("  (no statement ran in the window)")
    out += ["", "N+1 statements (one query per parent row)"]
    for r, rw in zip(d.n_plus_one, d.rewrites, strict=False):
        out.append(f"  ! {r['calls_per_request']:.1f} calls per request, {r['rows_per_call']:.1f} rows per call, "
                   f"{r['ms_per_request']:.2f} ms of DB time per request ({r['time_share']:.0%} of DB time)")
        out.append(f"    {_cut(r['query'])}")
        if rw.get("join"):
            out.append(f"    rewrite, one JOIN per page: {rw['join']}")
        if rw.get("batched"):
            out.append(f"    rewrite, one batched query:  {rw['batched']}")
        out.append(f"    note: {rw['note']}")
    if not d.n_plus_one:
        out.append("  none" + ("" if d.requests else " detected (no request count given)"))
    out += ["", "Large tables read by sequential scans"]
    for r in d.seq_scan_heavy:
        out.append(f"  {r['table']}: {r['n_live_tup']:,.0f} rows, {r['seq_share']:.0%} of scans sequential, "
                   f"{r['seq_scan']:,.0f} seq scans reading {r['rows_per_seq_scan']:,.0f} rows each; "
                   f"buffer hit ratio {_num(r.get('heap_hit_ratio'), '.1%')}, "
                   f"{_num(r.get('heap_blks_read'), ',.0f')} blocks read from disk")
    if not d.seq_scan_heavy:
        out.append("  none")
    out += ["", f"Statements reading >= {db_dx.OVERREAD_BLOCKS_PER_ROW:.0f} buffers per row returned "
                f"(>= {db_dx.OVERREAD_MIN_TIME_SHARE:.0%} of DB time; whatever scan they use)"]
    for r in d.over_reading:
        out.append(f"  ! {r['blocks_per_row']:,.0f} buffers per row, {r['rows_per_call']:.1f} rows per call, "
                   f"{r['time_share']:.0%} of DB time: {_cut(r['query'], 80)}")
    if not d.over_reading:
        out.append("  none")
    out += ["", f"Missing indexes (HypoPG what-if; kept when plan cost falls >= {advisor.MIN_COST_REDUCTION:.0%})"]
    if d.advisor.get("error"):
        out.append(f"  not evaluated: {d.advisor['error']}")
        out.append(f"  fix: {d.advisor.get('hint')}")
    for i, p in enumerate(d.index_proposals, 1):
        out.append(f"  {i}. {p['ddl']}")
        out.append(f"     est. size {p['size_bytes'] / 2**20:.1f} MiB; helps {len(p['statements'])} statement(s), "
                   f"{p['share']:.0%} of DB time; calls-weighted plan cost -{p['weighted_reduction']:.0%}")
        for st in p["statements"][:3]:
            out.append(f"     - {st['calls']:,.0f} calls, cost {st['cost_before']:,.0f} -> {st['cost_after']:,.0f}: "
                       f"{_cut(st['query'], 80)}")
    if not d.index_proposals and not d.advisor.get("error"):
        out.append(f"  none ({d.advisor.get('evaluated', 0)} candidate(s) evaluated)")
    for n in d.advisor.get("notes", []):
        out.append(f"  note: {n}")
    p = d.pool
    out += ["", "Connections",
            (f"  max_connections {p['max_connections']} ({p['usable_connections']} for clients); client backends "
             f"{p['server_client_backends']} ({_num(p['server_share'], '.0%')})"),
            "  this database: " + ", ".join(f"{k} {v}" for k, v in p["by_state"].items())]
    for wt in p["waits"][:5]:
        out.append(f"  waiting: {wt['backends']} on {wt['wait_event_type']}/{wt['wait_event']}")
    ll = p["littles_law"]
    out.append(f"  Little's law: {ll['db_time_ms'] / 1000:,.1f} s of DB time in {ll['window_s']:.0f} s = mean "
               f"concurrency {_num(ll['concurrency'], '.2f')}; recommended pool: {_num(ll['recommended_total'], '.0f')} "
               f"in total, {_num(ll['recommended_per_replica'], '.0f')} per replica (for the app owner)")
    findings = p["findings"] + d.warnings
    if findings:
        out += ["", "Findings and warnings"] + [f"  - {f}" for f in findings]
    return "\n".join(out) + "\n"
