"""DB time per request in the lab before vs after the runbook's index actions alone, same load.

    .venv/bin/python benchmarks/lab_index_effect.py [--rate 18] [--measure 60] [--warm 15] [--scale 1.0]

One lab (own state folder, free ports) in the degraded profile. Only the indexes the runbook proposes
for the incident (orders(user_id, created_at), products(category, status)) are applied, through the
action framework (CREATE INDEX CONCURRENTLY under load); the cache and the N+1 stay degraded. DB time
per request = increase(db_query_duration_seconds_sum) / increase(http requests) over each measured
window, from the lab's Prometheus, side by side in one run. Then the indexes are rolled back.
Writes benchmarks/results/lab_index_effect.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runbook_lib.actions import CreateIndex, execute, rollback_run
from runbook_lib.lab import seed as seeding
from runbook_lib.lab import stack
from runbook_lib.lab.load import INCIDENT_RATE, LoadSpec, run_load_sync
from runbook_lib.lab.servers import wait_until
from runbook_lib.settings import Settings

RESULTS = ROOT / "benchmarks" / "results" / "lab_index_effect.json"
DB_MS_PER_REQUEST = ('1000 * sum(increase(db_query_duration_seconds_sum{{job="lab"}}[{w}])) / '
                     'sum(increase(http_request_duration_seconds_count{{job="lab"}}[{w}]))')
QUERIES_PER_REQUEST = ('sum(increase(db_query_duration_seconds_count{{job="lab"}}[{w}])) / '
                       'sum(increase(http_request_duration_seconds_count{{job="lab"}}[{w}]))')
INDEXES = [("orders", ["user_id", "created_at"]), ("products", ["category", "status"])]


def window(info: dict, spec: LoadSpec, warm_s: float) -> dict:
    run_load_sync(info["backend_url"], LoadSpec(duration_s=warm_s, rate=spec.rate, users=spec.users, seed=spec.seed + 1))
    t0 = time.time()
    client = run_load_sync(info["backend_url"], spec).summary()
    t1 = time.time()
    prom = info["prometheus_url"]
    wait_until(lambda: (stack.prom_value(prom, 'max(timestamp(up{job="lab",role="node"}))') or 0) > t1 + 0.5, 15,
               "a scrape after the load")
    w = f"{math.ceil(t1 - t0)}s"
    return {"db_ms_per_request": stack.prom_value(prom, DB_MS_PER_REQUEST.format(w=w), at=t1 + 0.5),
            "queries_per_request": stack.prom_value(prom, QUERIES_PER_REQUEST.format(w=w), at=t1 + 0.5),
            "client_p95_ms": client.get("p95_ms"), "client_5xx": client.get("error_ratio_5xx")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=INCIDENT_RATE)
    p.add_argument("--measure", type=float, default=60.0)
    p.add_argument("--warm", type=float, default=15.0)
    p.add_argument("--scale", type=float, default=1.0)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="runbook-ixbench-", dir="/tmp"))
    state.chmod(0o755)
    run_dir = state / "run"
    run_dir.mkdir()
    out: dict = {"benchmark": "lab_index_effect", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "rate": args.rate, "measure_s": args.measure, "scale": args.scale}
    try:
        info = stack.up(state, scale=args.scale, profile="degraded", ports="free")
        spec = LoadSpec(duration_s=args.measure, rate=args.rate, users=seeding.SeedSize.at_scale(args.scale).users)
        out["before"] = window(info, spec, args.warm)
        settings = Settings.model_validate({
            "incident": {"id": "bench-index", "title": "index effect"}, "mode": "lab",
            "source": {"kind": "fixture", "bundle": "fixtures/d2-latency"}, "remediation": {"apply": True},
            "postgres": {"dsn": info["dsn"]}})
        t = time.perf_counter()
        outcomes = execute([CreateIndex(table=t_, columns=c) for t_, c in INDEXES], settings, run_dir)
        out["apply_s"] = round(time.perf_counter() - t, 1)
        out["applied"] = [(o.action_id, o.status, o.verified) for o in outcomes]
        out["after"] = window(info, spec, args.warm)
        out["rolled_back"] = [(o.action_id, o.status) for o in rollback_run(run_dir, apply=True, settings=settings)]
    finally:
        stack.down(state)
        shutil.rmtree(state, ignore_errors=True)
    b, a = out["before"], out["after"]
    out["ratio_db_ms_per_request"] = round(a["db_ms_per_request"] / b["db_ms_per_request"], 4)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"DB time per request: {b['db_ms_per_request']:.1f} ms -> {a['db_ms_per_request']:.1f} ms "
          f"({out['ratio_db_ms_per_request']:.3f}x); queries/request {b['queries_per_request']:.1f} -> "
          f"{a['queries_per_request']:.1f}; client p95 {b['client_p95_ms']:.0f} -> {a['client_p95_ms']:.0f} ms; "
          f"index build {out['apply_s']} s under load")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
