"""Generator of the synthetic D2 latency bundle (``fixtures/d2-synthetic``): the seed incident with known ground truth.

``fixtures/d2-latency``, the bundle the runbook ships and runs by default, is recorded from the lab
(real servers); this one is made up to the seed incident's figures, and the analysis tests use it
because every onset, level and counter in it is known exactly.

The seed incident, as data: baseline p95 ~40 ms; a deploy changes the cache key scheme and TTL, the
cache hit ratio falls under 10%, the database takes every miss (N+1 order loading, sequential scans),
the pool saturates and ~10% of requests fail with 5xx; CPU and memory stay normal. Remediation at
11:30 brings p95 to ~50 ms, hit ratio ~85%, 5xx < 1%.

Every figure here is made up but internally consistent: the snapshot counters agree with the signal
rates over the snapshot window (calls per request, hits/misses, seq scans). Regenerate with::

    python -m runbook_lib.lab.synthetic fixtures/d2-synthetic --seed 42
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

STEP_S = 30
T0 = pd.Timestamp("2026-11-03T09:00:00Z")
DEPLOY = pd.Timestamp("2026-11-03T10:00:00Z")
ALERT = pd.Timestamp("2026-11-03T10:06:00Z")
FIX_INDEX = pd.Timestamp("2026-11-03T11:30:00Z")
FIX_CACHE = pd.Timestamp("2026-11-03T11:32:00Z")
WARMED = pd.Timestamp("2026-11-03T11:35:00Z")
END = pd.Timestamp("2026-11-03T12:30:00Z")
SNAP_START = pd.Timestamp("2026-11-03T10:10:00Z")
SNAP_END = pd.Timestamp("2026-11-03T11:25:00Z")

# (baseline, incident, recovered) level of every signal; shapes between levels are ramps.
LEVELS = {
    "latency_p50_ms": (18.0, 310.0, 21.0),
    "latency_p95_ms": (40.0, 800.0, 50.0),
    "latency_p99_ms": (70.0, 1900.0, 95.0),
    "request_rate": (210.0, 196.0, 212.0),
    "error_ratio": (0.002, 0.10, 0.004),
    "cache_hit_ratio": (0.90, 0.07, 0.85),
    "db_query_rate": (460.0, 4900.0, 610.0),
    "db_query_latency_ms": (2.4, 58.0, 2.9),
    "db_connections_active": (6.0, 20.0, 7.0),
    "db_pool_max": (20.0, 20.0, 20.0),
    "cpu_utilization": (0.34, 0.37, 0.35),
    "memory_utilization": (0.55, 0.56, 0.55),
}
# seconds after the deploy at which each signal starts moving and how long its ramp takes:
# the cache moves first (new key scheme = every key is cold), the database follows the misses,
# latency follows the database, errors follow pool exhaustion.
ONSET = {
    "cache_hit_ratio": (0, 60), "db_query_rate": (30, 120), "db_query_latency_ms": (60, 150),
    "db_connections_active": (60, 120), "latency_p50_ms": (90, 150), "latency_p95_ms": (90, 150),
    "latency_p99_ms": (90, 150), "error_ratio": (180, 120), "request_rate": (120, 120),
    "cpu_utilization": (60, 120), "memory_utilization": (60, 120), "db_pool_max": (0, 1),
}
RECOVERY = {  # seconds after FIX_INDEX, ramp length
    "db_query_latency_ms": (0, 120), "db_query_rate": (120, 300), "cache_hit_ratio": (120, 300),
    "db_connections_active": (60, 240), "latency_p50_ms": (60, 360), "latency_p95_ms": (60, 360),
    "latency_p99_ms": (60, 360), "error_ratio": (60, 240), "request_rate": (60, 240),
    "cpu_utilization": (60, 240), "memory_utilization": (60, 240), "db_pool_max": (0, 1),
}
NOISE = {"db_pool_max": 0.0, "cpu_utilization": 0.02, "memory_utilization": 0.005}
DEFAULT_NOISE = 0.05  # 5% multiplicative noise, like a 30 s rate() window


def _ramp(t: np.ndarray, start: float, length: float) -> np.ndarray:
    return np.clip((t - start) / max(length, 1.0), 0.0, 1.0)


def make_signals(rng: np.random.Generator) -> pd.DataFrame:
    times = pd.date_range(T0, END, freq=f"{STEP_S}s", tz="UTC", name="time")
    t = (times - DEPLOY).total_seconds().to_numpy()
    t_fix = (times - FIX_INDEX).total_seconds().to_numpy()
    out = {}
    for name, (base, inc, rec) in LEVELS.items():
        up = _ramp(t, *ONSET[name])
        down = _ramp(t_fix, *RECOVERY[name])
        level = base + (inc - base) * up
        level = level + (rec - level) * down
        noise = NOISE.get(name, DEFAULT_NOISE)
        value = level * np.exp(rng.normal(0.0, noise, len(times))) if noise else level
        if name in ("cache_hit_ratio", "error_ratio", "cpu_utilization", "memory_utilization"):
            value = np.clip(value, 0.0, 1.0)
        if name in ("db_connections_active",):
            value = np.minimum(np.round(value), LEVELS["db_pool_max"][0])
        out[name] = np.round(value, 5)
    return pd.DataFrame(out, index=times)


def _mean_between(df: pd.DataFrame, col: str, a: pd.Timestamp, b: pd.Timestamp) -> float:
    return float(df.loc[(df.index >= a) & (df.index <= b), col].mean())


# Statements of the lab backend (the same shapes the lab runs). calls_per_request is the share of
# a request's queries; rows_per_call and mean_ms describe one call during the incident.
STATEMENTS = [
    # queryid, query, calls per request (incident), rows per call, mean ms (incident), mean ms (baseline)
    (-4105843412097345231, "SELECT id, user_id, total_cents, status, created_at FROM orders "
     "WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2", 20.0, 9.6, 31.0, 2.2),
    (7781238123412390121, "SELECT id, name, email, created_at FROM users ORDER BY id LIMIT $1 OFFSET $2",
     0.45, 20.0, 1.1, 0.9),
    (2219981723641231554, "SELECT id, name, price_cents FROM products WHERE category = $1 AND status = $2 "
     "ORDER BY name LIMIT $3", 1.4, 48.0, 44.0, 3.1),
    (-771239812731298312, "SELECT count(*) AS orders, sum(total_cents) AS revenue FROM orders "
     "WHERE created_at >= $1", 0.05, 1.0, 180.0, 95.0),
    (5512390182739812733, "SELECT id, name, email, created_at FROM users WHERE id = $1", 2.1, 1.0, 0.08, 0.06),
]


def make_snapshots(df: pd.DataFrame, rng: np.random.Generator) -> dict[str, object]:
    secs = (SNAP_END - SNAP_START).total_seconds()
    requests = _mean_between(df, "request_rate", SNAP_START, SNAP_END) * secs
    snaps: dict[str, object] = {}

    # pg_stat_statements: cumulative counters at both ends of the window
    start_rows, end_rows = [], []
    for qid, query, cpr, rows, mean_ms, base_ms in STATEMENTS:
        calls0 = int(cpr * 210 * 3600 * 0.05 * (base_ms / max(mean_ms, 0.01)) + 1000)
        before = {"queryid": qid, "query": query, "calls": calls0, "total_exec_time": round(calls0 * base_ms, 3),
                  "rows": int(calls0 * rows), "shared_blks_hit": calls0 * 40, "shared_blks_read": calls0 * 2}
        d_calls = int(cpr * requests)
        after = {"queryid": qid, "query": query, "calls": calls0 + d_calls,
                 "total_exec_time": round(before["total_exec_time"] + d_calls * mean_ms, 3),
                 "rows": int(before["rows"] + d_calls * rows),
                 "shared_blks_hit": before["shared_blks_hit"] + d_calls * 35,
                 "shared_blks_read": before["shared_blks_read"] + d_calls * int(mean_ms)}
        start_rows.append(before)
        end_rows.append(after)
    snaps["pg_stat_statements.start"] = pd.DataFrame(start_rows)
    snaps["pg_stat_statements.end"] = pd.DataFrame(end_rows)

    # tables: orders and products are read by sequential scans during the incident
    orders_per_user_calls = STATEMENTS[0][2] * requests
    product_calls = STATEMENTS[2][2] * requests
    tables0 = pd.DataFrame([
        {"relname": "users", "n_live_tup": 100_000, "seq_scan": 40, "seq_tup_read": 4_000_000,
         "idx_scan": 2_500_000, "n_tup_ins": 120, "n_tup_upd": 30, "n_tup_del": 0},
        {"relname": "orders", "n_live_tup": 1_000_000, "seq_scan": 5_200, "seq_tup_read": 5_200_000_000,
         "idx_scan": 800_000, "n_tup_ins": 4_100, "n_tup_upd": 900, "n_tup_del": 0},
        {"relname": "products", "n_live_tup": 50_000, "seq_scan": 9_000, "seq_tup_read": 450_000_000,
         "idx_scan": 60_000, "n_tup_ins": 15, "n_tup_upd": 40, "n_tup_del": 0},
    ])
    tables1 = tables0.copy()
    add = {"users": (0, 0, int(STATEMENTS[4][2] * requests)),
           # orders by user: bitmap over the pkey is useless, the planner scans (parallel) chunks
           "orders": (int(orders_per_user_calls), int(orders_per_user_calls) * 1_000_000, 0),
           "products": (int(product_calls), int(product_calls) * 50_000, 0)}
    for i, row in tables1.iterrows():
        s, r, ix = add[row["relname"]]
        tables1.loc[i, "seq_scan"] += s
        tables1.loc[i, "seq_tup_read"] += r
        tables1.loc[i, "idx_scan"] += ix
        tables1.loc[i, "n_tup_ins"] += int(rng.integers(500, 900))
    snaps["pg_stat_user_tables.start"] = tables0
    snaps["pg_stat_user_tables.end"] = tables1

    snaps["pg_indexes"] = pd.DataFrame([
        {"tablename": "users", "indexname": "users_pkey", "valid": True,
         "indexdef": "CREATE UNIQUE INDEX users_pkey ON public.users USING btree (id)"},
        {"tablename": "orders", "indexname": "orders_pkey", "valid": True,
         "indexdef": "CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (id)"},
        {"tablename": "products", "indexname": "products_pkey", "valid": True,
         "indexdef": "CREATE UNIQUE INDEX products_pkey ON public.products USING btree (id)"},
    ])
    activity = [{"state": "active", "wait_event_type": "IO" if i % 3 else "", "duration_s": round(float(d), 3),
                 "query": STATEMENTS[0][1] if i % 4 else STATEMENTS[2][1]}
                for i, d in enumerate(rng.gamma(2.0, 0.03, 20))]
    activity += [{"state": "idle", "wait_event_type": "Client", "duration_s": 0.0, "query": ""}] * 3
    activity += [{"state": "idle in transaction", "wait_event_type": "Client", "duration_s": 1.8, "query": "BEGIN"}]
    snaps["pg_stat_activity"] = pd.DataFrame(activity)
    snaps["pg_settings"] = {"max_connections": 100, "server_version": "15.20",
                            "pg_stat_statements_version": "1.10"}

    # Redis INFO counters; hits/misses agree with the cache_hit_ratio signal over the window
    lookups = requests * 1.6
    hit = _mean_between(df, "cache_hit_ratio", SNAP_START, SNAP_END)
    info0 = {"keyspace_hits": 51_230_112, "keyspace_misses": 5_690_331, "evicted_keys": 12_004,
             "expired_keys": 3_410_221, "used_memory": 66_912_256, "maxmemory": 67_108_864,
             "maxmemory_policy": "volatile-lru", "connected_clients": 24, "uptime_in_seconds": 1_209_600}
    info1 = dict(info0)
    info1.update(keyspace_hits=info0["keyspace_hits"] + int(lookups * hit),
                 keyspace_misses=info0["keyspace_misses"] + int(lookups * (1 - hit)),
                 evicted_keys=info0["evicted_keys"] + int(lookups * (1 - hit) * 0.55),
                 expired_keys=info0["expired_keys"] + int(lookups * (1 - hit) * 0.4),
                 used_memory=67_080_112, uptime_in_seconds=info0["uptime_in_seconds"] + int(secs))
    snaps["redis_info.start"] = info0
    snaps["redis_info.end"] = info1
    snaps["redis_keys"] = make_key_sample(rng)
    snaps["app_config"] = {"cache_ttl_s": 5, "cache_key_scheme": "volatile", "db_pool_max": 20,
                           "db_pool_timeout_s": 0.5, "orders_query": "n_plus_one", "replicas": 2}
    return snaps


def make_key_sample(rng: np.random.Generator, n: int = 400) -> pd.DataFrame:
    """A SCAN sample: most keys carry a volatile part (timestamp, random cache-buster) and a 5 s TTL."""
    rows = []
    base_ms = int(SNAP_END.timestamp() * 1000)
    for i in range(n):
        kind = rng.choice(["users", "products", "orders", "stats", "session"], p=[0.42, 0.3, 0.18, 0.02, 0.08])
        if kind == "users":
            key = f"api:users:page={int(rng.zipf(1.6)) % 500}:ts={base_ms - int(rng.integers(0, 5000))}"
            ttl, mem = int(rng.integers(0, 6)), int(rng.integers(9_000, 14_000))
        elif kind == "products":
            cat = rng.choice(["books", "garden", "toys", "music", "tools"])
            key = f"api:products:category={cat}&status=active&_={int(rng.integers(10**9, 10**10))}"
            ttl, mem = int(rng.integers(0, 6)), int(rng.integers(4_000, 7_000))
        elif kind == "orders":
            key = f"api:users:{int(rng.zipf(1.4)) % 100000}:orders:ts={base_ms - int(rng.integers(0, 5000))}"
            ttl, mem = int(rng.integers(0, 6)), int(rng.integers(1_500, 3_000))
        elif kind == "stats":
            key = "api:dashboard:stats"
            ttl, mem = int(rng.integers(0, 6)), 900
        else:
            key = "session:%08x-%04x-4%03x-a%03x-%012x" % tuple(int(x) for x in (
                rng.integers(0, 2**32), rng.integers(0, 2**16), rng.integers(0, 2**12),
                rng.integers(0, 2**12), rng.integers(0, 2**48)))
            ttl, mem = int(rng.integers(600, 1800)), 300
        rows.append({"key": key, "type": "string", "ttl_s": ttl, "memory_bytes": mem})
    return pd.DataFrame(rows).drop_duplicates("key")


def write_bundle(folder: Path, seed: int = 42) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snapshots").mkdir(exist_ok=True)
    df = make_signals(rng)
    out = df.reset_index()
    out["time"] = out["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(folder / "signals.csv", index=False)
    snaps = make_snapshots(df, rng)
    refs = {}
    for name, data in snaps.items():
        at = SNAP_START if name.endswith(".start") else SNAP_END
        if isinstance(data, pd.DataFrame):
            rel = f"snapshots/{name}.csv"
            data.to_csv(folder / rel, index=False)
        else:
            rel = f"snapshots/{name}.json"
            (folder / rel).write_text(json.dumps(data, indent=2) + "\n")
        refs[name] = {"file": rel, "taken_at": at.isoformat().replace("+00:00", "Z")}
    iso = lambda t: t.isoformat().replace("+00:00", "Z")
    manifest = {
        "format": 1,
        "id": "d2-synthetic",
        "title": "D2: API p95 40 ms -> 800 ms after a cache key change",
        "description": "Deploy api v2.14.0 changed cache keys to include the request timestamp and cut "
                       "the TTL to 5 s. Cache hit ratio fell under 10%, the database took every miss "
                       "(N+1 order loading, sequential scans), the 20-connection pool saturated and ~10% "
                       "of requests failed. Fixed at 11:30 with indexes, a cache config fix and warming.",
        "provenance": f"synthetic: python -m runbook_lib.lab.synthetic fixtures/d2-synthetic --seed {seed} "
                      "(ground truth for the analysis tests; fixtures/d2-latency is the lab recording)",
        "step_seconds": STEP_S,
        "signals_file": "signals.csv",
        "events": [
            {"time": iso(DEPLOY), "label": "deploy api v2.14.0 (cache key + TTL change)", "kind": "deploy"},
            {"time": iso(ALERT), "label": "alert ApiLatencyP95High fired", "kind": "alert"},
            {"time": iso(FIX_INDEX), "label": "indexes on orders, products created", "kind": "remediation"},
            {"time": iso(FIX_CACHE), "label": "cache TTL 300 s, normalized keys, maxmemory 512 MB",
             "kind": "remediation"},
            {"time": iso(WARMED), "label": "cache warmed (top 5,000 keys)", "kind": "remediation"},
        ],
        "phases": {"baseline": [iso(T0), iso(DEPLOY)], "incident": [iso(DEPLOY), iso(FIX_INDEX)],
                   "recovery": [iso(WARMED), iso(END)]},
        "snapshots": refs,
    }
    (folder / "bundle.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False, width=100))
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write the synthetic D2 latency incident bundle.")
    p.add_argument("folder", type=Path)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    print(write_bundle(args.folder, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
