"""An incident storm: 20 notifications for 5 services become 5 runs on 2 Celery workers, each run exactly once,
none lost, while one worker is SIGKILLed (with its pool process) in the middle of a run.

Real: the HTTP receiver (uvicorn), Redis as broker and registry, two ``celery worker --concurrency 1 -P prefork``
subprocesses, the S3 store on a moto server and the notification webhook (a local capture server).
A stand-in: ``runbook run`` itself is replaced by ``tests/support/automation_support.py`` (the worker's
``RUNBOOK_AUTOMATION_COMMAND``), which writes run.json like the runner, pretends to work for 3 s and keeps a
ledger of its starts and ends; the real ``runbook run`` (about a minute per run) is in test_alert_to_run.py.
Short timings make a lost worker visible fast: a 2 s lease, Redis' visibility timeout 6 s.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import httpx
import pytest
import uvicorn

from runbook_lib.automation.config import AutomationConfig
from runbook_lib.automation.receiver import create_app, default_dispatcher
from runbook_lib.automation.registry import Registry
from runbook_lib.lab.servers import free_port, wait_until
from tests.support.automation_support import Capture, Worker, notification, read_ledger, standin_command
from tests.support.moto_support import start_moto, stop_moto

pytestmark = pytest.mark.slow

SERVICES = ("api", "web", "search", "orders", "auth")
BUCKET = "runbook-runs"
NOTIFY_ENV = "RUNBOOK_SECRET_TEST_NOTIFY_URL"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class Receiver:
    """The receiver's ASGI app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 20, "the receiver")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_20_alerts_5_runs_2_workers_one_killed(private_redis, tmp_path, monkeypatch):
    templates = tmp_path / "templates"
    templates.mkdir()
    for s in SERVICES:
        (templates / f"{s}.yaml").write_text(f"service: {s}\nbase: parameters/fixtures.yaml\n")
    capture = Capture()
    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    moto, moto_url = start_moto(tmp_path)
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket=BUCKET)
    cfg = AutomationConfig(broker=private_redis.url, templates=str(templates), store=f"s3://{BUCKET}/automated",
                           s3_endpoint_url=moto_url, work_dir=str(tmp_path / "work"), notify_url_env=NOTIFY_ENV,
                           command=standin_command(), time_limit_s=60, max_attempts=3, retry_delay_s=1,
                           lease_s=2, visibility_timeout_s=6, restore_interval_s=1)
    ledger = tmp_path / "ledger.jsonl"
    env = {**os.environ, **AWS, **cfg.to_env(), NOTIFY_ENV: capture.url(), "RUNBOOK_FAKE_RUN_S": "3",
           "RUNBOOK_FAKE_LEDGER": str(ledger)}
    registry = Registry(private_redis.url)
    workers: list[Worker] = []
    receiver = None
    try:
        workers = [Worker(env, name, tmp_path) for name in ("w1", "w2")]
        for w in workers:
            w.wait_ready(registry)
        receiver = Receiver(create_app(default_dispatcher(cfg)))
        burst = [notification(s) for _ in range(4) for s in SERVICES]
        with httpx.Client(base_url=f"http://127.0.0.1:{receiver.port}", timeout=10) as client, \
                ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda n: client.post("/alerts", json=n), burst))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
        actions = [a.json()["actions"][0]["action"] for a in answers]
        assert actions.count("enqueued") == 5 and actions.count("duplicate") == 15

        # kill w1 (the worker and its pool process) while it is running a job
        w1, w2 = workers

        def running_on_w1() -> str | None:
            for j in registry.jobs():
                if j["state"] == "running" and (j.get("owner") or {}).get("node") == w1.node and j.get("run_pid"):
                    if any(e["event"] == "start" and j["id"] in e["out"] for e in read_ledger(ledger)):
                        return j["id"]
            return None

        wait_until(lambda: running_on_w1() is not None, 30, "a run on worker w1")
        killed = running_on_w1()
        w1.kill_hard()

        wait_until(lambda: len(registry.jobs()) == 5 and all(j["state"] in ("done", "failed")
                                                              for j in registry.jobs()), 120, "all 5 jobs finished")
        jobs = {j["id"]: j for j in registry.jobs()}
        assert all(j["state"] == "done" for j in jobs.values()), {i: j["attempts"] for i, j in jobs.items()}

        # each run exactly once: one completion per incident, and the killed one stopped before its rerun began
        events = read_ledger(ledger)
        by_incident: dict[str, list[str]] = {}
        for e in sorted(events, key=lambda e: e["t"]):
            by_incident.setdefault(e["incident"], []).append(e["event"])
        assert len(by_incident) == 5
        killed_incident = jobs[killed]["incident_id"]
        for incident, seq in by_incident.items():
            want = ["start", "interrupted", "start", "complete"] if incident == killed_incident else ["start", "complete"]
            assert seq == want, (incident, seq)

        # the registry says what happened to the killed run: worker lost on w1, taken over by w2
        attempts = jobs[killed]["attempts"]
        assert [a["node"] for a in attempts] == [w1.node, w2.node]
        assert attempts[0]["outcome"] == "worker lost" and attempts[1]["takeover"]
        assert jobs[killed]["notifications"] == 4

        # every run folder is in the bucket; the rerun's run.json keeps the interrupted attempt with its cell
        s3 = boto3.client("s3", endpoint_url=moto_url)
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
        for job_id, j in jobs.items():
            prefix = f"automated/{j['incident_id']}/{job_id}/"
            assert {prefix + n for n in ("run.json", "findings.json", "postmortem.html", "automation.json",
                                         "runbook.log")} <= keys
            assert j["result"]["stored"] == f"s3://{BUCKET}/{prefix}"
        run = json.loads(s3.get_object(Bucket=BUCKET, Key=f"automated/{killed_incident}/{killed}/run.json")["Body"]
                         .read())
        assert run["status"] == "complete"
        assert run["attempts"][0]["status"] == "interrupted"
        assert run["attempts"][0]["interruption"]["notebook"] == "02_root_cause"
        record = json.loads(s3.get_object(Bucket=BUCKET, Key=f"automated/{killed_incident}/{killed}/automation.json")
                            ["Body"].read())
        assert record["alert"]["service"] == jobs[killed]["service"] and len(record["attempts"]) == 2

        # one notification per run, with its root cause and its link, and never the webhook's own URL
        wait_until(lambda: len(capture.bodies) >= 5, 10, "5 notifications")
        assert len(capture.bodies) == 5
        texts = [b["text"] for b in capture.bodies]
        for job_id, j in jobs.items():
            [text] = [t for t in texts if f"`{j['incident_id']}`" in t]
            assert "Top root cause: *The cache stopped absorbing reads*" in text
            assert f"s3://{BUCKET}/automated/{j['incident_id']}/{job_id}/postmortem.html" in text
        logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
        assert "xoxb-capture-token" not in logs + json.dumps(capture.bodies)
        assert not any((tmp_path / "work").iterdir())  # stored runs leave no work folder behind
    finally:
        if receiver is not None:
            receiver.stop()
        for w in workers:
            w.stop()
        stop_moto(moto)
        capture.close()
        shutil.rmtree(tmp_path / "work", ignore_errors=True)


