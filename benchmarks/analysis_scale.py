"""How 01-02's analysis scales: from the fixture's size up to 7 days at 15 s x 100 series (4 M points).

What is timed is what the notebooks call on the signals frame: 01's ``steps.symptom_correlation.symptoms``
(the incident-window fit on p95, then the symptom table: levels, onsets, Spearman and lead/lag against p95)
and 02's ``steps.root_cause.root_cause`` (the hypotheses over that table and the frame; no snapshots, which
do not grow with the window). The signals are synthetic and shaped like an incident: baseline levels with
noise, a step up (the cache hit ratio and DB load a few samples ahead of latency), a recovery, a diurnal
request rate, a few missing samples. The product analyses the 12 catalog signals of one service, so S series
are ceil(S / 12) services' frames, each with its own p95 and incident (the last one with fewer signals), all
of the same length: points = samples x S exactly.

Each size runs in a fresh subprocess: N timed runs (the median is the figure; the minimum is kept beside it,
as on a shared machine the load of other processes moves the median), then one more under tracemalloc (the
analysis's own peak allocations), and the process's peak RSS (resource maxrss: the data, the imports and the
analysis; the RSS before the analysis is given beside it). The growth exponent is the
log-log slope of the median time against points over the sizes (1 = linear). Prints a table and writes
benchmarks/results/analysis_scale.json.

    .venv/bin/python benchmarks/analysis_scale.py [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "analysis_scale.json"
# (samples, series): the bundled incident (fixtures/d2-latency: 27 min at 5 s = 322 samples x 12 signals)
# up to the target, 7 days at 15 s (40,320 samples) x 100 series = 4.03 M points
SIZES = [(322, 12), (2_880, 12), (5_760, 25), (20_160, 50), (40_320, 100)]
QUICK_SIZES = SIZES[:3]
STEP_SECONDS = 15
# the SLOs of parameters/fixtures.yaml (p95 objective in ms, cache hit ratio)
SLO_P95_MS, SLO_CACHE_HIT = 100.0, 0.80
# the goal (issue 16): 4 M points in <= 5 s and <= 1 GB peak memory, growth no worse than n log n
GOAL_SECONDS, GOAL_PEAK_MB = 5.0, 1024


def service_frame(samples: int, names: list[str], seed: int):
    """One service's signals over ``samples`` steps: baseline, an incident step (cache and DB lead p95 by a
    few samples), a partial recovery, multiplicative noise, a diurnal request rate, ~0.1% missing samples."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = samples
    idx = pd.date_range("2026-11-23", periods=n, freq=f"{STEP_SECONDS}s", tz="UTC")
    a = int(n * rng.uniform(0.45, 0.65))  # incident start
    b = min(n - 20, a + max(40, int(n * rng.uniform(0.05, 0.15))))  # incident end (recovery after)
    t = np.arange(n)
    day = 86_400 / STEP_SECONDS

    def step(base, incident, recovery, lead=0):
        lvl = np.full(n, float(base))
        lvl[a - lead:b] = incident
        lvl[b:] = recovery
        return lvl

    def noisy(lvl, rel=0.05):
        return lvl * np.exp(rng.normal(0, rel, n))

    p95 = noisy(step(40, 800, 45))
    cols = {
        "latency_p95_ms": p95,
        "latency_p50_ms": noisy(step(18, 300, 20)) * (p95 / p95.mean()) ** 0.1,
        "latency_p99_ms": noisy(p95 * 1.8, 0.03),
        "request_rate": noisy(100 * (1 + 0.2 * np.sin(2 * np.pi * t / day))),
        "error_ratio": np.clip(step(0, 0.02, 0, lead=-5) + rng.normal(0, 0.001, n), 0, None),
        "cache_hit_ratio": np.clip(noisy(step(0.8, 0.05, 0.78, lead=3), 0.03), 0, 1),
        "db_query_rate": noisy(step(50, 500, 60, lead=2)),
        "db_query_latency_ms": noisy(step(1.0, 3.0, 1.1, lead=1)),
        "db_connections_active": np.round(noisy(step(3, 10, 3, lead=1), 0.1)).clip(0, 10),
        "db_pool_max": np.full(n, 10.0),
        "cpu_utilization": np.clip(noisy(np.full(n, 0.3)), 0, 1),
        "memory_utilization": np.clip(noisy(np.full(n, 0.5), 0.01), 0, 1),
    }
    df = pd.DataFrame({k: cols[k] for k in names}, index=idx)
    for name in names[1::3]:  # scrape gaps in some series
        df.loc[df.index[rng.random(n) < 0.001], name] = np.nan
    return df


