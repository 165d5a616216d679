"""How long `runbook run` takes on the bundled fixture incident (the README's figure).

Runs the whole suite N times (default 3) into scratch folders, prints per-run wall time and per-notebook
medians, and writes benchmarks/results/run_fixture.json. Machine load matters: quote the median.

    .venv/bin/python benchmarks/run_fixture.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "run_fixture.json"


def one_run(scratch: Path, i: int) -> dict:
    out = scratch / f"run{i}"
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("runbook")), "run", "-p", "parameters/fixtures.yaml",
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    status = json.loads((out / "run.json").read_text())
    return {"wall_s": round(wall, 2), "notebooks": {n["notebook"]: n["seconds"] for n in status["notebooks"]}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="runbook-bench-") as d:
        runs = [one_run(Path(d), i) for i in range(args.runs)]
    walls = [r["wall_s"] for r in runs]
    per_nb = {nb: statistics.median(r["notebooks"][nb] for r in runs) for nb in runs[0]["notebooks"]}
    result = {"what": "runbook run -p parameters/fixtures.yaml (5 notebooks + export)",
              "runs": runs, "median_wall_s": statistics.median(walls), "min_wall_s": min(walls),
              "median_per_notebook_s": per_nb, "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_avg_at_end": os.getloadavg()[0]}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    for i, r in enumerate(runs):
        print(f"run {i}: {r['wall_s']:.1f} s")
    print(f"median {result['median_wall_s']:.1f} s (min {result['min_wall_s']:.1f} s) over {len(runs)} runs; "
          f"per notebook: " + ", ".join(f"{k[:2]} {v:.1f} s" for k, v in per_nb.items()))
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
