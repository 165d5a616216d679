"""Time from Alertmanager's webhook to findings.json written, on the automated path (fixture mode).

Starts a private Redis and ``runbook serve`` (receiver + one Celery worker, concurrency 1) on free loopback
ports, then, N times (default 2), posts an Alertmanager-shaped webhook (version 4, a new alert group each time)
for the ``api`` service (parameters/automation/api.yaml: the bundled fixture incident) and follows the job in
the registry until it is stored. ``findings.json`` is written by 02_root_cause; its time is the file's mtime.
Per round: webhook -> answered (enqueued), -> picked by the worker, -> ``runbook run`` started,
-> findings.json, -> stored and notified; and 01/02's own seconds from run.json. The real Alertmanager path
(rule evaluation, group_wait) is in tests/automation/test_alert_to_run.py; it adds Alertmanager's group_wait.
Writes benchmarks/results/alert_to_findings.json.

    .venv/bin/python benchmarks/alert_to_findings.py [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_lib.automation.registry import Registry  # noqa: E402
from runbook_lib.lab.servers import RedisServer, free_port, wait_until  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "alert_to_findings.json"
GOAL_S = 30.0
RUN_TIMEOUT_S = 300


def _epoch(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def webhook(i: int) -> dict:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    labels = {"alertname": "ApiLatencyHigh", "service": "api", "severity": "page", "round": str(i)}
    return {"version": "4", "receiver": "runbook", "status": "firing", "truncatedAlerts": 0,
            "groupKey": f'{{}}:{{alertname="ApiLatencyHigh", service="api", round="{i}"}}',
            "groupLabels": {"alertname": "ApiLatencyHigh", "service": "api"}, "commonLabels": labels,
            "commonAnnotations": {"summary": "api p95 above its 100 ms SLO"}, "externalURL": "http://127.0.0.1:9093",
            "alerts": [{"status": "firing", "labels": labels, "annotations": {}, "startsAt": now,
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://127.0.0.1:9090/graph",
                        "fingerprint": f"{i:016x}"}]}


def one_round(url: str, registry: Registry, i: int) -> dict:
    body = json.dumps(webhook(i)).encode()
    req = urllib.request.Request(f"{url}/alerts", data=body, headers={"Content-Type": "application/json"})
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=10) as r:
        answer = json.load(r)
    answered = time.time()
    [action] = answer["actions"]
    assert action["action"] == "enqueued", answer
    job_id = action["job"]
    wait_until(lambda: (registry.get(job_id) or {}).get("state") in ("done", "failed"), RUN_TIMEOUT_S,
               f"job {job_id}")
    job = registry.get(job_id)
    assert job["state"] == "done", job.get("result")
    res = job["result"]
    run = json.loads((Path(res["stored"]) / "run.json").read_text())
    secs = {n["notebook"][:2]: n["seconds"] for n in run["notebooks"]}

    def since(text):
        t = _epoch(text)
        return None if t is None else round(t - t0, 3)

    return {"job": job_id, "webhook_answered_s": round(answered - t0, 3), "picked_s": since(job.get("picked_at")),
            "run_started_s": since(job.get("run_started_at")), "findings_s": since(res.get("findings_at")),
            "stored_s": since(res.get("finished_at")), "notebook_01_s": secs.get("01"),
            "notebook_02_s": secs.get("02")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="runbook-bench-a2f-"))
    redis = RedisServer(scratch / "redis")
    serve = None
    rounds = []
    try:
        redis.start()
        port = free_port()
        log = open(scratch / "serve.log", "wb")  # noqa: SIM115 - closed below
        serve = subprocess.Popen([sys.executable, "-m", "runbook_lib.automation", "serve", "--listen",
                                  f"127.0.0.1:{port}", "--broker", redis.url, "--store", str(scratch / "store"),
                                  "--work-dir", str(scratch / "work"), "--shutdown-grace", "10"],
                                 cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                return bool(json.load(r)["workers"])

        wait_until(up, 60, "runbook serve", scratch / "serve.log")
        registry = Registry(redis.url)
        for i in range(args.runs):
            rounds.append(one_round(url, registry, i))
            r = rounds[-1]
            print(f"round {i}: webhook -> picked {r['picked_s']:.3f} s, -> runbook run {r['run_started_s']:.3f} s, "
                  f"-> findings.json {r['findings_s']:.1f} s (01 {r['notebook_01_s']} s + 02 {r['notebook_02_s']} s), "
                  f"-> stored {r['stored_s']:.1f} s", flush=True)
    finally:
        if serve is not None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
        redis.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    findings = [r["findings_s"] for r in rounds]
    result = {"what": "Alertmanager-shaped webhook -> findings.json, runbook serve (1 worker, concurrency 1), "
                      "parameters/automation/api.yaml (fixture mode)",
              "rounds": rounds, "median_findings_s": statistics.median(findings), "min_findings_s": min(findings),
              "median_picked_s": statistics.median(r["picked_s"] for r in rounds),
              "median_stored_s": statistics.median(r["stored_s"] for r in rounds),
              "goal_s": GOAL_S, "goal_met": statistics.median(findings) <= GOAL_S,
              "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_avg_at_end": os.getloadavg()[0]}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"median webhook -> findings.json {result['median_findings_s']:.1f} s (min {result['min_findings_s']:.1f} s; "
          f"goal <= {GOAL_S:g} s: {'met' if result['goal_met'] else 'NOT met'}) on {result['cpus']} CPUs; "
          f"picked by the worker after {result['median_picked_s'] * 1000:.0f} ms")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
