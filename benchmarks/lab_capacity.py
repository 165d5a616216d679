"""Capacity of the lab, measured in one run: healthy baseline, degraded, and after the runbook's own fix.

    .venv/bin/python benchmarks/lab_capacity.py [--scale 1.0] [--steps 5 10 20 40 80 160]
                                                [--warm 5] [--measure 20] [--healthy-warm 60] [--baseline 60] [--incident 60]

Capacity = the highest request rate the lab serves with client-side p95 under the SLO (100 ms), 5xx under
1 % and under 1 % of arrivals unserved (skipped over the load's concurrency bound or transport errors), found
by a stepped open-loop load (runbook_lib/lab/load.py: Poisson arrivals, at most 64 in flight): each step
warms up for --warm s, then measures for --measure s; stepping stops after the first step that fails both
the latency and the error criteria, or at the last step. Capacity counts only steps that pass with every
lower step passing. "Error-free throughput" (5xx and unserved < 1 %, latency ignored) is reported beside it,
as the write-up's "3x throughput" is about throughput, not the SLO.

One private lab (own state folder, free ports, stopped in all cases):

1. healthy  - ``runbook lab up --profile healthy``; the incident-rate window, then the steps;
2. degraded - ``runbook lab profile degraded``; the same;
3. after    - the README's lab flow: ``runbook lab load --baseline B --incident I`` (healthy baseline, the
              degraded deploy, the load going on in the background), ``runbook run -p <lab.yaml for these
              ports> --only 01 02 03 04 --no-export`` (diagnoses and applies the runbook's own fixes to the
              degraded lab), ``runbook lab load --stop``; then the same measurements.

At the incident's rate (load.INCIDENT_RATE) each phase also reports p50/p95/p99 (client side and from the
server's histogram), cache hit ratio, 5xx and DB queries per request from the lab's Prometheus over the
measured window, beside the write-up's figures. Prints a table and writes benchmarks/results/lab_capacity.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runbook_lib.lab import stack
from runbook_lib.lab.config import CONFIG_FILE, read_config
from runbook_lib.lab.load import INCIDENT_RATE, LoadSpec, run_load_sync
from runbook_lib.lab.seed import SeedSize
from runbook_lib.lab.servers import wait_until

RESULTS = ROOT / "benchmarks" / "results" / "lab_capacity.json"
RUNBOOK = str(Path(sys.executable).with_name("runbook"))
SLO_P95_MS = 100.0      # parameters/lab.yaml slo.latency_p95_ms
SLO_ERROR_RATIO = 0.01  # parameters/lab.yaml slo.error_ratio
UNSERVED_MAX = 0.01     # skipped + transport errors, share of arrivals
SCRAPE_WAIT_S = 10.0
COMMAND_TIMEOUT_S = 1200
# The write-up's "Performance Improvements Achieved" (/work/shared/reference/d2-incident-writeup.txt).
WRITEUP = {"p95_ms": {"before": 800, "after": 50}, "cache_hit_ratio": {"before": 0.08, "after": 0.85},
           "error_ratio_5xx": {"before": 0.10, "after": "< 0.01"}, "db_load_change": -0.60, "throughput_ratio": 3.0}
GOALS = {"after_p95_over_healthy_max": 1.5, "capacity_after_over_degraded_min": 5.0}

PROM = {  # {w}: the measured window, e.g. 20s; what parameters/lab.yaml and benchmarks/lab_shape.py read
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
    "db_query_rate": 'sum(rate(db_query_duration_seconds_count{{job="lab"}}[{w}]))',
    "machine_cpu_utilization": '1 - avg(rate(node_cpu_seconds_total{{job="lab",mode="idle"}}[{w}]))',
}


def runbook(*args: str, env: dict, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """One product command, as a user types it; SystemExit with its stderr when it fails."""
    t0 = time.monotonic()
    r = subprocess.run([RUNBOOK, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    print(f"  $ runbook {' '.join(args)}  ({time.monotonic() - t0:.0f} s, exit {r.returncode})", flush=True)
    if r.returncode:
        raise RuntimeError(f"runbook {' '.join(args)} exited {r.returncode}: {r.stderr.strip()[-1500:]}")
    return r.stdout


def _num(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or math.isnan(v) or math.isinf(v) else round(v, nd)


def window(lab: dict, spec: LoadSpec, warm_s: float, warm_seed: int) -> dict:
    """Warm up, then one measured window: the load generator's report and the server's figures."""
    if warm_s > 0:
        run_load_sync(lab["backend_url"], LoadSpec(duration_s=warm_s, rate=spec.rate, users=spec.users,
                                                   seed=warm_seed, concurrency=spec.concurrency))
    t0 = time.time()
    client = run_load_sync(lab["backend_url"], spec).summary()
    t1 = time.time()
    prom = lab["prometheus_url"]
    wait_until(lambda: (stack.prom_value(prom, 'max(timestamp(up{job="lab",role="node"}))') or 0) > t1 + 0.5,
               SCRAPE_WAIT_S, "a scrape after the load")
    w = f"{math.ceil(t1 - t0)}s"
    server = {k: _num(stack.prom_value(prom, q.format(w=w), at=t1 + 0.5)) for k, q in PROM.items()}
    arrivals = client["sent"] + client["skipped_over_concurrency"]
    unserved = client["skipped_over_concurrency"] + client["transport_errors"]
    return {"rate": spec.rate, "window_s": round(t1 - t0, 1), "client": client, "server": server,
            "unserved_ratio": round(unserved / arrivals, 4) if arrivals else None,
            "loadavg_1m_after": round(os.getloadavg()[0], 2)}


def judge(step: dict) -> dict:
    c = step["client"]
    latency_ok = c["p95_ms"] is not None and c["p95_ms"] < SLO_P95_MS
    errors_ok = (c["error_ratio_5xx"] is not None and c["error_ratio_5xx"] < SLO_ERROR_RATIO
                 and step["unserved_ratio"] is not None and step["unserved_ratio"] < UNSERVED_MAX)
    return {"latency_ok": latency_ok, "errors_ok": errors_ok, "pass": latency_ok and errors_ok}


def highest(steps: list[dict], key: str) -> float:
    """The highest rate whose step, and every lower step, passed ``key``; 0 when the first step failed."""
    best = 0.0
    for s in sorted(steps, key=lambda s: s["rate"]):
        if not s["verdict"][key]:
            break
        best = s["rate"]
    return best


def measure_phase(name: str, lab: dict, args, users: int, seed0: int, phase_warm: float) -> dict:
    print(f"\n== {name}: incident rate {INCIDENT_RATE:g} req/s ({phase_warm:g} s warm-up, {args.measure:g} s)",
          flush=True)
    at_incident = window(lab, LoadSpec(duration_s=args.measure, rate=INCIDENT_RATE, users=users, seed=seed0),
                         phase_warm, seed0 + 50)
    _print_incident(at_incident)
    steps: list[dict] = []
    for i, rate in enumerate(args.steps):
        step = window(lab, LoadSpec(duration_s=args.measure, rate=rate, users=users, seed=seed0 + 1 + i),
                      args.warm, seed0 + 51 + i)
        step["verdict"] = judge(step)
        steps.append(step)
        _print_step(step)
        if not step["verdict"]["latency_ok"] and not step["verdict"]["errors_ok"]:
            break
    return {"at_incident_rate": at_incident, "steps": steps,
            "capacity_rps": highest(steps, "pass"), "error_free_throughput_rps": highest(steps, "errors_ok"),
            "max_step_passed": bool(steps) and len(steps) == len(args.steps) and steps[-1]["verdict"]["pass"]}


def _f(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _print_incident(w: dict) -> None:
    c, s = w["client"], w["server"]
    print(f"  client p50/p95/p99 {_f(c['p50_ms'])}/{_f(c['p95_ms'])}/{_f(c['p99_ms'])} ms, 5xx {_f(c['error_ratio_5xx'], '{:.2%}')}"
          f", {c['rps']} req/s | server p95 {_f(s['p95_ms'])} ms, hits {_f(s['cache_hit_ratio'], '{:.1%}')}, "
          f"DB q/req {_f(s['db_queries_per_request'], '{:.2f}')}", flush=True)


def _print_step(s: dict) -> None:
    c, v = s["client"], s["verdict"]
    print(f"  step {s['rate']:>6g} req/s: achieved {c['rps']:>6} p50 {_f(c['p50_ms']):>7} p95 {_f(c['p95_ms']):>7} "
          f"p99 {_f(c['p99_ms']):>7} ms 5xx {_f(c['error_ratio_5xx'], '{:.2%}'):>7} skipped "
          f"{c['skipped_over_concurrency']:>4} transport err {c['transport_errors']:>3}  "
          f"{'PASS' if v['pass'] else 'fail (' + ', '.join(k for k in ('latency_ok', 'errors_ok') if not v[k]) + ')'}",
          flush=True)


def apply_runbook_fix(state: Path, tmp: Path, env: dict, args) -> dict:
    """The README's lab flow: lab load (baseline, deploy, incident), runbook run 01-04, lab load --stop."""
    print(f"\n== the runbook's fix: lab load ({args.baseline:g} s baseline + {args.incident:g} s incident), "
          "runbook run --only 01 02 03 04", flush=True)
    t0 = time.monotonic()
    runbook("lab", "load", "--baseline", f"{args.baseline:g}", "--incident", f"{args.incident:g}", env=env)
    params = tmp / "lab.yaml"
    params.write_text(stack.parameters_for((ROOT / "parameters" / "lab.yaml").read_text(), state))
    t1 = time.monotonic()
    run_dir = Path(runbook("run", "-p", str(params), "--out", str(tmp / "run"), "--only", "01", "02", "03", "04",
                           "--no-export", env=env).strip().splitlines()[-1])
    run_s = time.monotonic() - t1
    stopped = runbook("lab", "load", "--stop", env=env).strip()
    audit = [json.loads(x) for x in (run_dir / "audit.jsonl").read_text().splitlines() if x.strip()]
    findings = json.loads((run_dir / "findings.json").read_text())
    r = redis.Redis.from_url(stack.read_lab(state)["redis_url"], decode_responses=True)
    try:
        redis_cfg = r.config_get("maxmemory*")
    finally:
        r.close()
    fix = {
        "flow_s": round(time.monotonic() - t0, 1), "runbook_run_s": round(run_s, 1), "load_stop": stopped,
        "hypotheses": [{"category": h["category"], "confidence": h["confidence"], "disproved": h["disproved"]}
                       for h in findings["hypotheses"]],
        "applied": [a["action_id"] for a in audit if a["step"] == "applied" and a.get("changed")],
        "assessed": [{"action_id": a["action_id"], "result": a.get("result")} for a in audit if a["step"] == "assessed"],
        "rolled_back": [a["action_id"] for a in audit if a["step"] == "rolled_back"],
        "knobs_after": read_config(state / CONFIG_FILE).as_dict(), "redis_after": redis_cfg,
    }
    print(f"  applied: {', '.join(fix['applied']) or 'nothing'}", flush=True)
    print(f"  knobs after: {json.dumps(fix['knobs_after'])}; redis {json.dumps(redis_cfg)}", flush=True)
    return fix


