"""The whole runbook, live, against the lab: diagnosis from real data, fixes applied, recovery measured.

A private lab on free ports (its own state folder) starts healthy; bounded load runs a baseline, then
the degraded profile (the incident); `runbook run` with parameters/lab.yaml pointed at this lab's
ports diagnoses it, applies the plan, and validates; then everything is rolled back and the lab
stopped. Prints the figures and writes benchmarks/results/lab_suite.json.

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
OUT = ROOT / "benchmarks" / "results" / "lab_suite.json"
RUNBOOK = str(Path(sys.executable).with_name("runbook"))


def sh(*args: str, env: dict, timeout: float = 1200) -> str:
    r = subprocess.run([RUNBOOK, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise SystemExit(f"runbook {' '.join(args)} failed: {r.stderr.strip()[-800:]}")
    return r.stdout


def lab_parameters(lab: dict, dest: Path) -> Path:
    text = (ROOT / "parameters" / "lab.yaml").read_text()
    c = lab["components"]
    text = (text.replace("http://127.0.0.1:19090", c["prometheus"]["url"])
            .replace("port=15432", f"port={c['postgres']['port']}")
            .replace("redis://127.0.0.1:16379/0", c["redis"]["url"])
            .replace("last: 15m", "last: 8m"))
    dest.write_text(text)
    return dest


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
        load = None
        try:
            sh("lab", "up", "--scale", str(args.scale), "--ports", "free", "--profile", "healthy", env=env)
            lab = json.loads(sh("lab", "status", "--json", env=env))
            total = args.baseline + args.incident + 900  # enough for the whole suite; stopped below
            load = subprocess.Popen([RUNBOOK, "lab", "load", "--duration", str(total), "--at",
                                     f"{args.baseline:.0f}:degraded"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(args.baseline + args.incident)  # the scenario itself: real time under load
            params = lab_parameters(lab, d / "lab.yaml")
            t0 = time.perf_counter()
            run_dir = sh("run", "-p", str(params), "--out", str(d / "run"), env=env).strip()
            suite_s = time.perf_counter() - t0
            run = Path(run_dir)
            findings = json.loads((run / "findings.json").read_text())
            validation = json.loads((run / "validation.json").read_text())
            audit = [json.loads(x) for x in (run / "audit.jsonl").read_text().splitlines()]
            sh("rollback", str(run), "--apply", env=env)
        finally:
            if load is not None:
                load.terminate()
                load.wait(timeout=30)
            subprocess.run([RUNBOOK, "lab", "down"], cwd=ROOT, env=env, capture_output=True, timeout=120)
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
