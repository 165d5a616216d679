"""Cache hit ratio before vs after the runbook's cache remediation, in the lab, under the same load.

    .venv/bin/python benchmarks/cache_recovery.py [--rate 18] [--warm 20] [--before 300] [--every 60]
                                                  [--follow SECONDS] [--top-n 5000] [--scale 1.0]

One full-size lab (own state folder, free ports) in the degraded profile (5 s TTL, keys with the request
time, maxmemory 2 MB). Only the cache is remediated; the database stays degraded (no indexes, N+1, small
pool), so latency is not the point here, the hit ratio is.

1. before: warm-up load, then a measured window (``--before``, 5 min: the diagnosis extrapolates the
   requests it sees, and 5 min of this traffic narrow its prediction to a few points where 1 min leaves
   it open by ~15) watched by ``collect.collect`` (Redis INFO deltas, names seen by SCAN passes, key
   sample), the app's own hit ratio (Prometheus ``increase()`` of cache_hits/cache_misses), client p95;
2. diagnosis: ``report.build_report`` with its defaults -> recommended TTL (and the predicted hit ratio),
   maxmemory, policy and key scheme;
3. remediation through the executors: ``redis.config_set`` (recommended maxmemory/policy) and ``cache.warm``
   (every logical key seen over the window, by versions seen, up to ``--top-n``) through
   ``actions.execute``; ``app.config`` (key scheme, then TTL) through the action's own
   capture/apply/verify (Targets does not know the ``app`` family yet);
4. after: the same load (another seed) runs for ``--follow`` seconds (default: the recommended TTL + 15 min,
   so that every key has expired once and the ratio has settled, at most an hour); Redis INFO every
   ``--every`` seconds gives the hit ratio of each window, Prometheus the app's. Reported: the curve, the
   first window at the target, the steady value (the windows from one TTL after the fix on) and, beside
   them, the diagnosis's prediction: its closed-form long-run hit ratio (with its range), and the fitted
   model simulated request by request with the same warming (``plan.cache_simulation``: every key seen over the
   before window, jittered TTL), window by window;
5. rollback of everything, checked to restore the exact prior values (CONFIG GET, config.json).

Everything it starts (the lab, the load) is stopped on the way out, on failure and on SIGTERM too.
Writes benchmarks/results/cache_recovery.json and prints the figures. ``--resimulate FILE`` recomputes
only the model's columns of an existing result from the model stored in it (no lab).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
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
from runbook_lib.diagnose.cache_keys import logical_key
from runbook_lib.lab import seed as seeding
from runbook_lib.lab import stack
from runbook_lib.lab.config import CONFIG_FILE, read_config
from runbook_lib.lab.load import INCIDENT_RATE, MAX_DURATION_S, LoadSpec, run_load, run_load_sync
from runbook_lib.lab.servers import wait_until
from runbook_lib.plan.cache_simulation import expected_windows
from runbook_lib.plan.cache_sizing import TARGET_HIT_RATIO, fill_hit_ratio
from runbook_lib.plan.cache_warming import TTL_JITTER, lab_path, lab_route, rank_keys
from runbook_lib.report.cache_diagnosis import build_report, render_text
from runbook_lib.settings import Settings
from runbook_lib.sources import redis_snapshot as col

RESULTS = ROOT / "benchmarks" / "results" / "cache_recovery.json"
SCRAPE_WAIT_S = 10.0
APP_HIT_RATIO = ('sum(increase(cache_hits_total{{job="lab"}}[{w}])) / (sum(increase(cache_hits_total{{job="lab"}}[{w}]))'
                 ' + sum(increase(cache_misses_total{{job="lab"}}[{w}])))')
APP_BY_ROUTE = 'sum by (route) (increase(cache_{kind}_total{{job="lab"}}[{w}]))'
# After the fix the load runs the recommended TTL plus this long: every key has expired once, then 15 more
# one-minute windows show the settled ratio.
SETTLE_S = 900.0
# The "sustained" figure: the first window from which every later rolling mean over this many windows stays
# at the target (a single 60 s window holds ~1,000 lookups: +-2 points from sampling alone).
ROLLING_WINDOWS = 5
# Seeded simulations averaged for the simulated curve; points of the closed form averaged per window.
SIM_RUNS = 5
CLIMB_POINTS = 7


class Load:
    """The lab load in a thread, stoppable: ``stop()`` cancels it (the benchmark never leaves it running)."""

    def __init__(self, base_url: str, spec: LoadSpec):
        self.base_url, self.spec = base_url, spec
        self.report: dict | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        async def go():
            task = asyncio.ensure_future(run_load(self.base_url, self.spec))
            while not task.done() and not self._stop.is_set():
                await asyncio.wait({task}, timeout=0.25)
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                return await task
            return None

        try:
            rep = asyncio.run(go())
            self.report = rep.summary() if rep is not None else None
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.error = e

    def start(self) -> Load:
        self._thread.start()
        return self

    def join(self, timeout: float) -> dict:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.stop()
            raise RuntimeError(f"the load did not end within {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"the load failed: {type(self.error).__name__}: {self.error}")
        return self.report or {}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def client_figures(load: dict) -> dict:
    return {k: load.get(k) for k in ("completed", "p50_ms", "p95_ms", "error_ratio_5xx", "rps")}


def wait_scraped(prom: str, t: float) -> None:
    wait_until(lambda: (stack.prom_value(prom, 'max(timestamp(up{job="lab",role="node"}))') or 0) > t + 0.5,
               SCRAPE_WAIT_S, "a scrape after the load")


def measure(info: dict, spec: LoadSpec, loads: list[Load]) -> dict:
    """One measured window: the load runs in a thread while ``collect`` watches Redis over the same window
    (INFO deltas, names-only SCAN passes, the key sample at the end); the app's ratio from Prometheus."""
    client = col.connect(info["redis_url"])
    load = Load(info["backend_url"], spec)
    loads.append(load)
    t0 = time.time()
    load.start()
    snap = col.collect(client, f"lab redis {info['redis_url']}", spec.duration_s, 5000,
                       app_config=read_config(Path(info["state"]) / CONFIG_FILE).as_dict())
    summary = load.join(spec.duration_s + 60)
    t1 = time.time()
    prom = info["prometheus_url"]
    wait_scraped(prom, t1)
    app = stack.prom_value(prom, APP_HIT_RATIO.format(w=f"{math.ceil(t1 - t0)}s"), at=t1 + 0.5)
    client.close()
    d = build_report(snap)
    r = d["redis"]
    return {"window_s": round(t1 - t0, 1), "redis_hit_ratio": r["hit_ratio"], "app_hit_ratio": app,
            "hits": r["hits"], "misses": r["misses"], "evicted_per_s": r["evicted_per_s"],
            "expired_per_s": r["expired_per_s"], "used_memory": r["used_memory"], "maxmemory": r["maxmemory"],
            "names_seen": len(snap.seen_keys), "keys_sampled": len(snap.keys), "client": client_figures(summary),
            "report": d, "snapshot": snap}