def _ratio(a, b, nd=2):
    return None if a is None or b in (None, 0) else round(a / b, nd)


def summarize(phases: dict) -> dict:
    h, d, a = (phases[k] for k in ("healthy", "degraded", "after_fix"))

    def inc(p, side, key):
        return p["at_incident_rate"][side][key]

    cap_d, cap_a = d["capacity_rps"], a["capacity_rps"]
    p95_ratio_client = _ratio(inc(a, "client", "p95_ms"), inc(h, "client", "p95_ms"))
    p95_ratio_server = _ratio(inc(a, "server", "p95_ms"), inc(h, "server", "p95_ms"))
    db_d, db_a = inc(d, "server", "db_queries_per_request"), inc(a, "server", "db_queries_per_request")
    return {
        "capacity_rps": {k: phases[k]["capacity_rps"] for k in phases},
        "capacity_is_lower_bound": {k: phases[k]["max_step_passed"] for k in phases},
        "error_free_throughput_rps": {k: phases[k]["error_free_throughput_rps"] for k in phases},
        "ratios": {
            "capacity_after_over_degraded": None if cap_d == 0 else round(cap_a / cap_d, 2),
            "capacity_after_over_degraded_note": ("degraded meets the SLO at no step (capacity 0): the ratio is "
                                                  "unbounded") if cap_d == 0 else None,
            "capacity_after_over_healthy": _ratio(cap_a, h["capacity_rps"]),
            "error_free_throughput_after_over_degraded": _ratio(a["error_free_throughput_rps"],
                                                                d["error_free_throughput_rps"]),
            "p95_after_over_healthy_client": p95_ratio_client,
            "p95_after_over_healthy_server": p95_ratio_server,
            "p95_after_over_degraded_client": _ratio(inc(a, "client", "p95_ms"), inc(d, "client", "p95_ms"), 4),
            "db_queries_per_request_change_after_vs_degraded": None if not db_d or db_a is None
            else round(db_a / db_d - 1, 3),
        },
        "goals": {
            "after_p95_within_1.5x_healthy_client": None if p95_ratio_client is None
            else p95_ratio_client <= GOALS["after_p95_over_healthy_max"],
            "after_p95_within_1.5x_healthy_server": None if p95_ratio_server is None
            else p95_ratio_server <= GOALS["after_p95_over_healthy_max"],
            "capacity_after_at_least_5x_degraded": (cap_a > 0) if cap_d == 0
            else cap_a >= GOALS["capacity_after_over_degraded_min"] * cap_d,
        },
    }


