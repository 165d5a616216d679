"""The whole runbook, live, against the lab: diagnosis from real data, fixes applied, recovery measured.

The README's lab flow on a private lab (own state folder, free ports): `runbook lab up`, `runbook lab
load` (healthy baseline, then the degraded profile; returns with the load going on), `runbook run` with
parameters/lab.yaml pointed at this lab's ports: it diagnoses, applies the plan, and validates; then
everything is rolled back and the lab stopped. Prints the figures and writes benchmarks/results/lab_suite.json.

    .venv/bin/python benchmarks/lab_suite.py [--scale 0.2] [--baseline 100] [--incident 150]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_lib.lab.stack import parameters_for

OUT = ROOT / "benchmarks" / "results" / "lab_suite.json"
RUNBOOK = str(Path(sys.executable).with_name("runbook"))


def sh(*args: str, env: dict, timeout: float = 1200) -> str:
    r = subprocess.run([RUNBOOK, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise SystemExit(f"runbook {' '.join(args)} failed: {r.stderr.strip()[-800:]}")
    return r.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.2)
    ap.add_argument("--baseline", type=float, default=100, help="seconds of healthy load before the incident")
    ap.add_argument("--incident", type=float, default=150, help="seconds of incident before the runbook starts")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="runbook-lab-suite-") as d:
        d = Path(d)
        os.chmod(d, 0o755)  # PostgreSQL runs as postgres and must enter the state folder
        env = dict(os.environ, RUNBOOK_LAB_DIR=str(d / "lab"))
        try:
            sh("lab", "up", "--scale", str(args.scale), "--ports", "free", env=env)
            sh("lab", "load", "--baseline", f"{args.baseline:g}", "--incident", f"{args.incident:g}", env=env)
            params = d / "lab.yaml"
            params.write_text(parameters_for((ROOT / "parameters" / "lab.yaml").read_text(), d / "lab"))
            t0 = time.perf_counter()
            run_dir = sh("run", "-p", str(params), "--out", str(d / "run"), env=env).strip()
            suite_s = time.perf_counter() - t0
            run = Path(run_dir)
            findings = json.loads((run / "findings.json").read_text())
            validation = json.loads((run / "validation.json").read_text())
            audit = [json.loads(x) for x in (run / "audit.jsonl").read_text().splitlines()]
            sh("rollback", str(run), "--apply", env=env)
        finally:
            subprocess.run([RUNBOOK, "lab", "down"], check=False, cwd=ROOT, env=env, capture_output=True, timeout=120)
    sig = {s["signal"]: s for s in validation["signals"]}
    result = {
        "scale": args.scale, "baseline_s": args.baseline, "incident_s": args.incident, "suite_s": round(suite_s, 1),
        "hypotheses": [(h["category"], h["confidence"], "disproved" if h["disproved"] else "supported")
                       for h in findings["hypotheses"]],
        "applied": [r["action_id"] for r in audit if r["step"] == "applied" and r.get("changed")],
        "verify_loop": [{k: r.get(k) for k in ("action_id", "signal", "before", "after", "effect")}
                        for r in audit if r["step"] == "assessed"],
        "validation": validation["verdict"],
        "before_after": {k: {"baseline": sig[k]["baseline"], "before": sig[k]["before"], "after": sig[k]["after"]}
                         for k in ("latency_p95_ms", "cache_hit_ratio", "error_ratio", "db_query_rate") if k in sig},
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
