"""How long the lab takes to start: seeding, and start-to-ready, cold (empty state) and warm (data kept).

    .venv/bin/python benchmarks/lab_startup.py [--scale 1.0] [--runs 1]

Ready = every server answers, the backend's replicas serve /healthz and Prometheus has scraped every
lab target once (the first scrape lands ~5 s after Prometheus starts: its target-sync throttle).
Prints the numbers and writes them to benchmarks/results/lab_startup.json. Uses free ports and its own
state folder under /tmp, so it never touches a lab you run; everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runbook_lib.lab import stack

RESULTS = ROOT / "benchmarks" / "results" / "lab_startup.json"


def one_run(state: Path, scale: float) -> dict:
    t = time.perf_counter()
    cold = stack.up(state, scale=scale, ports="free")
    cold_wall = time.perf_counter() - t
    stack.down(state)
    t = time.perf_counter()
    warm = stack.up(state, scale=scale, ports="free")
    warm_wall = time.perf_counter() - t
    stack.down(state)
    return {"cold": {**cold["timings"], "wall_s": round(cold_wall, 3), "seed_phases": cold["seed_timings"]},
            "warm": {**warm["timings"], "wall_s": round(warm_wall, 3)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    runs = []
    for _ in range(args.runs):
        state = Path(tempfile.mkdtemp(prefix="runbook-labbench-", dir="/tmp"))
        state.chmod(0o755)
        try:
            runs.append(one_run(state, args.scale))
        finally:
            stack.down(state)
            shutil.rmtree(state, ignore_errors=True)
    out = {"benchmark": "lab_startup", "at": datetime.now(UTC).isoformat(timespec="seconds"),
           "scale": args.scale, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "runs": runs,
           "seed_s": [r["cold"]["seed_s"] for r in runs],
           "cold_ready_s": [r["cold"]["ready_s"] for r in runs],
           "warm_ready_s": [r["warm"]["ready_s"] for r in runs]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"seeding (scale {args.scale}): {out['seed_s']} s")
    print(f"start-to-ready, cold (initdb + seed): {out['cold_ready_s']} s")
    print(f"start-to-ready, warm (data kept):     {out['warm_ready_s']} s")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
