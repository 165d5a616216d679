"""How long the `runbook` command takes to start: `runbook --help` and `runbook signals` (no I/O), N runs each.

The CLI builds every subcommand's parser at start, so an import a command needs only when it runs (psycopg,
redis, boto3, the cache model) shows here. Prints the runs and the medians, writes
benchmarks/results/cli_startup.json.

    .venv/bin/python benchmarks/cli_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "cli_startup.json"
COMMANDS = (["--help"], ["signals"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    exe = str(Path(sys.executable).with_name("runbook"))
    results = {}
    for cmd in COMMANDS:
        times = []
        for _ in range(args.runs):  # interleaving is not needed: one build at a time
            t0 = time.perf_counter()
            subprocess.run([exe, *cmd], cwd=ROOT, check=True, capture_output=True)
            times.append(round(time.perf_counter() - t0, 3))
        results[" ".join(cmd)] = {"runs_s": times, "median_s": statistics.median(times), "min_s": min(times)}
        print(f"runbook {' '.join(cmd)}: median {statistics.median(times):.2f} s, min {min(times):.2f} s "
              f"over {args.runs} runs")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, "
                               f"{os.cpu_count()} cores, Python {platform.python_version()}",
                               "results": results}, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