def print_tables(out: dict) -> None:
    phases = out["phases"]
    print("\nsteps (client side; pass = p95 < 100 ms, 5xx < 1 %, unserved < 1 %)")
    print(f"{'phase':<10}{'rate':>6}{'achieved':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'5xx':>8}{'skipped':>9}  verdict")
    for name, p in phases.items():
        for s in p["steps"]:
            c = s["client"]
            print(f"{name:<10}{s['rate']:>6g}{c['rps']:>10}{_f(c['p50_ms']):>9}{_f(c['p95_ms']):>9}{_f(c['p99_ms']):>9}"
                  f"{_f(c['error_ratio_5xx'], '{:.2%}'):>8}{c['skipped_over_concurrency']:>9}  "
                  f"{'pass' if s['verdict']['pass'] else 'fail'}")
    s = out["summary"]
    print(f"\n{'':<34}{'healthy':>12}{'degraded':>12}{'after fix':>12}   write-up before -> after")
    cap = {k: (f">={v:g}" if s["capacity_is_lower_bound"][k] else f"{v:g}") for k, v in s["capacity_rps"].items()}
    print(f"{'capacity within SLO (req/s)':<34}{cap['healthy']:>12}{cap['degraded']:>12}{cap['after_fix']:>12}")
    eft = s["error_free_throughput_rps"]
    print(f"{'error-free throughput (req/s)':<34}{eft['healthy']:>12g}{eft['degraded']:>12g}{eft['after_fix']:>12g}"
          f"   throughput x{WRITEUP['throughput_ratio']:g}")
    rows = [("p50 ms (client)", "client", "p50_ms", "{:.1f}", ""),
            ("p95 ms (client)", "client", "p95_ms", "{:.1f}", "800 -> 50"),
            ("p99 ms (client)", "client", "p99_ms", "{:.1f}", ""),
            ("p95 ms (server histogram)", "server", "p95_ms", "{:.1f}", "800 -> 50"),
            ("cache hit ratio", "server", "cache_hit_ratio", "{:.1%}", "8% -> 85%"),
            ("5xx ratio (client)", "client", "error_ratio_5xx", "{:.2%}", "10% -> < 1%"),
            ("DB queries / request", "server", "db_queries_per_request", "{:.2f}", "-60% DB load")]
    print(f"at the incident rate ({INCIDENT_RATE:g} req/s):")
    for label, side, key, fmt, claim in rows:
        vals = [_f(phases[k]["at_incident_rate"][side][key], fmt) for k in ("healthy", "degraded", "after_fix")]
        print(f"  {label:<32}{vals[0]:>12}{vals[1]:>12}{vals[2]:>12}   {claim}")
    print("\nratios: " + json.dumps(s["ratios"], indent=1))
    print("goals:  " + json.dumps(s["goals"], indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="writes benchmarks/results/lab_capacity.json; about 15 minutes on 2 cores "
                                       "at the defaults")
    p.add_argument("--scale", type=float, default=1.0,
                   help="lab data size, 1.0 = 100k users, 1M orders (default: %(default)s)")
    p.add_argument("--steps", type=float, nargs="+", default=[5, 10, 20, 40, 80, 160], metavar="RPS",
                   help="offered rates in req/s, ascending (default: %(default)s)")
    p.add_argument("--warm", type=float, default=5.0, help="warm-up seconds before each step (default: %(default)s)")
    p.add_argument("--measure", type=float, default=20.0,
                   help="measured seconds per step and at the incident rate (default: %(default)s)")
    p.add_argument("--phase-warm", type=float, default=15.0,
                   help="warm-up seconds at the incident rate before each phase's first window (default: %(default)s)")
    p.add_argument("--healthy-warm", type=float, default=60.0,
                   help="the healthy phase's warm-up instead: it starts on a fresh lab with an empty cache, while "
                        "the after-fix phase follows minutes of load and the runbook's cache warming "
                        "(default: %(default)s)")
    p.add_argument("--baseline", type=float, default=60.0,
                   help="runbook lab load --baseline: healthy seconds before the deploy (default: %(default)s)")
    p.add_argument("--incident", type=float, default=60.0,
                   help="runbook lab load --incident: seconds of incident before the runbook runs (default: %(default)s)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON (default: %(default)s)")
    args = p.parse_args()
    args.steps = sorted(args.steps)

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="runbook-labcap-", dir="/tmp"))
    tmp.chmod(0o755)  # PostgreSQL runs as postgres and must enter the state folder
    state = tmp / "lab"
    env = {**os.environ, "RUNBOOK_LAB_DIR": str(state)}
    out: dict = {"benchmark": "lab_capacity", "at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2)},
                 "scale": args.scale, "users": SeedSize.at_scale(args.scale).users, "steps_rps": args.steps,
                 "warm_s": args.warm, "measure_s": args.measure, "phase_warm_s": args.phase_warm,
                 "healthy_warm_s": args.healthy_warm,
                 "incident_rate": INCIDENT_RATE, "criteria": {"p95_ms_below": SLO_P95_MS, "ratio_5xx_below":
                                                              SLO_ERROR_RATIO, "unserved_below": UNSERVED_MAX,
                                                              "p95_side": "client"},
                 "lab_flow": {"baseline_s": args.baseline, "incident_s": args.incident},
                 "writeup_claims": WRITEUP, "goals": GOALS, "phases": {}}
    users = out["users"]
    try:
        print(f"lab: scale {args.scale:g} ({users} users), state {state}, free ports", flush=True)
        runbook("lab", "up", "--scale", f"{args.scale:g}", "--ports", "free", "--profile", "healthy", env=env)
        lab = stack.read_lab(state)
        out["phases"]["healthy"] = measure_phase("healthy", lab, args, users, 1000, args.healthy_warm)
        out["degrade"] = runbook("lab", "profile", "degraded", env=env).strip().splitlines()
        out["phases"]["degraded"] = measure_phase("degraded", lab, args, users, 2000, args.phase_warm)
        out["runbook_fix"] = apply_runbook_fix(state, tmp, env, args)
        out["phases"]["after_fix"] = measure_phase("after_fix", lab, args, users, 3000, args.phase_warm)
    finally:
        subprocess.run([RUNBOOK, "lab", "down"], check=False, cwd=ROOT, env=env, capture_output=True, timeout=120)
        left = stack.status(state)
        shutil.rmtree(tmp, ignore_errors=True)
        if any(c.get("running") for c in left["components"].values()):
            print(f"warning: lab components still running after lab down: {left['components']}", file=sys.stderr)
    out["wall_s"] = round(time.monotonic() - started, 1)
    out["summary"] = summarize(out["phases"])
    print_tables(out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwall time {out['wall_s']:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