def follow(info: dict, spec: LoadSpec, every_s: float, loads: list[Load]) -> dict:
    """The load for ``spec.duration_s`` with a Redis INFO snapshot every ``every_s``: one row per window."""
    client = col.connect(info["redis_url"])
    load = Load(info["backend_url"], spec)
    loads.append(load)
    t0 = time.time()
    load.start()
    prev = col.info_snapshot(client)
    start_info = prev
    rows = []
    n = math.floor(spec.duration_s / every_s)
    for i in range(1, n + 1):
        # pacing: the next window boundary (the windows are what is measured, not a condition to wait for)
        time.sleep(max(0.0, t0 + i * every_s - time.time()))
        cur = col.info_snapshot(client)
        hits, misses = cur["keyspace_hits"] - prev["keyspace_hits"], cur["keyspace_misses"] - prev["keyspace_misses"]
        rows.append({"t_start_s": round((i - 1) * every_s), "t_end_s": round(i * every_s),
                     "at": cur["server_time"], "hits": hits, "misses": misses,
                     "redis_hit_ratio": hits / (hits + misses) if hits + misses else None,
                     "evicted": cur["evicted_keys"] - prev["evicted_keys"],
                     "expired": cur["expired_keys"] - prev["expired_keys"],
                     "dbsize": cur["dbsize"], "used_memory": cur["used_memory"]})
        print(f"  after {i * every_s / 60:5.1f} min: redis hit ratio {rows[-1]['redis_hit_ratio']:.1%} "
              f"({hits} hits, {misses} misses), {cur['dbsize']} keys, {cur['used_memory'] / 2**20:.1f} MiB",
              flush=True)
        prev = cur
    summary = load.join(spec.duration_s - (time.time() - t0) + 60)
    t1 = time.time()
    end = col.info_snapshot(client)
    sample = col.key_sample(client, 5000)
    client.close()
    prom = info["prometheus_url"]
    wait_scraped(prom, t1)
    for r in rows:
        r["app_hit_ratio"] = stack.prom_value(prom, APP_HIT_RATIO.format(w=f"{round(every_s)}s"), at=r["at"])
    return {"t0": t0, "rows": rows, "client": client_figures(summary), "start_info": start_info, "end_info": end,
            "sample_memory_bytes": float(sample["memory_bytes"].fillna(0).sum()) if len(sample) else 0.0}


