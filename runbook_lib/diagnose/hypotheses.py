"""Root-cause hypotheses, ranked, each with its evidence and how it could be disproved.

Shape borrowed from Fiberplane's incident template: what we think, why, how to disprove it, the
evidence, the conclusion. Evidence items are checks over the symptom table and the snapshots;
confidence is the weight of the checks that support the hypothesis over the weight of all checks
that could be evaluated. Pure: no I/O.
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.diagnose import cache_findings
from runbook_lib.diagnose import cache_keys as cache_dx
from runbook_lib.diagnose import statements as db_dx
from runbook_lib.model import Evidence, Hypothesis, Snapshots
from runbook_lib.signal_catalog import PRIMARY_SIGNAL

# Pool "saturated" when in-use connections sit at >= 95% of the pool size for most of the incident.
POOL_SATURATED_SHARE = 0.95
# Saturation (the USE method's S): a host is short of CPU when its utilisation stays at or above 80 % (run
# queues grow and every request waits), of memory at 90 % (page cache squeezed, swapping or OOM kills next).
# Traffic surged when the request rate is 1.5x its baseline or more: capacity planned for the baseline plus
# the usual 30-50 % headroom is then exhausted.
CPU_SATURATED = 0.80
MEMORY_SATURATED = 0.90
TRAFFIC_SURGE_RATIO = 1.5
# The pool is held (not just busy) when sessions idle in an open transaction take at least half of it: the
# queries are then not what keeps the connections, and a longer acquire timeout would only queue requests.
POOL_HELD_SHARE = 0.5
# DB queries per HTTP request growing by more than this factor means work per request exploded
# (not just more traffic).
QUERIES_PER_REQUEST_GROWTH = 3.0








def _fmt_ratio(r: float) -> str:
    return f"{r:.1f}x" if r >= 1 else f"{r:.2f}x"


def _row(table: pd.DataFrame, name: str):
    return table.loc[name] if name in table.index else None


def cache_hypothesis(t: pd.DataFrame, snap: Snapshots, slo_hit: float) -> Hypothesis:
    h = Hypothesis("cache", "The cache stopped absorbing reads",
                   "Cache hits collapsed, so every request went to the database.",
                   "Disproved if the hit ratio stayed near its baseline, or fell only after latency rose.")
    r = _row(t, "cache_hit_ratio")
    p_onset = t.loc[PRIMARY_SIGNAL, "onset"]
    if r is not None:
        h.evidence.append(Evidence("cache hit ratio fell", f"{r.baseline:.0%} -> {r.incident:.0%}", bool(r.worse), 3))
        if pd.notna(r.onset) and pd.notna(p_onset):
            lead = (p_onset - r.onset).total_seconds()
            h.evidence.append(Evidence("hit ratio moved before latency", f"{lead:+.0f} s before p95", lead > 0, 2))
            h.first_onset = r.onset.isoformat()
    if snap.cache_findings:  # the same findings `runbook diagnose cache` reports (diagnose.cache_findings)
        ratio = snap.cache_findings[0]
        causes = [f for f in snap.cache_findings if f["weight"] and f["share"] is not None]
        h.evidence.append(Evidence(ratio["check"], f"{ratio['observed']} (SLO {slo_hit:.0%})", bool(ratio["problem"]),
                                   ratio["weight"]))
        # single-use keys, short TTLs and evictions are alternative explanations: one that carries enough of the
        # misses supports the hypothesis; the others are not evidence against it
        found = [f for f in causes if f["problem"]]
        h.evidence.append(Evidence(
            "the misses have an identified cause",
            "; ".join(f"{f['check']}: {f['share']:.0%} of {f['share_of']}" for f in found) if found else
            "no key design, TTL or eviction finding carries >= "
            f"{cache_findings.MISS_SHARE_MATTERS:.0%} of the misses", bool(found), 2))
    if snap.app_config:
        c = snap.app_config
        h.evidence.append(Evidence("app cache settings", f"TTL {c.get('cache_ttl_s')} s, key scheme "
                                   f"{c.get('cache_key_scheme')}", c.get("cache_key_scheme") == "volatile"
                                   or (c.get("cache_ttl_s") or 0) < cache_dx.SHORT_TTL_S, 1))
    return h


def database_hypothesis(t: pd.DataFrame, snap: Snapshots) -> Hypothesis:
    h = Hypothesis("database", "The database is doing far more, and slower, work per request",
                   "Missing indexes (sequential scans) and N+1 order loading make each cache miss expensive.",
                   "Disproved if DB time per request did not grow, or statements show index scans with few calls "
                   "per request.")
    q, lat, rr = _row(t, "db_query_rate"), _row(t, "db_query_latency_ms"), _row(t, "request_rate")
    if q is not None and rr is not None and rr.baseline and rr.incident:
        qpr_base, qpr_inc = q.baseline / rr.baseline, q.incident / rr.incident
        h.evidence.append(Evidence("queries per request grew", f"{qpr_base:.1f} -> {qpr_inc:.1f} per request",
                                   qpr_inc / qpr_base >= QUERIES_PER_REQUEST_GROWTH, 2))
        if pd.notna(q.onset):
            h.first_onset = q.onset.isoformat()
    if lat is not None:
        h.evidence.append(Evidence("query latency grew", f"{lat.baseline:.1f} ms -> {lat.incident:.1f} ms "
                                   f"({_fmt_ratio(lat.ratio)})", bool(lat.worse), 2))
    if snap.statements is not None:
        n1 = db_dx.n_plus_one(snap.statements)
        if len(n1):
            top = n1.iloc[0]
            obs = (f"{top.calls_per_request:.1f} calls/request, {top.rows_per_call:.1f} rows/call, "
                   f"{top.time_share:.0%} of DB time: {top.query[:70]}")
        else:
            obs = "no statement runs >= 5 times per request"
        h.evidence.append(Evidence("N+1 statement", obs, bool(len(n1)), 0))
    if snap.statements is not None and "shared_blks_hit" in snap.statements:
        over = db_dx.over_reading(snap.statements)
        obs = "; ".join(f"{r.blocks_per_row:.0f} buffers per row returned, {r.time_share:.0%} of DB time: "
                        f"{r.query[:70]}" for r in over.head(2).itertuples()) or \
            f"no statement with >= {db_dx.OVERREAD_MIN_TIME_SHARE:.0%} of DB time reads >= " \
            f"{db_dx.OVERREAD_BLOCKS_PER_ROW:.0f} buffers per row"
        h.evidence.append(Evidence("statements read far more than they return", obs, bool(len(over)), 0))
    if snap.tables is not None:
        heavy = db_dx.seq_scan_heavy(snap.tables)
        obs = ", ".join(f"{n} ({r.seq_share:.0%} seq, {r.n_live_tup:,.0f} rows)" for n, r in heavy.iterrows()) \
            or "none"
        h.evidence.append(Evidence("large tables read by sequential scans", obs, bool(len(heavy)), 0))
    # N+1, sequential scans and over-reading are alternative mechanisms (shown above with weight 0): one of them
    # found supports the hypothesis, the absence of the others is not evidence against it
    mechanisms = [e for e in h.evidence if e.weight == 0]
    if mechanisms:
        found = [e.check for e in mechanisms if e.supports]
        h.evidence.append(Evidence("the DB time has an identified cause", "; ".join(found) if found else
                                   "no N+1, sequential scan or over-reading statement", bool(found), 4))
    return h


def application_hypothesis(t: pd.DataFrame, snap: Snapshots, series: pd.DataFrame, incident) -> Hypothesis:
    h = Hypothesis("application", "The connection pool is exhausted and turns waits into 5xx",
                   "Slow queries hold every pool connection; requests that cannot get one in time fail.",
                   "Disproved if 5xx appear while the pool has free connections, or errors start before the pool fills.")
    act, pool, err = _row(t, "db_connections_active"), _row(t, "db_pool_max"), _row(t, "error_ratio")
    if act is not None and pool is not None:
        seg = series.loc[(series.index >= incident[0]) & (series.index <= incident[1])]
        share = float((seg["db_connections_active"] >= POOL_SATURATED_SHARE * seg["db_pool_max"]).mean())
        h.evidence.append(Evidence("pool at its maximum", f"{share:.0%} of the incident at >= "
                                   f"{POOL_SATURATED_SHARE:.0%} of {pool.incident:.0f} connections", share >= 0.5, 2))
        if err is not None and pd.notna(err.onset) and pd.notna(act.onset):
            after = err.onset >= act.onset
            h.evidence.append(Evidence("5xx started after the pool filled",
                                       f"pool {act.onset:%H:%M:%S}, 5xx {err.onset:%H:%M:%S}", bool(after), 1))
            h.first_onset = act.onset.isoformat()
    if err is not None:
        h.evidence.append(Evidence("5xx ratio rose", f"{err.baseline:.1%} -> {err.incident:.1%}", bool(err.worse), 1))
    if snap.activity is not None:
        by = db_dx.activity_by_state(snap.activity)
        txt = ", ".join(f"{s}: {int(r.connections)}" for s, r in by.iterrows())
        size = (snap.app_config or {}).get("db_pool_max") or (pool.incident if pool is not None else 0)
        holders = db_dx.idle_tx_holders(snap.activity)
        held = int(holders["sessions"].sum()) if len(holders) else 0
        active = int(by.loc["active", "connections"]) if "active" in by.index else 0
        # connections are taken whether they run a query or sit in an open transaction
        h.evidence.append(Evidence("backends busy or held (pg_stat_activity)", txt,
                                   bool(size and active + held >= size), 1))
        if held:
            who = "; ".join(f"{r.sessions} from {r.application_name or '(no application_name)'} "
                            f"({r.usename}@{r.client_addr}, idle up to {r.longest_idle_s:.0f} s, transaction open "
                            f"{r.longest_xact_s:.0f} s)" for r in holders.head(3).itertuples())
            share = held / size if size else 1.0
            h.evidence.append(Evidence(
                f"connections held idle in transaction (>= {db_dx.IDLE_TX_HOLD_S:.0f} s)",
                f"{held} sessions = {share:.0%} of the pool of {size:.0f}: {who}" if size else f"{held} sessions: {who}",
                share >= POOL_HELD_SHARE, 2))
    return h


def infrastructure_hypothesis(t: pd.DataFrame) -> Hypothesis:
    h = Hypothesis("infrastructure", "Hosts are short of CPU or memory, or traffic surged",
                   "A resource limit or a traffic spike slows every request.",
                   "Disproved if CPU, memory and request rate stayed at their baseline.")
    for name, what, bar in (("cpu_utilization", "CPU", CPU_SATURATED), ("memory_utilization", "memory",
                                                                         MEMORY_SATURATED)):
        r = _row(t, name)
        if r is not None:  # a resource is short when it is saturated, not when it merely rose (10% -> 28%)
            h.evidence.append(Evidence(f"{what} saturated (>= {bar:.0%})", f"{r.baseline:.0%} -> {r.incident:.0%} "
                                       f"({_fmt_ratio(r.ratio)})", bool(r.incident >= bar), 2))
    r = _row(t, "request_rate")
    if r is not None:
        h.evidence.append(Evidence(f"traffic surged (>= {TRAFFIC_SURGE_RATIO:g}x)", f"{r.baseline:.3g} -> "
                                   f"{r.incident:.3g} ({_fmt_ratio(r.ratio)})",
                                   bool(r.changed and r.ratio >= TRAFFIC_SURGE_RATIO), 2))
    return h


def rank(hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    """Most confident first; among equals, the one whose signal moved first (the cause side)."""
    return sorted(hypotheses, key=lambda h: (-h.confidence, h.first_onset or "9999"))


def build_hypotheses(table: pd.DataFrame, snap: Snapshots, series: pd.DataFrame, incident,
                     slo_hit: float) -> list[Hypothesis]:
    return rank([
        cache_hypothesis(table, snap, slo_hit),
        database_hypothesis(table, snap),
        application_hypothesis(table, snap, series, incident),
        infrastructure_hypothesis(table),
    ])


def hypotheses_frame(hyps: list[Hypothesis]) -> pd.DataFrame:
    return pd.DataFrame([{"rank": i + 1, "category": h.category, "hypothesis": h.title,
                          "confidence": h.confidence, "level": h.confidence_label,
                          "supporting": f"{sum(e.supports for e in h.evidence)}/{len(h.evidence)}",
                          "verdict": "disproved" if h.disproved else "supported"}
                         for i, h in enumerate(hyps)]).set_index("rank")


def evidence_frame(h: Hypothesis) -> pd.DataFrame:
    return pd.DataFrame([{"check": e.check, "observed": e.observed, "supports": "yes" if e.supports else "no",
                          "weight": e.weight} for e in h.evidence])


def hypotheses_from_json(findings: dict) -> list[Hypothesis]:
    """The hypotheses of findings.json (02) as objects again (03 ranks actions from them)."""
    hyps = []
    for d in findings["hypotheses"]:
        h = Hypothesis(d["category"], d["title"], d["statement"], d["disprove_by"],
                       [Evidence(**e) for e in d["evidence"]], d.get("first_onset"))
        hyps.append(h)
    return hyps
