"""Connection-pool diagnosis: who holds the server's connections, and how many the app really needs.

From pg_stat_activity (one row per client backend) against ``max_connections``: connections by state
(active, idle, idle in transaction), what active ones wait on, statements running longer than
LONG_RUNNING_S and transactions left idle in transaction. With the app's pool metrics (pool size,
in use, waiting) it says whether the pool, not the server, is the bottleneck.

The recommended pool size comes from Little's law, L = lambda * W: the average number of statements
executing at once equals the DB time spent in the window divided by its length (sum of
``total_exec_time`` deltas / window). Arrivals are bursty, so the size covers the mean plus
BURST_SIGMAS standard deviations of a Poisson count (sqrt(L)), times CONNECTION_HOLD_FACTOR for the
time a connection is held around its statements (network round trips, app code inside the
transaction). It is a figure for the app owner; the runbook does not change the app's pool.

Pure: DataFrames and numbers in, a dict out.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

# PgHero's default "long running query" threshold is 60 s (PgHero.long_running_query_sec).
LONG_RUNNING_S = 60.0
# An idle-in-transaction session holds locks and a snapshot; PgHero lists them; flag from 10 s.
IDLE_IN_TRANSACTION_S = 10.0
# Server-side: warn when client backends use this share of the connections a non-superuser may open
# (max_connections - superuser_reserved_connections); a common alerting threshold.
CONNECTIONS_WARN_SHARE = 0.8
# Pool saturated: in use at >= 95% of its size (same bar as the hypotheses' POOL_SATURATED_SHARE).
POOL_SATURATED_SHARE = 0.95
# Poisson arrivals: mean + 3 sigma covers ~99.9% of instants.
BURST_SIGMAS = 3.0
# A pooled connection is held somewhat longer than its statements run (round trips, app code between
# statements); 1.5x is a conservative allowance without per-request tracing.
CONNECTION_HOLD_FACTOR = 1.5
# Never recommend fewer connections than this per replica (one slow request must not starve the others).
MIN_POOL_PER_REPLICA = 2


def by_state(activity: pd.DataFrame) -> pd.DataFrame:
    """connections, longest seconds and waiting backends per state."""
    if activity.empty:
        return pd.DataFrame(columns=["connections", "longest_s", "waiting"])
    a = activity.copy()
    a["waiting"] = a["wait_event_type"].notna() & (a["wait_event_type"] != "") & (a["wait_event_type"] != "Client")
    g = a.groupby("state").agg(connections=("state", "size"), longest_s=("duration_s", "max"),
                               waiting=("waiting", "sum"))
    return g.sort_values("connections", ascending=False)


def waits(activity: pd.DataFrame) -> pd.DataFrame:
    """Active backends by what they wait on (wait_event_type / wait_event)."""
    a = activity[(activity["state"] == "active") & activity["wait_event_type"].notna()].copy()
    if "wait_event" not in a:  # recorded snapshots may carry the type only
        a["wait_event"] = ""
    if a.empty:
        return pd.DataFrame(columns=["wait_event_type", "wait_event", "backends"])
    return (a.groupby(["wait_event_type", "wait_event"], dropna=False).size().rename("backends")
            .reset_index().sort_values("backends", ascending=False))


def littles_law_pool(db_time_ms: float, window_s: float, replicas: int = 1) -> dict[str, float]:
    """Average concurrency in the window and the pool size per replica that covers its bursts."""
    if window_s <= 0:
        return {"concurrency": float("nan"), "recommended_total": float("nan"), "recommended_per_replica": float("nan")}
    concurrency = db_time_ms / 1000.0 / window_s
    peak = (concurrency + BURST_SIGMAS * math.sqrt(concurrency)) * CONNECTION_HOLD_FACTOR
    total = max(math.ceil(peak), MIN_POOL_PER_REPLICA * max(replicas, 1))
    return {"concurrency": round(concurrency, 3), "recommended_total": total,
            "recommended_per_replica": max(math.ceil(total / max(replicas, 1)), MIN_POOL_PER_REPLICA)}


def diagnose(activity: pd.DataFrame, settings: dict[str, Any], statements: pd.DataFrame | None,
             window_s: float, app_pool: dict[str, Any] | None = None, database: str | None = None) -> dict[str, Any]:
    """Findings about connections; ``app_pool`` holds the app's pool metrics when known:
    ``db_pool_max`` (per replica), ``replicas``, ``in_use``, ``waiting``, ``timeouts``."""
    app_pool = app_pool or {}
    mine = activity if database is None or "datname" not in activity else activity[activity["datname"] == database]
    max_conn = int(settings.get("max_connections") or 0)
    usable = max_conn - int(settings.get("superuser_reserved_connections") or 0)
    states = by_state(mine)
    count = {s: int(states.loc[s, "connections"]) if s in states.index else 0
             for s in ("active", "idle", "idle in transaction", "idle in transaction (aborted)")}
    long_running = mine[(mine["state"] == "active") & (mine["duration_s"] >= LONG_RUNNING_S)]
    idle_tx = mine[mine["state"].str.startswith("idle in transaction") & (mine["duration_s"] >= IDLE_IN_TRANSACTION_S)]
    findings: list[str] = []
    share = len(activity) / usable if usable > 0 else float("nan")
    if usable > 0 and share >= CONNECTIONS_WARN_SHARE:
        findings.append(f"server connections at {share:.0%} of the {usable} a client may open")
    if len(long_running):
        findings.append(f"{len(long_running)} statement(s) running >= {LONG_RUNNING_S:.0f} s "
                        f"(longest {long_running['duration_s'].max():.0f} s)")
    if len(idle_tx):
        findings.append(f"{len(idle_tx)} session(s) idle in transaction >= {IDLE_IN_TRANSACTION_S:.0f} s: they hold "
                        "locks and pool connections")
    db_time = float(statements["total_exec_time"].sum()) if statements is not None and len(statements) else 0.0
    replicas = int(app_pool.get("replicas") or 1)
    sizing = littles_law_pool(db_time, window_s, replicas)
    pool_max = app_pool.get("db_pool_max")
    pool_state = None
    if pool_max:
        total_pool = float(pool_max) * replicas
        in_use = app_pool.get("in_use")
        saturated = bool(in_use is not None and in_use >= POOL_SATURATED_SHARE * total_pool)
        pool_state = {"pool_max_per_replica": pool_max, "replicas": replicas, "pool_total": total_pool,
                      "in_use": in_use, "waiting": app_pool.get("waiting"), "timeouts": app_pool.get("timeouts"),
                      "saturated": saturated}
        if saturated:
            findings.append(f"app pool saturated: {in_use:.0f} of {total_pool:.0f} connections in use"
                            + (f", {app_pool['waiting']:.0f} requests waiting" if app_pool.get("waiting") else ""))
        if not math.isnan(sizing["recommended_total"]) and sizing["recommended_total"] > total_pool:
            findings.append(f"measured concurrency needs ~{sizing['recommended_total']} connections; the pool has "
                            f"{total_pool:.0f}: queries are too slow for this pool (fix them first) or the pool is small")
        if usable > 0 and total_pool > usable:
            findings.append(f"app pools ({total_pool:.0f}) can open more connections than the server allows ({usable})")
    return {
        "max_connections": max_conn, "usable_connections": usable, "server_client_backends": len(activity),
        "server_share": None if math.isnan(share) else round(share, 3),
        "by_state": count, "waits": waits(mine).to_dict("records"),
        "long_running": long_running[["pid", "duration_s", "query"]].to_dict("records")
        if "pid" in long_running else long_running[["duration_s", "query"]].to_dict("records"),
        "idle_in_transaction": len(idle_tx),
        "app_pool": pool_state, "littles_law": {"db_time_ms": round(db_time, 1), "window_s": window_s, **sizing},
        "findings": findings,
    }