def test_a_redelivery_while_the_run_goes_on_does_not_start_it_twice(private_redis, tmp_path):
    """Redis hands an unacknowledged message to another worker once the visibility timeout passes, even when
    its worker is alive and the run simply takes longer (here 4 s against a 7 s run): the lease turns that
    delivery into a watcher, and the job still runs once."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "api.yaml").write_text("service: api\nbase: parameters/fixtures.yaml\n")
    cfg = AutomationConfig(broker=private_redis.url, templates=str(tmp_path / "templates"),
                           store=str(tmp_path / "store"), work_dir=str(tmp_path / "work"), command=standin_command(),
                           notify_url_env="RUNBOOK_SECRET_UNSET_NOTIFY_URL", time_limit_s=60, lease_s=2,
                           visibility_timeout_s=4, restore_interval_s=1, retry_delay_s=1)
    ledger = tmp_path / "ledger.jsonl"
    env = {**os.environ, **cfg.to_env(), "RUNBOOK_FAKE_RUN_S": "7", "RUNBOOK_FAKE_LEDGER": str(ledger)}
    registry = Registry(private_redis.url)
    workers: list[Worker] = []
    try:
        workers = [Worker(env, name, tmp_path) for name in ("w1", "w2")]
        for w in workers:
            w.wait_ready(registry)
        [action] = default_dispatcher(cfg).handle(notification("api"))
        wait_until(lambda: registry.get(action["job"])["state"] == "done", 60, "the job")
        events = [e["event"] for e in read_ledger(ledger)]
        assert events == ["start", "complete"]
        job = registry.get(action["job"])
        assert len(job["attempts"]) == 1
        logs = "".join(w.log_file.read_text() for w in workers)
        assert "checking again in" in logs  # the redelivered message found the lease held
        assert (Path(job["result"]["stored"]) / "run.json").is_file()
    finally:
        for w in workers:
            w.stop()
