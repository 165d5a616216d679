"""The shape of the incident in the lab, measured: healthy baseline, degraded, every fix applied by hand.

    .venv/bin/python benchmarks/lab_shape.py [--rate 20] [--measure 60] [--warm 20] [--scale 1.0]

One full-size lab (own state folder, free ports) and the same bounded load in each phase (Poisson
arrivals at --rate, Zipf popularity, a different seed per phase so the cache is not handed the answers):

1. healthy  - ``--profile healthy`` (indexes, join, normalized keys, TTL 300 s, 512 MB, pool 10 / 5 s);
2. degraded - ``runbook lab profile degraded`` (the seed incident's root causes);
3. fixed    - each fix by hand, as the runbook would: CREATE INDEX CONCURRENTLY x2, orders_query=join,
              normalized keys + TTL 300 s, Redis CONFIG SET maxmemory 512mb, pool 10 / 5 s.

Every phase warms up first, then measures; figures come from Prometheus over the measured window
(server side, what lab.yaml reads) and from the load generator (client side, incl. its own CPU time).
Writes benchmarks/results/lab_shape.json and prints the verdict on each target of issue 3 item 6.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runbook_lib.lab import seed as seeding
from runbook_lib.lab import stack
from runbook_lib.lab.config import CONFIG_FILE, HEALTHY, REDIS_MAXMEMORY, patch_config
from runbook_lib.lab.load import INCIDENT_RATE, LoadSpec, run_load_sync
from runbook_lib.lab.servers import wait_until

RESULTS = ROOT / "benchmarks" / "results" / "lab_shape.json"
SCRAPE_WAIT_S = 10.0

SERVER_QUERIES = {  # {w}: the measured window, e.g. 60s
    "p50_ms": 'histogram_quantile(0.50, sum by (le) (increase(http_request_duration_seconds_bucket{{job="lab"}}[{w}]))) * 1000',
    "p95_ms": 'histogram_quantile(0.95, sum by (le) (increase(http_request_duration_seconds_bucket{{job="lab"}}[{w}]))) * 1000',
    "p99_ms": 'histogram_quantile(0.99, sum by (le) (increase(http_request_duration_seconds_bucket{{job="lab"}}[{w}]))) * 1000',
    "rps": 'sum(rate(http_request_duration_seconds_count{{job="lab"}}[{w}]))',
    "error_ratio_5xx": '(sum(increase(http_request_duration_seconds_count{{job="lab",status=~"5.."}}[{w}])) or vector(0))'
                       ' / sum(increase(http_request_duration_seconds_count{{job="lab"}}[{w}]))',
    "cache_hit_ratio": 'sum(increase(cache_hits_total{{job="lab"}}[{w}])) / (sum(increase(cache_hits_total{{job="lab"}}[{w}]))'
                       ' + sum(increase(cache_misses_total{{job="lab"}}[{w}])))',
    "db_queries_per_request": 'sum(increase(db_query_duration_seconds_count{{job="lab"}}[{w}]))'
                              ' / sum(increase(http_request_duration_seconds_count{{job="lab"}}[{w}]))',
    "db_query_latency_ms": 'sum(increase(db_query_duration_seconds_sum{{job="lab"}}[{w}]))'
                           ' / sum(increase(db_query_duration_seconds_count{{job="lab"}}[{w}])) * 1000',
    "machine_cpu_utilization": '1 - avg(rate(node_cpu_seconds_total{{job="lab",mode="idle"}}[{w}]))',
    "backend_cpu_cores": 'sum(rate(process_cpu_seconds_total{{job="lab",role="replica"}}[{w}]))',
}


def measure(info: dict, spec: LoadSpec) -> dict:
    t0 = time.time()
    client = run_load_sync(info["backend_url"], spec).summary()
    t1 = time.time()
    prom = info["prometheus_url"]
    wait_until(lambda: (stack.prom_value(prom, 'max(timestamp(up{job="lab",role="node"}))') or 0) > t1 + 0.5,
               SCRAPE_WAIT_S, "a scrape after the load")
    window = f"{math.ceil(t1 - t0)}s"
    server = {}
    for name, q in SERVER_QUERIES.items():
        v = stack.prom_value(prom, q.format(w=window), at=t1 + 0.5)
        server[name] = None if v is None or math.isnan(v) else round(v, 4)
    load1 = os.getloadavg()[0]
    return {"window_s": round(t1 - t0, 1), "server": server, "client": client, "loadavg_1m_after": load1}


def fix_by_hand(state: Path, info: dict) -> list[str]:
    """The runbook's remediation, one real change at a time."""
    done = seeding.set_fix_indexes(info["dsn"], True)
    patch_config(state / CONFIG_FILE, orders_query="join")
    done.append("config: orders_query=join")
    patch_config(state / CONFIG_FILE, cache_key_scheme="normalized", cache_ttl_s=HEALTHY.cache_ttl_s)
    done.append(f"config: cache_key_scheme=normalized cache_ttl_s={HEALTHY.cache_ttl_s:g}")
    r = redis.Redis.from_url(info["redis_url"])
    r.config_set("maxmemory", REDIS_MAXMEMORY["healthy"])
    r.close()
    done.append(f"redis: CONFIG SET maxmemory {REDIS_MAXMEMORY['healthy']}")
    patch_config(state / CONFIG_FILE, db_pool_max=HEALTHY.db_pool_max, db_pool_timeout_s=HEALTHY.db_pool_timeout_s)
    done.append(f"config: db_pool_max={HEALTHY.db_pool_max} db_pool_timeout_s={HEALTHY.db_pool_timeout_s:g}")
    return done