def app_by_route(prom: str, since: float, until: float) -> dict:
    w = f"{max(1, round(until - since))}s"
    out = {}
    for kind in ("hits", "misses"):
        for r in stack.prom_query(prom, APP_BY_ROUTE.format(kind=kind, w=w), at=until):
            out.setdefault(r["metric"].get("route", ""), {})[kind] = float(r["value"][1])
    return {route: {**v, "hit_ratio": v.get("hits", 0) / (v.get("hits", 0) + v.get("misses", 0))
                    if v.get("hits", 0) + v.get("misses", 0) else None} for route, v in sorted(out.items())}


def curve_figures(rows: list[dict], ttl_s: float, target: float) -> dict:
    """Time to the target, the sustained point and the steady value (windows starting >= one TTL in)."""
    first = next((r["t_end_s"] for r in rows if (r["redis_hit_ratio"] or 0) >= target), None)
    ratios = pd.Series([r["redis_hit_ratio"] for r in rows], dtype=float)
    hits = pd.Series([r["hits"] for r in rows], dtype=float)
    looks = hits + pd.Series([r["misses"] for r in rows], dtype=float)
    rolling = (hits.rolling(ROLLING_WINDOWS).sum() / looks.rolling(ROLLING_WINDOWS).sum()).tolist()
    sustained = None
    for i in range(ROLLING_WINDOWS - 1, len(rows)):
        if all(v >= target for v in rolling[i:]):
            sustained = rows[i]["t_end_s"]
            break
    steady_rows = [r for r in rows if r["t_start_s"] >= ttl_s]
    steady = None
    if steady_rows:
        h = sum(r["hits"] for r in steady_rows)
        m = sum(r["misses"] for r in steady_rows)
        sr = [r["redis_hit_ratio"] for r in steady_rows]
        steady = {"from_s": steady_rows[0]["t_start_s"], "to_s": steady_rows[-1]["t_end_s"],
                  "windows": len(steady_rows), "hits": h, "misses": m, "redis_hit_ratio": h / (h + m),
                  "min_window": min(sr), "max_window": max(sr),
                  "windows_at_or_above_target": sum(v >= target for v in sr)}
    return {"first_window_at_target_s": first, "sustained_from_s": sustained,
            "rolling_windows": ROLLING_WINDOWS, "steady": steady, "window_ratios": ratios.round(4).tolist()}


