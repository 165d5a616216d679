"""Cache hit ratio before vs after the runbook's cache remediation, in the lab, under the same load.

    .venv/bin/python benchmarks/cache_recovery.py [--rate 18] [--warm 20] [--measure 60] [--top-n 300]

One full-size lab (own state folder, free ports) in the degraded profile (5 s TTL, keys with the request
time, maxmemory 2 MB). Only the cache is remediated; the database stays degraded (no indexes, N+1, small
pool), so latency is not the point here, the hit ratio is.

1. before: warm-up load, then a measured window watched by ``collect.collect`` (Redis INFO deltas, names
   seen by SCAN passes, key sample), the app's own hit ratio (Prometheus ``increase()`` of
   cache_hits/cache_misses over the window), client p95;
2. diagnosis: ``report.build_report`` -> recommended TTL, maxmemory, policy and key scheme;
3. remediation through the executors: ``redis.config_set`` (recommended maxmemory/policy) and ``cache.warm``
   (the top logical keys by versions seen over the window) through ``actions.execute``; ``app.config`` (key scheme, then TTL) through the
   action's own capture/apply/verify (Targets does not know the ``app`` family yet);
4. after: the same warm-up and measured window (another seed);
5. rollback of everything, checked to restore the exact prior values (CONFIG GET, config.json).

Writes benchmarks/results/cache_recovery.json and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runbook_lib.actions import AuditLog, RedisConfigSet, execute, rollback_run
from runbook_lib.actions.app_config import AppConfig
from runbook_lib.actions.cache_warm import CacheWarm
from runbook_lib.actions.rollback import undo
from runbook_lib.actions.targets import Targets
from runbook_lib.cache import collect as col
from runbook_lib.cache.report import build_report, render_text
from runbook_lib.cache.warm import lab_path, rank_keys
from runbook_lib.diagnose.cache import logical_key
from runbook_lib.lab import seed as seeding
from runbook_lib.lab import stack
from runbook_lib.lab.config import CONFIG_FILE, read_config
from runbook_lib.lab.load import INCIDENT_RATE, LoadSpec, run_load_sync
from runbook_lib.services import wait_until
from runbook_lib.settings import Settings

RESULTS = ROOT / "benchmarks" / "results" / "cache_recovery.json"
SCRAPE_WAIT_S = 10.0
APP_HIT_RATIO = ('sum(increase(cache_hits_total{{job="lab"}}[{w}])) / (sum(increase(cache_hits_total{{job="lab"}}[{w}]))'
                 ' + sum(increase(cache_misses_total{{job="lab"}}[{w}])))')


def measure(info: dict, spec: LoadSpec) -> dict:
    """One measured window: the load runs in a thread while ``collect`` watches Redis over the same window
    (INFO deltas, names-only SCAN passes, the key sample at the end); the app's ratio from Prometheus."""
    client = col.connect(info["redis_url"])
    result: dict = {}
    loader = threading.Thread(target=lambda: result.update(run_load_sync(info["backend_url"], spec).summary()))
    t0 = time.time()
    loader.start()
    snap = col.collect(client, f"lab redis {info['redis_url']}", spec.duration_s, 5000,
                       app_config=read_config(Path(info["state"]) / CONFIG_FILE).as_dict())
    loader.join(timeout=spec.duration_s + 60)
    load = result
    t1 = time.time()
    prom = info["prometheus_url"]
    wait_until(lambda: (stack.prom_value(prom, 'max(timestamp(up{job="lab",role="node"}))') or 0) > t1 + 0.5,
               SCRAPE_WAIT_S, "a scrape after the load")
    app = stack.prom_value(prom, APP_HIT_RATIO.format(w=f"{math.ceil(t1 - t0)}s"), at=t1 + 0.5)
    client.close()
    d = build_report(snap)
    r = d["redis"]
    return {"window_s": round(t1 - t0, 1), "redis_hit_ratio": r["hit_ratio"], "app_hit_ratio": app,
            "hits": r["hits"], "misses": r["misses"], "evicted_per_s": r["evicted_per_s"],
            "expired_per_s": r["expired_per_s"], "used_memory": r["used_memory"], "maxmemory": r["maxmemory"],
            "names_seen": len(snap.seen_keys), "keys_sampled": len(snap.keys),
            "client": {k: load.get(k) for k in ("completed", "p50_ms", "p95_ms", "error_ratio_5xx", "rps")},
            "report": d, "snapshot": snap}


