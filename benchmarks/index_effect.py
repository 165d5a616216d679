"""What the advisor's indexes buy: DB time per request and statement mean time, before vs after, one run.

    .venv/bin/python benchmarks/index_effect.py [--scale 2.0] [--rounds 5] [--requests 10]

A private PostgreSQL (own folder, free port) seeded with ``runbook_lib.lab.workload`` (a known N+1 and
two missing indexes). Each phase serves ``--rounds`` rounds of ``--requests`` simulated requests, the
same request seeds in both phases, and every round is measured from pg_stat_statements deltas (two
snapshots around the round). Between the phases the advisor runs on the "before" window and its
proposals are applied through the action framework (CREATE INDEX CONCURRENTLY, verified by EXPLAIN).
Medians over the rounds. Prints the figures and writes benchmarks/results/index_effect.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runbook_lib.actions import CreateIndex, execute
from runbook_lib.diagnose import statements as db_dx
from runbook_lib.lab import workload
from runbook_lib.lab.servers import PostgresServer
from runbook_lib.plan import index_advisor as advisor
from runbook_lib.settings import Settings
from runbook_lib.sources import pg_statistics as stats

RESULTS = ROOT / "benchmarks" / "results" / "index_effect.json"


def measure_phase(dsn: str, sizes: dict, rounds: int, requests: int) -> dict:
    """Per round: DB ms per request, statement mean ms, client wall ms per request; medians over rounds."""
    per_round = []
    with stats.connect(dsn) as conn:
        for r in range(rounds):
            start = stats.collect(conn)
            t = time.perf_counter()
            workload.run_requests(dsn, requests, sizes["users"], sizes["products"], seed_value=1000 + r)
            wall = time.perf_counter() - t
            end = stats.collect(conn)
            # grouped by fingerprint: psycopg binds small ints as int2 and larger ones as int4, which gives one
            # statement several queryids
            d = db_dx.fingerprint_groups(
                db_dx.per_request(db_dx.statement_deltas(start.statements, end.statements), requests))
            per_round.append({"db_ms_per_request": float(d["total_exec_time"].sum() / requests),
                              "wall_ms_per_request": wall * 1000 / requests,
                              "mean_ms": {q: float(m) for q, m in zip(d["query"], d["mean_ms"], strict=True)},
                              "calls_per_request": {q: float(c) for q, c in
                                                    zip(d["query"], d["calls_per_request"], strict=True)}})
    queries = sorted({q for r in per_round for q in r["mean_ms"]})
    return {
        "db_ms_per_request": round(statistics.median(r["db_ms_per_request"] for r in per_round), 3),
        "wall_ms_per_request": round(statistics.median(r["wall_ms_per_request"] for r in per_round), 3),
        "statements": {q: {"mean_ms": round(statistics.median(r["mean_ms"].get(q, 0.0) for r in per_round), 4),
                           "calls_per_request": round(statistics.median(
                               r["calls_per_request"].get(q, 0.0) for r in per_round), 2)} for q in queries},
        "rounds": [round(r["db_ms_per_request"], 3) for r in per_round],
    }


def propose_and_apply(dsn: str, sizes: dict, requests: int, run_dir: Path) -> list[dict]:
    with stats.connect(dsn) as conn:
        start = stats.collect(conn)
        workload.run_requests(dsn, requests, sizes["users"], sizes["products"], seed_value=1)
        end = stats.collect(conn)
        snap = db_dx.to_snapshots(start, end, requests)
        proposals = advisor.advise(conn, snap.statements, snap.tables, snap.indexes).proposals
    settings = Settings.model_validate({
        "incident": {"id": "bench-index-effect", "title": "index effect benchmark"}, "mode": "lab",
        "source": {"kind": "fixture", "bundle": "fixtures/d2-latency"}, "postgres": {"dsn": dsn},
        "remediation": {"apply": True}})
    t = time.perf_counter()
    outcomes = execute([CreateIndex(**p.action_inputs()) for p in proposals], settings, run_dir, actor="benchmark")
    build_s = time.perf_counter() - t
    out = []
    with psycopg.connect(dsn) as c:
        for p, o in zip(proposals, outcomes, strict=True):
            name = CreateIndex(**p.action_inputs()).index_name
            real = c.execute("SELECT pg_relation_size(%s::regclass)", (name,)).fetchone()[0]
            out.append({"ddl": p.ddl, "estimated_size_bytes": p.size_bytes, "real_size_bytes": real,
                        "weighted_plan_cost_cut": p.weighted_reduction, "status": o.status, "verified": o.verified,
                        "statements": [s["query"] for s in p.statements]})
    out.append({"build_and_verify_s_total": round(build_s, 3)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=2.0, help="workload size (1.0 = 20k users, 100k orders)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=10, help="requests per round")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="runbook-bench-ix-", dir="/tmp"))
    folder.chmod(0o755)
    server = PostgresServer(folder / "pg")
    try:
        server.start()
        name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(server.dsn(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        dsn = server.dsn(name)
        t = time.perf_counter()
        sizes = workload.seed(dsn, args.scale)
        seed_s = time.perf_counter() - t
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION hypopg")
        before = measure_phase(dsn, sizes, args.rounds, args.requests)
        run_dir = folder / "run"
        run_dir.mkdir()
        indexes = propose_and_apply(dsn, sizes, args.requests, run_dir)
        after = measure_phase(dsn, sizes, args.rounds, args.requests)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    side = {q: {"before_mean_ms": before["statements"][q]["mean_ms"],
                "after_mean_ms": after["statements"].get(q, {}).get("mean_ms"),
                "calls_per_request": before["statements"][q]["calls_per_request"]}
            for q in before["statements"]}
    result = {
        "what": "DB time per request and statement mean time before vs after the advisor's indexes "
                "(runbook_lib.lab.workload, pg_stat_statements deltas per round, medians)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "scale": args.scale, "sizes": sizes, "seed_s": round(seed_s, 2), "rounds": args.rounds,
        "requests_per_round": args.requests, "indexes": indexes,
        "db_ms_per_request": {"before": before["db_ms_per_request"], "after": after["db_ms_per_request"],
                              "speedup": round(before["db_ms_per_request"] / after["db_ms_per_request"], 1)},
        "wall_ms_per_request": {"before": before["wall_ms_per_request"], "after": after["wall_ms_per_request"]},
        "rounds_db_ms_per_request": {"before": before["rounds"], "after": after["rounds"]},
        "statements": side,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"DB time per request: {before['db_ms_per_request']:.2f} ms -> {after['db_ms_per_request']:.2f} ms "
          f"({result['db_ms_per_request']['speedup']}x); client wall per request "
          f"{before['wall_ms_per_request']:.1f} -> {after['wall_ms_per_request']:.1f} ms")
    for q, v in side.items():
        print(f"  {v['before_mean_ms']:>9.3f} -> {v['after_mean_ms'] if v['after_mean_ms'] is not None else 0:>7.3f} "
              f"ms  x{v['calls_per_request']:<5} {q[:90]}")
    for ix in indexes[:-1]:
        print(f"  {ix['status']}: {ix['ddl']} (est. {ix['estimated_size_bytes'] / 2**20:.1f} MiB, "
              f"real {ix['real_size_bytes'] / 2**20:.1f} MiB)")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