def verdict(h: dict, d: dict, f: dict) -> dict:
    hs, ds, fs = h["server"], d["server"], f["server"]
    ratio = (ds["p95_ms"] / hs["p95_ms"]) if hs["p95_ms"] else None
    client_ratio = d["client"]["p95_ms"] / h["client"]["p95_ms"]
    return {
        "degraded_p95_over_healthy (>= 10)": round(ratio, 1) if ratio else None,
        "degraded_p95_over_healthy_client_side (>= 10)": round(client_ratio, 1),
        "degraded_cache_hit_ratio (< 0.15)": ds["cache_hit_ratio"],
        "degraded_5xx_ratio (0.03..0.20)": ds["error_ratio_5xx"],
        "degraded_db_queries_per_request (>= 10)": ds["db_queries_per_request"],
        "fixed_p95_over_healthy (<= 2)": round(fs["p95_ms"] / hs["p95_ms"], 2) if hs["p95_ms"] else None,
        "fixed_p95_over_healthy_client_side (<= 2)": round(f["client"]["p95_ms"] / h["client"]["p95_ms"], 2),
        "loadgen_cpu_share_of_machine (max over phases)": round(max(
            p["client"]["loadgen_cpu_share_of_one_core"] for p in (h, d, f)) / (os.cpu_count() or 1), 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=INCIDENT_RATE, help="requests per second (default: %(default)s)")
    p.add_argument("--measure", type=float, default=60.0, help="measured seconds per phase")
    p.add_argument("--warm", type=float, default=20.0, help="warm-up seconds before each measurement")
    p.add_argument("--scale", type=float, default=1.0)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="runbook-labshape-", dir="/tmp"))
    state.chmod(0o755)
    out: dict = {"benchmark": "lab_shape", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "rate": args.rate, "measure_s": args.measure, "warm_s": args.warm, "scale": args.scale,
                 "machine_cpus": os.cpu_count(), "phases": {}}
    try:
        info = stack.up(state, scale=args.scale, profile="healthy", ports="free")
        users = seeding.SeedSize.at_scale(args.scale).users

        def phase(name: str, seed: int) -> dict:
            run_load_sync(info["backend_url"], LoadSpec(duration_s=args.warm, rate=args.rate, users=users,
                                                         seed=seed + 100))
            res = measure(info, LoadSpec(duration_s=args.measure, rate=args.rate, users=users, seed=seed))
            out["phases"][name] = res
            print(f"{name:<9} server {json.dumps(res['server'])}", flush=True)
            c = res["client"]
            print(f"{'':<9} client p50 {c['p50_ms']} p95 {c['p95_ms']} 5xx {c['error_ratio_5xx']} "
                  f"rps {c['rps']} loadgen cpu {c['loadgen_cpu_share_of_one_core']} of one core", flush=True)
            return res

        h = phase("healthy", 1)
        out["degrade_actions"] = stack.apply_profile("degraded", state)
        d = phase("degraded", 2)
        out["fix_actions"] = fix_by_hand(state, info)
        f = phase("fixed", 3)
        out["verdict"] = verdict(h, d, f)
    finally:
        stack.down(state)
        shutil.rmtree(state, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for k, v in out.get("verdict", {}).items():
        print(f"{k:<50} {v}")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