def frames(samples: int, series: int, seed: int = 16) -> list:
    """``series`` signals as ceil(series / 12) services' frames, each led by its own p95."""
    from runbook_lib.signal_catalog import CATALOG, PRIMARY_SIGNAL

    names = [PRIMARY_SIGNAL, *(s for s in CATALOG if s != PRIMARY_SIGNAL)]
    out = []
    for k in range(math.ceil(series / len(names))):
        width = min(len(names), series - k * len(names))
        out.append(service_frame(samples, names[:width], seed + k))
    return out


def analyse(dfs: list) -> list:
    """What 01 and 02 compute from the signals, per service frame."""
    from runbook_lib.model import Snapshots
    from runbook_lib.steps import root_cause, symptom_correlation

    out = []
    for df in dfs:
        found = symptom_correlation.symptoms(df, STEP_SECONDS, SLO_P95_MS)
        hyps = root_cause.root_cause(df, found.payload, Snapshots(), SLO_CACHE_HIT)
        out.append((found, hyps))
    return out


def child(samples: int, series: int, runs: int) -> dict:
    """One size, in this (fresh) process: timed runs, one traced run, peak RSS."""
    import resource
    import tracemalloc

    analyse(frames(322, 12))  # warm-up outside the timing: imports, scipy.stats (Spearman) on first use
    dfs = frames(samples, series)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = analyse(dfs)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    analyse(dfs)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    win = result[0][0].window
    return {"samples": samples, "series": series, "points": samples * sum(len(d.columns) for d in dfs),
            "services": len(dfs), "runs_s": [round(t, 4) for t in times],
            "seconds": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_analysis_mb": round(rss_before, 1), "analysis_traced_peak_mb": round(traced_peak, 1),
            "first_service": {"incident": [win.incident[0].isoformat(), win.incident[1].isoformat()],
                              "ratio": round(win.ratio, 2), "top_hypothesis": result[0][1][0].category}}


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="the three smallest sizes only")
    ap.add_argument("--child", nargs=2, type=int, metavar=("SAMPLES", "SERIES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.runs)))
        return 0
    rows, load_start = [], round(os.getloadavg()[0], 2)
    print(f"{'samples':>8} {'series':>6} {'points':>10} {'seconds':>8} {'peak RSS MB':>11} {'before MB':>9} "
          f"{'traced MB':>9}", flush=True)
    for samples, series in QUICK_SIZES if args.quick else SIZES:
        cmd = [sys.executable, __file__, "--runs", str(args.runs), "--child", str(samples), str(series)]
        p = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{r['samples']:>8,} {r['series']:>6} {r['points']:>10,} {r['seconds']:>8.3f} "
              f"{r['peak_rss_mb']:>11.0f} {r['rss_before_analysis_mb']:>9.0f} "
              f"{r['analysis_traced_peak_mb']:>9.1f}", flush=True)
    exponent = slope([r["points"] for r in rows], [r["seconds"] for r in rows])
    # above 100k points, where the per-call overheads no longer hide the growth
    large = [r for r in rows if r["points"] >= 100_000]
    exponent_large = (slope([r["points"] for r in large], [r["seconds"] for r in large]) if len(large) >= 2
                      else None)
    top = rows[-1]
    result = {"what": "01 symptoms() + 02 root_cause() on synthetic incident frames",
              "date": time.strftime("%Y-%m-%d"),
              "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                          "arch": platform.machine()},
              "load_avg_at_start": load_start, "load_avg_at_end": round(os.getloadavg()[0], 2),
              "runs_per_size": args.runs, "step_seconds": STEP_SECONDS, "sizes": rows,
              "growth_exponent": round(exponent, 2),
              "growth_exponent_above_100k_points": round(exponent_large, 2) if exponent_large else None,
              "goal": {"points": 4_000_000, "seconds": GOAL_SECONDS, "peak_mb": GOAL_PEAK_MB,
                       "met": bool(top["points"] >= 4_000_000 and top["seconds"] <= GOAL_SECONDS
                                   and top["peak_rss_mb"] <= GOAL_PEAK_MB)}}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"growth exponent (log-log slope of time vs points) {exponent:.2f}"
          + (f", {exponent_large:.2f} above 100k points" if exponent_large else ""))
    met = "met" if result["goal"]["met"] else "NOT met"
    print(f"largest: {top['points']:,} points in {top['seconds']:.2f} s, "
          f"peak RSS {top['peak_rss_mb']:.0f} MB "
          f"(goal <= {GOAL_SECONDS:g} s, <= {GOAL_PEAK_MB} MB: {met})")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