def model_columns(out: dict) -> None:
    """Add the diagnosis's model to each window of a result (from the fitted families stored in it,
    ``diagnosis.ttl.model``; pure, seeded):

    * ``cold_climb``: an empty cache, no warming, before any key expires (windows before the TTL): the
      closed form 1 - e^(-λt) averaged over the window;
    * ``simulated``: the model simulated request by request under the TTL with the warming the benchmark
      did (every key seen over the before window, jittered TTL), averaged over SIM_RUNS seeds;

    and the simulated value over the steady windows."""
    a = out["after"]
    model = out["diagnosis"]["ttl"].get("model")
    rows = a["windows"]
    if not model or not rows:
        return
    families = [(f["rate_per_s"], f["zipf_exponent"], f["keys"]) for f in model["families"]]
    total = sum(r for r, _, _ in families)
    every = rows[0]["t_end_s"] - rows[0]["t_start_s"]
    sim = expected_windows(families, a["ttl_s"], len(rows) * every, window_s=every, warm_seen_s=out["before_s"],
                           jitter=TTL_JITTER, runs=SIM_RUNS)
    for r, v in zip(rows, sim.tolist(), strict=True):
        r.pop("predicted", None)  # an earlier name of cold_climb
        pts = [r["t_start_s"] + every * (k + 0.5) / CLIMB_POINTS for k in range(CLIMB_POINTS)]
        r["cold_climb"] = (round(sum(rate * fill_hit_ratio(rate, e, n, t) for t in pts for rate, e, n in families)
                                 / total / CLIMB_POINTS, 4) if r["t_end_s"] <= a["ttl_s"] else None)
        r["simulated"] = round(v, 4)
    a["simulation"] = {"runs": SIM_RUNS, "warm_seen_s": out["before_s"], "jitter": TTL_JITTER,
                       "families": families}
    if a.get("steady"):
        steady = [r["simulated"] for r in rows if r["t_start_s"] >= a["steady"]["from_s"]]
        a["steady"]["simulated"] = round(sum(steady) / len(steady), 4)


def settings_for(info: dict) -> Settings:
    return Settings.model_validate({
        "incident": {"id": "bench-cache", "title": "cache recovery benchmark"}, "mode": "lab",
        "source": {"kind": "fixture", "bundle": "fixtures/lab-d2-latency"},
        "remediation": {"apply": True}, "redis": {"url": info["redis_url"]}})