def settings_for(info: dict) -> Settings:
    return Settings.model_validate({
        "incident": {"id": "bench-cache", "title": "cache recovery benchmark"}, "mode": "lab",
        "source": {"kind": "fixture", "bundle": "fixtures/d2-latency"},
        "remediation": {"apply": True}, "redis": {"url": info["redis_url"]}})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=INCIDENT_RATE, help="requests per second (default: %(default)s)")
    p.add_argument("--measure", type=float, default=60.0, help="measured seconds per phase (default: %(default)s)")
    p.add_argument("--warm", type=float, default=20.0, help="warm-up load seconds before each measurement")
    p.add_argument("--top-n", type=int, default=300, help="keys to warm (default: %(default)s)")
    p.add_argument("--scale", type=float, default=1.0)
    args = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="runbook-cachebench-", dir="/tmp"))
    state.chmod(0o755)
    run_dir = state / "run"
    run_dir.mkdir()
    out: dict = {"benchmark": "cache_recovery", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "rate": args.rate, "measure_s": args.measure, "warm_s": args.warm, "scale": args.scale,
                 "machine_cpus": os.cpu_count()}
    try:
        t = time.perf_counter()
        info = stack.up(state, scale=args.scale, profile="degraded", ports="free")
        info["state"] = str(state)
        out["lab_up_s"] = round(time.perf_counter() - t, 1)
        users = seeding.SeedSize.at_scale(args.scale).users

        def phase(seed: int) -> dict:
            run_load_sync(info["backend_url"], LoadSpec(duration_s=args.warm, rate=args.rate, users=users,
                                                         seed=seed + 100))
            return measure(info, LoadSpec(duration_s=args.measure, rate=args.rate, users=users, seed=seed))

        before = phase(1)
        report = before.pop("report")
        snap = before.pop("snapshot")
        print(render_text(report), flush=True)
        rec = report["recommendations"]
        settings = settings_for(info)
        cfg_file = str(state / CONFIG_FILE)
        prior_config = (state / CONFIG_FILE).read_text()
        prior_redis = col.connect(info["redis_url"]).config_get("*")

        # remediation, in the order that keeps each step useful: room first, warm, then switch the app
        t = time.perf_counter()
        redis_change = next((a["inputs"] for a in rec["actions"] if a["kind"] == "redis.config_set"), None)
        actions = [RedisConfigSet(config=redis_change)] if redis_change else []
        seen = pd.DataFrame({"key": snap.seen_keys})  # every name seen over the window: requests by key
        ranked = [i.key for i in rank_keys(seen[seen["key"].map(lambda k: lab_path(logical_key(k)) is not None)],
                                           args.top_n)]
        warm = CacheWarm(top_n=args.top_n, keys=ranked, concurrency=4, ttl_s=rec["ttl"]["recommended_s"],
                         source_url=info["backend_url"])
        actions.append(warm)
        outcomes = execute(actions, settings, run_dir)
        app_actions = [AppConfig(cache_key_scheme="normalized", config_file=cfg_file),
                       AppConfig(cache_ttl_s=rec["ttl"]["recommended_s"], config_file=cfg_file)]
        priors = []
        with Targets(settings) as targets:
            for a in app_actions:
                priors.append(a.capture(targets))
                a.apply(targets)
                assert a.verify(targets).ok
        out["remediation_s"] = round(time.perf_counter() - t, 1)
        out["outcomes"] = [{"action": o.action_id, "status": o.status, "verified": o.verified, "message": o.message}
                           for o in outcomes]
        out["app_changes"] = [a.title for a in app_actions]
        out["warm"] = {k: v for k, v in (warm.summary or {}).items() if not k.endswith("_keys") and k != "failures"}

        after = phase(2)
        after_report = after.pop("report")
        after.pop("snapshot")
        out["before"], out["after"] = before, after
        out["recommendations"] = {k: {kk: vv for kk, vv in v.items() if kk != "reasoning"} | {"reasoning": v["reasoning"]}
                                  for k, v in rec.items() if k != "actions"}
        out["after_problems"] = after_report["problems"]

        # rollback: everything back to the exact prior values
        rollback_run(run_dir, apply=True, settings=settings)
        with Targets(settings) as targets:
            log = AuditLog(run_dir)
            for a, prior in reversed(list(zip(app_actions, priors, strict=True))):
                undo(a, targets, log, prior, {}, reason="benchmark rollback")
        out["rollback_restored_exactly"] = {
            "redis_config_get_all": col.connect(info["redis_url"]).config_get("*") == prior_redis,
            "lab_config_json": (state / CONFIG_FILE).read_text() == prior_config}
    finally:
        stack.down(state)
        shutil.rmtree(state, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=str) + "\n")
    for name in ("before", "after"):
        ph = out.get(name, {})
        print(f"{name:<7} redis hit ratio {ph.get('redis_hit_ratio')}, app hit ratio {ph.get('app_hit_ratio')}, "
              f"evicted/s {ph.get('evicted_per_s')}, client p95 {ph.get('client', {}).get('p95_ms')} ms")
    print(f"warm: {out.get('warm')}")
    print(f"rollback restored exactly: {out.get('rollback_restored_exactly')}")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":

    raise SystemExit(main())
