"""The README's lab flow, command for command: ``runbook lab up``, ``runbook lab load``, ``runbook run -p
parameters/lab.yaml``, ``runbook lab down``. Smaller data, shorter phases and free ports (the only
differences: a developer's lab may hold the well-known ports); ``runbook run`` stops after the root-cause
notebook, so nothing is applied. The root cause must name the cache and the database from live data, the
charts must carry the lab's events, and no process may survive ``lab down``, pass or fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from runbook_lib.lab import stack
from runbook_lib.lab.config import CONFIG_FILE
from runbook_lib.lab.servers import kill_pid, pid_alive, wait_until
from runbook_lib.settings import project_root
from tests.conftest import lab_pids, make_server_dir

pytestmark = pytest.mark.slow

ROOT = project_root()
RUNBOOK = str(Path(sys.executable).with_name("runbook"))
SCALE = "0.1"          # 10k users, 100k orders: the degraded endpoints are already ~5x slower
# Each phase must give diagnose.window >= MIN_SEGMENT_POINTS (10) samples at lab.yaml's 5 s step, i.e. 50 s,
# less the load's first seconds; the defaults (150 s + 180 s) are for a human, these keep the test near 3 minutes.
BASELINE_S = "60"
INCIDENT_S = "60"
COMMAND_TIMEOUT_S = 600
# Alerts: a rule's `for:` in the lab is 30 s (stack.LAB_ALERT_FOR) and the cause rules read 5 m of rate(), so a
# firing may land up to a minute after the fix began and the resolution up to ~6 min after it.
ALERT_LAG = timedelta(seconds=60)
ALERT_RESOLVE_S = 420


def source_of(params: Path, state: Path):
    """The runbook's own Prometheus source for the lab, from the drill's parameters (which name the lab's folder
    through $RUNBOOK_LAB_DIR, read when the settings load)."""
    from runbook_lib.settings import load_settings
    from runbook_lib.sources import open_source

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNBOOK_LAB_DIR", str(state))
        return open_source(load_settings(params))


def runbook(*args: str, env: dict) -> str:
    r = subprocess.run([RUNBOOK, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"runbook {' '.join(args)} exited {r.returncode}: {r.stderr[-2000:]}"
    return r.stdout


def test_lab_up_load_run_names_the_cache_and_the_database(tmp_path):
    folder = make_server_dir("labflow")
    state = folder / "lab"
    env = {**os.environ, "RUNBOOK_LAB_DIR": str(state)}
    seen: dict[str, int] = {}
    try:
        runbook("lab", "up", "--scale", SCALE, "--ports", "free", env=env)
        out = runbook("lab", "load", "--baseline", BASELINE_S, "--incident", INCIDENT_S, env=env)
        seen.update(lab_pids(state))
        assert "the incident is live" in out and "incident:" in out  # progress lines of both phases
        load = stack.status(state)["load"]
        assert load["running"], "the load must go on in the background for the runbook's own steps"

        params = folder / "lab.yaml"
        params.write_text(stack.parameters_for((ROOT / "parameters" / "lab.yaml").read_text(), state))
        t0 = time.time()
        run = Path(runbook("run", "-p", str(params), "--out", str(tmp_path / "run"), "--only", "01", "02",
                           "--no-export", env=env).strip())
        print(f"time to diagnosis in the lab drill: findings.json written "
              f"{(run / 'findings.json').stat().st_mtime - t0:.0f} s after `runbook run` started")

        symptoms = json.loads((run / "symptoms.json").read_text())
        window = symptoms["window"]
        assert window["ratio"] >= 2, f"p95 should at least double in the incident: {window}"
        findings = json.loads((run / "findings.json").read_text())
        verdict = {h["category"]: h for h in findings["hypotheses"]}
        for cause in ("cache", "database"):
            assert not verdict[cause]["disproved"] and verdict[cause]["confidence"] >= 0.5, verdict[cause]
        live = {e["check"] for e in verdict["cache"]["evidence"]}
        assert any("INFO" in check for check in live), "the cache verdict must use Redis's own counters"
        assert verdict["application"]["disproved"] or verdict["application"]["confidence"] < 0.5

        figures = " ".join(p.read_text() for p in (run / "figures").glob("01-*.json"))
        assert "degraded profile" in figures, "the deploy from the lab's events.jsonl must mark the charts"

        # the drill goes on: 03 plans, 04 applies to the lab (lab.yaml: apply: true) and judges every change
        # by direct measurement over windows that start after the changes
        t0 = time.monotonic()
        runbook("run", "-p", str(params), "--out", str(run), "--only", "03", "04", "--no-export", env=env)
        seconds_04 = time.monotonic() - t0
        audit = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
        applied = [a for a in audit if a["step"] == "applied" and a.get("changed")]
        assessed = [a for a in audit if a["step"] == "assessed"]
        assert applied and assessed, [a["step"] for a in audit]
        last_change = max(datetime.fromisoformat(a["ts"]) for a in applied)
        for a in assessed:  # every verdict rests on a window of post-change data only
            assert a.get("after") and datetime.fromisoformat(a["after"]["window_start"]) >= last_change, a
        cache = [a for a in assessed if a.get("measured", "").startswith("Redis keyspace hit ratio")]
        assert cache and {a["result"] for a in cache} == {"helped"}, [(a["action_id"], a["result"]) for a in cache]
        index = [a for a in assessed if a["kind"] == "postgres.create_index"]
        assert all(a.get("measured", "").startswith("mean ms per call") for a in index), index
        print(f"04 wall time in the lab drill: {seconds_04:.0f} s; verdicts: "
              + ", ".join(f"{a['action_id']}={a['result']}" for a in assessed))

        # the harmful-change drill: the operator adds a Redis limit far below the working set through the
        # parameters; the runbook measures it worse against the fixed cache and undoes it by itself
        import redis

        lab_redis = redis.Redis.from_url(stack.read_lab(state)["redis_url"], decode_responses=True)
        fixed = lab_redis.config_get("maxmemory*")
        harmful = folder / "lab-harmful.yaml"
        harmful.write_text(params.read_text().replace("remediation:\n", (
            "remediation:\n  auto_rollback: true\n  extra_actions:\n"
            "    - {kind: redis.config_set, inputs: {maxmemory: 1mb, maxmemory-policy: allkeys-random},"
            " why: 'drill: a limit far below the working set'}\n"), 1))
        runbook("run", "-p", str(harmful), "--out", str(run), "--only", "03", "04", "--no-export", env=env)
        audit = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
        drill = [a["step"] for a in audit if a["action_id"] == "redis-config-maxmemory-maxmemory-policy"]
        assert drill[drill.index("applied"):] == ["applied", "verified", "assessed", "rolling_back", "rolled_back",
                                                  "reassessed"], drill
        verdict = next(a for a in audit if a["step"] == "assessed"
                       and a["action_id"] == "redis-config-maxmemory-maxmemory-policy")
        assert verdict["result"] == "worse" and verdict["auto_rollback"], verdict
        assert lab_redis.config_get("maxmemory*") == fixed  # the server is back to the fixed setting
        lab_redis.close()

        # the scaling drill: the operator scales the backend out (replicas and pool) through the parameters; the
        # runbook applies it (real processes behind the API socket), measures p95 and throughput before and
        # after, and undoes exactly that action afterwards
        config = state / CONFIG_FILE
        prior = json.loads(config.read_text())
        scaling = folder / "lab-scaling.yaml"
        scaling.write_text(params.read_text().replace("remediation:\n", (
            "remediation:\n  extra_actions:\n"
            f"    - {{kind: app.config, inputs: {{replicas: {prior['replicas'] + 1}, db_pool_max: "
            f"{prior['db_pool_max'] + 2}}}, why: 'drill: scale out'}}\n"), 1))
        runbook("run", "-p", str(scaling), "--out", str(run), "--only", "03", "04", "--no-export", env=env)
        audit = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
        judged = [a for a in audit if a["step"] == "assessed" and a["action_id"] == "app-config-db_pool_max-replicas"]
        assert judged and judged[-1]["measured"].startswith("API latency p95"), judged
        b, a = judged[-1]["before"], judged[-1]["after"]
        assert a["enough"] and b["enough"] and a["detail"]["request_rate"] > 0, judged[-1]
        print(f"scaling drill: {prior['replicas']} -> {prior['replicas'] + 1} replicas: p95 {b['value']:.1f} -> "
              f"{a['value']:.1f} ms, throughput per replica {b['detail']['request_rate'] / prior['replicas']:.1f} -> "
              f"{a['detail']['request_rate'] / (prior['replicas'] + 1):.1f} req/s ({judged[-1]['result']})")
        runbook("rollback", str(run), "--action", "app-config-db_pool_max-replicas", "--apply", env=env)
        assert json.loads(config.read_text()) == prior  # the knobs are back exactly
        wait_until(lambda: len(stack.status(state)["components"]["backend"]["replicas"]) == prior["replicas"], 30,
                   "the extra replica to stop")

        # the alerts the runbook generated (loaded into the lab's Prometheus at `lab up`) fired during the incident
        # and resolve once the fix shows in their windows; 05 draws both on its chart
        lab_source = source_of(params, state)
        deploy = next(e.time for e in lab_source.events() if e.kind == "deploy")
        first_fix = min(datetime.fromisoformat(a["ts"]) for a in applied)

        def alert_states() -> tuple[set, set]:
            events = lab_source.alert_events(pd.Timestamp(deploy), pd.Timestamp.now(tz="UTC"), 5)
            fired = {e.label.removesuffix(" firing") for e in events if e.label.endswith(" firing")
                     and deploy <= e.time <= first_fix + ALERT_LAG}
            resolved = {e.label.removesuffix(" resolved") for e in events if e.label.endswith(" resolved")
                        and e.time > first_fix}
            return fired, resolved

        wait_until(lambda: alert_states()[0], 10, "an alert that fired during the incident")
        wait_until(lambda: set.intersection(*alert_states()), ALERT_RESOLVE_S,
                   "an incident alert to resolve after the fix")
        fired, resolved = alert_states()
        print(f"alerts: fired during the incident {sorted(fired)}; resolved after the fix {sorted(resolved)}")
        runbook("run", "-p", str(params), "--out", str(run), "--only", "05", "--no-export", env=env)
        chart = (run / "figures").glob("05-*.json")
        labels = " ".join(p.read_text() for p in chart)
        both = sorted(a for a in fired & resolved if f"{a} firing" in labels and f"{a} resolved" in labels)
        assert both, f"05's chart must show an incident alert firing and resolving: {sorted(fired & resolved)}"
    finally:
        seen.update(lab_pids(state))
        subprocess.run([RUNBOOK, "lab", "down"], check=False, cwd=ROOT, env=env, capture_output=True, timeout=120)
        survivors = {name: pid for name, pid in seen.items() if pid_alive(pid)}
        for pid in survivors.values():
            kill_pid(pid, str(state))
        shutil.rmtree(folder, ignore_errors=True)
        assert not survivors, f"processes survived lab down: {survivors}"