def _terminate(signum, frame):  # SIGTERM (e.g. from `timeout`): unwind through the finally blocks
    raise SystemExit(128 + signum)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=INCIDENT_RATE, help="requests per second (default: %(default)s)")
    p.add_argument("--warm", type=float, default=20.0, help="warm-up load seconds before the before window")
    p.add_argument("--before", type=float, default=300.0, help="the measured before window (default: %(default)s)")
    p.add_argument("--every", type=float, default=60.0, help="seconds per window after the fix (default: %(default)s)")
    p.add_argument("--follow", type=float, default=None,
                   help=f"seconds of load after the fix (default: the recommended TTL + {SETTLE_S:.0f}, at most "
                        f"{MAX_DURATION_S:.0f})")
    p.add_argument("--top-n", type=int, default=5000, help="at most this many keys to warm (default: %(default)s)")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON (default: %(default)s)")
    p.add_argument("--resimulate", type=Path, metavar="FILE",
                   help="no lab: recompute the model columns of this result (written to --out) and print it")
    args = p.parse_args()
    if args.resimulate:
        out = json.loads(args.resimulate.read_text())
        model_columns(out)
        args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
        print_summary(out)
        return 0
    signal.signal(signal.SIGTERM, _terminate)
    state = Path(tempfile.mkdtemp(prefix="runbook-cachebench-", dir="/tmp"))
    state.chmod(0o755)
    run_dir = state / "run"
    run_dir.mkdir()
    out: dict = {"benchmark": "cache_recovery", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "rate": args.rate, "before_s": args.before, "warm_s": args.warm, "every_s": args.every,
                 "scale": args.scale, "machine_cpus": os.cpu_count(), "target_hit_ratio": TARGET_HIT_RATIO}
    loads: list[Load] = []
    ok = False
    try:
        t = time.perf_counter()
        info = stack.up(state, scale=args.scale, profile="degraded", ports="free")
        info["state"] = str(state)
        out["lab_up_s"] = round(time.perf_counter() - t, 1)
        users = seeding.SeedSize.at_scale(args.scale).users

        # 1. before
        run_load_sync(info["backend_url"], LoadSpec(duration_s=args.warm, rate=args.rate, users=users, seed=101))
        before = measure(info, LoadSpec(duration_s=args.before, rate=args.rate, users=users, seed=1), loads)
        report = before.pop("report")
        snap = before.pop("snapshot")
        print(render_text(report), flush=True)
        out["before"] = before

        # 2. diagnosis
        rec = report["recommendations"]
        ttl_s = float(rec["ttl"]["recommended_s"])
        out["diagnosis"] = {k: {kk: vv for kk, vv in v.items() if kk != "reasoning"} | {"reasoning": v["reasoning"]}
                            for k, v in rec.items() if k != "actions"}
        out["diagnosis"]["actions"] = rec["actions"]

        # 3. remediation, in the order that keeps each step useful: room first, warm, then switch the app
        settings = settings_for(info)
        cfg_file = str(state / CONFIG_FILE)
        prior_config = (state / CONFIG_FILE).read_text()
        with contextlib.closing(col.connect(info["redis_url"])) as c:
            prior_redis = c.config_get("*")
        t = time.perf_counter()
        redis_change = next((a["inputs"] for a in rec["actions"] if a["kind"] == "redis.config_set"), None)
        actions = [RedisConfigSet(config=redis_change)] if redis_change else []
        seen = pd.DataFrame({"key": snap.seen_keys})  # every name seen over the window: requests by key
        ranked = [i.key for i in rank_keys(seen[seen["key"].map(lambda k: lab_path(logical_key(k)) is not None)],
                                           args.top_n)]
        warm = CacheWarm(top_n=max(1, len(ranked)), keys=ranked, concurrency=4, ttl_s=ttl_s,
                         source_url=info["backend_url"])
        actions.append(warm)
        outcomes = execute(actions, settings, run_dir)
        app_actions = [AppConfig(cache_key_scheme="normalized", config_file=cfg_file),
                       AppConfig(cache_ttl_s=ttl_s, config_file=cfg_file)]
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

        # 4. after: the same load, followed window by window
        follow_s = args.follow or min(MAX_DURATION_S, ttl_s + SETTLE_S)
        print(f"after the fix: {follow_s / 60:.0f} min of the same load, a window every {args.every:g} s", flush=True)
        f = follow(info, LoadSpec(duration_s=follow_s, rate=args.rate, users=users, seed=2), args.every, loads)
        rows = f["rows"]
        figures = curve_figures(rows, ttl_s, TARGET_HIT_RATIO)
        predicted = rec["ttl"].get("predicted")
        steady = figures["steady"]
        prom = info["prometheus_url"]
        t_end = f["t0"] + rows[-1]["t_end_s"] if rows else time.time()
        by_route = app_by_route(prom, f["t0"] + steady["from_s"], t_end) if steady else None
        end_info = f["end_info"]
        out["after"] = {
            "follow_s": follow_s, "ttl_s": ttl_s, "windows": rows, **figures,
            "steady_app_by_route": by_route,
            "predicted": predicted, "predicted_by_family": rec["ttl"].get("predicted_by_family"),
            "predicted_cold_climb": rec["ttl"].get("fill_hit_ratio"),
            "client": f["client"],
            "memory": {"dbsize_end": end_info["dbsize"], "used_memory_end": end_info["used_memory"],
                       "maxmemory": end_info["maxmemory"], "sampled_memory_bytes_end": f["sample_memory_bytes"],
                       "evicted_keys": end_info["evicted_keys"] - f["start_info"]["evicted_keys"],
                       "predicted_cached_keys": {"fit": rec["memory"].get("entries_fit"),
                                                 "high": rec["memory"].get("entries")},
                       "recommended_maxmemory": rec["memory"]["recommended"]}}
        if rows:
            first = rows[0]
            out["after"]["first_window"] = {k: first[k] for k in ("redis_hit_ratio", "app_hit_ratio", "hits", "misses")}

        # 5. rollback: everything back to the exact prior values
        rollback_run(run_dir, apply=True, settings=settings)
        with Targets(settings) as targets:
            log = AuditLog(run_dir)
            for a, prior in reversed(list(zip(app_actions, priors, strict=True))):
                undo(a, targets, log, prior, {}, reason="benchmark rollback")
        with contextlib.closing(col.connect(info["redis_url"])) as c:
            out["rollback_restored_exactly"] = {"redis_config_get_all": c.config_get("*") == prior_redis,
                                                "lab_config_json": (state / CONFIG_FILE).read_text() == prior_config}
        ok = True
    finally:
        for load in loads:
            load.stop()
        stack.down(state)
        shutil.rmtree(state, ignore_errors=True)
    if not ok:
        return 1
    model_columns(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print_summary(out)
    print(f"written to {args.out}")
    return 0


def print_summary(out: dict) -> None:
    b, a = out["before"], out["after"]
    pred = a.get("predicted") or {}
    print(f"before ({b['window_s']:.0f} s): redis hit ratio {b['redis_hit_ratio']:.2%}, app {b['app_hit_ratio']:.2%}, "
          f"client p95 {b['client']['p95_ms']} ms")
    print(f"recommended TTL {a['ttl_s']:g} s; predicted long-run hit ratio {pred.get('fit', float('nan')):.1%} "
          f"(range {pred.get('low', float('nan')):.1%}-{pred.get('high', float('nan')):.1%})")
    print("after, window by window (redis / app / the fitted model simulated with the same warming / its cold "
          "climb without warming):")
    for r in a["windows"]:
        app = "n/a" if r.get("app_hit_ratio") is None else f"{r['app_hit_ratio']:.1%}"
        p = "" if r.get("simulated") is None else f" / {r['simulated']:.1%}"
        p += "" if r.get("cold_climb") is None else f" / {r['cold_climb']:.1%}"
        span = f"{r['t_start_s'] / 60:g}-{r['t_end_s'] / 60:g} min"
        print(f"  {span:<13} {r['redis_hit_ratio']:.1%} / {app}{p}")
    print(f"first window at {out['target_hit_ratio']:.0%}: ends {a['first_window_at_target_s']} s after the fix; "
          f"{a['rolling_windows']}-window rolling mean at or above it from {a['sustained_from_s']} s on")
    s = a["steady"]
    if s:
        print(f"steady ({s['from_s'] / 60:.0f}-{s['to_s'] / 60:.0f} min, {s['windows']} windows): redis hit ratio "
              f"{s['redis_hit_ratio']:.1%} (windows {s['min_window']:.1%}-{s['max_window']:.1%}, "
              f"{s['windows_at_or_above_target']} of {s['windows']} at or above the target); simulated "
              f"{s.get('simulated', float('nan')):.1%}, long-run prediction {pred.get('fit', float('nan')):.1%}")
    if a.get("steady_app_by_route"):
        print("  app by route: " + ", ".join(f"{k} {v['hit_ratio']:.1%}" for k, v in a["steady_app_by_route"].items()
                                             if v["hit_ratio"] is not None))
    if a.get("predicted_by_family"):
        print("  predicted by family: " + ", ".join(f"{lab_route(k) or k} {v['fit']:.1%}"
                                                    for k, v in a["predicted_by_family"].items()))
    m = a["memory"]
    print(f"memory at the end: {m['dbsize_end']} keys (predicted {m['predicted_cached_keys']}), "
          f"{m['used_memory_end'] / 2**20:.1f} MiB of {m['maxmemory'] / 2**20:.0f} MiB, {m['evicted_keys']} evicted")
    print(f"client after: {a['client']}")
    print(f"warm: {out.get('warm')}")
    print(f"rollback restored exactly: {out.get('rollback_restored_exactly')}")


if __name__ == "__main__":
    raise SystemExit(main())
