"""End to end, nothing stood in: a real Prometheus evaluates an alert rule on a tiny exporter's p95 and sends it
to a real Alertmanager (Debian's prometheus-alertmanager, on loopback), whose webhook reaches ``runbook serve``
(receiver + Celery worker on a private Redis); the worker runs the real ``runbook run`` on the shipped ``api``
template (fixture mode, about a minute), the run folder lands in the local store and the notification reaches
a capture server. Alertmanager repeats the firing group every 3 s (one run all the same) and sends the
resolution when the synthetic incident ends (recorded on the run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from runbook_lib.automation.registry import Registry
from runbook_lib.lab.servers import free_port, wait_until
from runbook_lib.settings import project_root
from tests.support.automation_support import AlertmanagerServer, Capture, alerting_prometheus

pytestmark = pytest.mark.slow

RULES = """groups:
  - name: runbook-automation-test
    rules:
      - alert: ApiLatencyHigh
        expr: runbook_demo_latency_p95_ms{service="api"} > 100
        labels: {severity: page}
        annotations: {summary: "api p95 above its 100 ms SLO"}
"""
NOTIFY_ENV = "RUNBOOK_SECRET_E2E_NOTIFY_URL"
RUN_TIMEOUT_S = 240


def _healthz(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
        return json.load(r)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_an_alert_runs_the_runbook_and_the_run_and_its_notification_arrive(private_redis, tmp_path):
    reg = CollectorRegistry()
    p95 = Gauge("runbook_demo_latency_p95_ms", "the service's p95 (synthetic)", ["service"], registry=reg)
    p95.labels(service="api").set(20)
    exporter_port = free_port()
    exporter, _thread = start_http_server(exporter_port, addr="127.0.0.1", registry=reg)
    capture = Capture()
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    receiver_port = free_port()
    am = AlertmanagerServer(tmp_path / "am", f"http://127.0.0.1:{receiver_port}/alerts")
    prom = None
    serve = None
    log_path = tmp_path / "serve.log"
    registry = Registry(private_redis.url)
    try:
        am.start()
        prom = alerting_prometheus(tmp_path / "prom", [f"127.0.0.1:{exporter_port}"], rules, am.port)
        prom.start()
        env = {**os.environ, NOTIFY_ENV: capture.url()}
        argv = [sys.executable, "-m", "runbook_lib.automation", "serve", "--listen", f"127.0.0.1:{receiver_port}",
                "--broker", private_redis.url, "--store", str(tmp_path / "store"), "--work-dir",
                str(tmp_path / "work"), "--notify-url-env", NOTIFY_ENV, "--time-limit", "300",
                "--shutdown-grace", "10"]
        with open(log_path, "ab") as log:
            serve = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     cwd=project_root(), start_new_session=True)
        wait_until(lambda: serve.poll() is None and _healthz(f"http://127.0.0.1:{receiver_port}")["workers"], 60,
                   "runbook serve (receiver and worker)", log_path)
        prom.wait_first_scrape()

        p95.labels(service="api").set(250)  # the incident
        wait_until(lambda: len(registry.jobs()) == 1, 40, "the alert's job", log_path)
        wait_until(lambda: registry.jobs()[0]["notifications"] >= 2, 40, "Alertmanager repeating the group")
        p95.labels(service="api").set(20)  # the incident ends while the runbook runs
        wait_until(lambda: registry.jobs()[0].get("resolved_at"), 60, "the resolved notification")
        wait_until(lambda: registry.jobs()[0]["state"] in ("done", "failed"), RUN_TIMEOUT_S, "the run", log_path)

        [job] = registry.jobs()
        assert job["state"] == "done", job.get("result") or job["attempts"]
        assert job["notifications"] >= 2 and len(job["attempts"]) == 1
        assert job["service"] == "api" and job["incident_id"].startswith("api-apilatencyhigh-")
        stored = Path(job["result"]["stored"])
        assert stored == tmp_path / "store" / job["incident_id"] / job["id"]
        run = json.loads((stored / "run.json").read_text())
        assert run["status"] == "complete" and run["mode"] == "fixture"
        assert {"findings.json", "postmortem.html", "postmortem.md", "audit.jsonl", "runbook.log"} \
            <= {p.name for p in stored.iterdir()}
        record = json.loads((stored / "automation.json").read_text())
        assert record["alert"]["alertname"] == "ApiLatencyHigh"
        assert "runbook_demo_latency_p95_ms" in urllib.request.unquote(record["alert"]["generator_url"])
        assert record["resolved_at"] == job["resolved_at"]
        assert record["result"]["status"] == "complete" and record["summary"]["changed"] is False
        assert not list(json.loads(line)["step"] for line in (stored / "audit.jsonl").read_text().splitlines()
                        if json.loads(line)["step"] in ("applying", "applied"))  # a dry run

        wait_until(lambda: capture.bodies, 10, "the notification")
        [note] = capture.bodies
        text = note["text"]
        assert f"OK: `{job['incident_id']}` (api, alert ApiLatencyHigh" in text
        assert "Top root cause: *The database is doing far more, and slower, work per request*" in text
        assert f"Postmortem: {(stored / 'postmortem.html').as_uri()}" in text and "resolved at" in text
        assert capture.paths == ["/hooks/T0RUNBOOK/B0TEST/xoxb-capture-token-8d2f"]
        logs = log_path.read_text() + json.dumps(record)
        assert "xoxb-capture-token" not in logs

        webhook_to_findings = _epoch(job["result"]["findings_at"]) - _epoch(job["created_at"])
        print(f"alert webhook -> findings.json: {webhook_to_findings:.1f} s; "
              f"-> picked by the worker {_epoch(job['picked_at']) - _epoch(job['created_at']):.3f} s")
        assert 0 < webhook_to_findings < RUN_TIMEOUT_S

        serve.send_signal(signal.SIGTERM)  # stops the receiver, then its worker: nothing of it is left
        assert serve.wait(timeout=40) == 0
        assert not _group_alive(serve.pid)
    finally:
        if serve is not None:
            if serve.poll() is None:
                serve.send_signal(signal.SIGTERM)
                try:
                    serve.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    pass
            if _group_alive(serve.pid):  # a worker left behind: stop it by its process group
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait(timeout=10)
        if prom is not None:
            prom.stop()
        am.stop()
        exporter.shutdown()
        exporter.server_close()
        capture.close()
        shutil.rmtree(tmp_path / "work", ignore_errors=True)
