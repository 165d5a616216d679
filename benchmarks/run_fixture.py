"""How long `runbook run` takes on the bundled fixture incident, against papermill's floor (the README's figure).

The floor: one Python process running five empty notebooks through papermill (what any five-notebook papermill
suite pays: interpreter, papermill import, five kernel starts). The two are interleaved, floor then suite, N
times (default 3) in one run, so a machine whose load drifts affects both alike; the figure is the ratio of
the medians. Prints per-run wall times and per-notebook medians and writes benchmarks/results/run_fixture.json.

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


FLOOR = """
import sys, nbformat, papermill
for i in range(5):
    path = f"{sys.argv[1]}/empty{i}.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass")]), path)
    papermill.execute_notebook(path, path.replace(".ipynb", ".out.ipynb"), kernel_name="python3", progress_bar=False)
"""


def floor_run(scratch: Path, i: int) -> float:
    out = scratch / f"floor{i}"
    out.mkdir()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR, str(out)], cwd=ROOT, check=True, capture_output=True, text=True)
    return round(time.perf_counter() - t0, 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    runs, floors = [], []
    with tempfile.TemporaryDirectory(prefix="runbook-bench-") as d:
        for i in range(args.runs):
            floors.append(floor_run(Path(d), i))
            runs.append(one_run(Path(d), i))
            print(f"round {i}: floor {floors[-1]:.1f} s, runbook run {runs[-1]['wall_s']:.1f} s", flush=True)
    walls = [r["wall_s"] for r in runs]
    per_nb = {nb: statistics.median(r["notebooks"][nb] for r in runs) for nb in runs[0]["notebooks"]}
    result = {"what": "runbook run -p parameters/fixtures.yaml (5 notebooks + export)",
              "runs": runs, "median_wall_s": statistics.median(walls), "min_wall_s": min(walls),
              "median_per_notebook_s": per_nb, "floor_s": floors, "median_floor_s": statistics.median(floors),
              "ratio_to_floor": round(statistics.median(walls) / statistics.median(floors), 2),
              "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_avg_at_end": os.getloadavg()[0]}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"papermill floor (5 empty notebooks) median {result['median_floor_s']:.1f} s; "
          f"ratio {result['ratio_to_floor']:.2f}x")
    print(f"median {result['median_wall_s']:.1f} s (min {result['min_wall_s']:.1f} s) over {len(runs)} runs; "
          f"per notebook: " + ", ".join(f"{k[:2]} {v:.1f} s" for k, v in per_nb.items()))
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
