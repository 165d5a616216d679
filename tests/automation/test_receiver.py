"""The receiver and the job registry on a private Redis: one job per alert group, resolutions recorded on
it, leases that stop a second worker from running a job twice, and HTTP answers Alertmanager understands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from runbook_lib.automation.alert_mapping import load_templates
from runbook_lib.automation.automation_errors import TemplateError
from runbook_lib.automation.config import AutomationConfig
from runbook_lib.automation.receiver import Dispatcher, create_app
from runbook_lib.automation.registry import Owner, Registry
from runbook_lib.automation.tasks import RESOLVED_TASK, RUN_TASK
from runbook_lib.settings import project_root
from tests.support.automation_support import notification

pytestmark = pytest.mark.slow

SERVICES = ("api", "web", "search", "orders", "auth")


@pytest.fixture
def registry(private_redis):
    return Registry(private_redis.url)


@pytest.fixture
def templates(tmp_path):
    folder = tmp_path / "templates"
    folder.mkdir()
    for s in SERVICES:
        (folder / f"{s}.yaml").write_text(f"service: {s}\nbase: parameters/fixtures.yaml\n")
    return load_templates(folder)


class Queue:
    def __init__(self, fail: bool = False):
        self.sent: list[tuple[str, str]] = []
        self.fail = fail

    def __call__(self, task: str, job_id: str) -> None:
        if self.fail:
            raise ConnectionError("broker went away")
        self.sent.append((task, job_id))


def dispatcher(private_redis, registry, templates, queue) -> Dispatcher:
    return Dispatcher(AutomationConfig(broker=private_redis.url), registry, queue, templates)


def test_a_burst_of_repeats_opens_one_job_per_group_even_when_racing(private_redis, registry, templates):
    queue = Queue()
    d = dispatcher(private_redis, registry, templates, queue)
    burst = [notification(s) for s in SERVICES for _ in range(4)]  # 20 notifications, 5 groups
    with ThreadPoolExecutor(8) as pool:
        actions = [a for result in pool.map(d.handle, burst) for a in result]
    assert sorted(a["action"] for a in actions).count("enqueued") == 5
    assert sum(a["action"] == "duplicate" for a in actions) == 15
    assert len(queue.sent) == 5 and {t for t, _ in queue.sent} == {RUN_TASK}
    jobs = registry.jobs()
    assert len(jobs) == 5 and {j["service"] for j in jobs} == set(SERVICES)
    assert all(j["notifications"] == 4 and j["state"] == "queued" for j in jobs)
    assert {j["id"] for j in jobs} == {job for _, job in queue.sent}


def test_resolved_is_recorded_on_the_job_and_the_next_firing_is_a_new_run(private_redis, registry, templates):
    queue = Queue()
    d = dispatcher(private_redis, registry, templates, queue)
    [first] = d.handle(notification("api"))
    [resolved] = d.handle(notification("api", status="resolved"))
    assert resolved == {"job": first["job"], "action": "resolved", "dedupe_key": first["dedupe_key"]}
    rec = registry.get(first["job"])
    assert rec["resolved_at"] and rec["resolved_notifications"] == 1
    [again] = d.handle(notification("api", status="resolved"))  # Alertmanager repeats a resolution too
    assert again["job"] == first["job"] and registry.get(first["job"])["resolved_notifications"] == 2
    assert registry.get(first["job"])["resolved_at"] == rec["resolved_at"]
    [refire] = d.handle(notification("api", starts_at="2026-12-01T11:00:00Z"))
    assert refire["action"] == "enqueued" and refire["job"] != first["job"]
    assert queue.sent == [(RUN_TASK, first["job"]), (RESOLVED_TASK, first["job"]), (RESOLVED_TASK, first["job"]),
                          (RUN_TASK, refire["job"])]
    assert d.handle(notification("web", status="resolved"))[0]["action"] == "unknown-group"


def test_a_lease_keeps_a_second_worker_off_a_running_job(registry, monkeypatch):
    job, _ = registry.open_job("k", {"incident_id": "i", "parameters": {}})
    a, b = Owner.here("a@host"), Owner.here("b@host")
    assert registry.claim(job, a, lease_s=30).outcome == "claimed"
    busy = registry.claim(job, b, lease_s=30)
    assert busy.outcome == "busy" and 25 < busy.wait_s <= 30
    assert registry.renew(job, a, 30) and not registry.renew(job, b, 30)
    # a's process is gone (same host): b takes over at once, and a can no longer touch the job
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    registry.update(job, lambda r: (True, r["owner"].update(pid=dead.pid)))
    taken = registry.claim(job, b, lease_s=30)
    assert taken.outcome == "claimed" and taken.takeover
    assert [x["outcome"] for x in taken.record["attempts"][:-1]] == ["worker lost"]
    assert not registry.renew(job, a, 30)
    assert not registry.release(job, a, "done", {})
    assert registry.release(job, b, "done", {"outcome": "done"})
    assert registry.claim(job, a, lease_s=30).outcome == "finished"


def test_an_expired_lease_is_taken_over(registry):
    job, _ = registry.open_job("k2", {"incident_id": "i", "parameters": {}})
    a, b = Owner.here("a@elsewhere"), Owner.here("b@host")
    registry.claim(job, a, lease_s=30)
    registry.update(job, lambda r: (True, r.update(lease_until=0, owner={**r["owner"], "host": "elsewhere"})))
    assert registry.claim(job, b, lease_s=30).takeover


def test_http_answers_alertmanager_understands(private_redis, registry, templates):
    queue = Queue()
    client = TestClient(create_app(dispatcher(private_redis, registry, templates, queue)))
    r = client.post("/alerts", json=notification("api"))
    assert r.status_code == 200 and r.json()["actions"][0]["action"] == "enqueued"
    assert client.post("/alerts", json=notification("api")).json()["actions"][0]["action"] == "duplicate"
    bad = client.post("/alerts", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["hint"]
    unmapped = client.post("/alerts", json=notification("billing"))
    assert unmapped.status_code == 422 and "no automation template for service 'billing'" in unmapped.json()["error"]
    huge = client.post("/alerts", content=b" " * 1_000_001)
    assert huge.status_code == 413
    health = client.get("/healthz").json()
    assert health["ok"] and health["templates"] == sorted(SERVICES)
    job = queue.sent[0][1]
    shown = client.get(f"/jobs/{job}").json()
    assert shown["id"] == job and "parameters" not in shown and shown["notifications"] == 2
    assert client.get("/jobs/nope").status_code == 404


def test_a_broker_that_refuses_the_job_leaves_nothing_behind(private_redis, registry, templates):
    client = TestClient(create_app(dispatcher(private_redis, registry, templates, Queue(fail=True))))
    r = client.post("/alerts", json=notification("api"))
    assert r.status_code == 503 and "could not be enqueued" in r.json()["error"]
    assert registry.jobs() == []  # Alertmanager retries a 5xx: the retry must open the job
    queue = Queue()
    ok = TestClient(create_app(dispatcher(private_redis, registry, templates, queue))).post(
        "/alerts", json=notification("api"))
    assert ok.json()["actions"][0]["action"] == "enqueued" and len(queue.sent) == 1


def test_a_stalled_job_is_enqueued_again_by_the_sweep(private_redis, registry, templates):
    queue = Queue()
    cfg = replace(AutomationConfig(broker=private_redis.url), lease_s=1, visibility_timeout_s=1)
    d = Dispatcher(cfg, registry, queue, templates)
    [a] = d.handle(notification("api"))
    assert d.sweep() == []  # fresh
    registry.r.set(registry.k("job", a["job"]), json.dumps({**registry.get(a["job"]),
                                                             "updated_at": "2026-01-01T00:00:00.000Z"}))
    assert d.sweep() == [a["job"]] and queue.sent[-1] == (RUN_TASK, a["job"])
    assert d.sweep() == []  # touched: not again at once


def test_the_command_line_refuses_a_password_in_the_broker_url():
    r = subprocess.run([sys.executable, "-m", "runbook_lib.automation", "serve", "--broker",
                        "redis://:hunter22@127.0.0.1:6379/0"], capture_output=True, text=True, cwd=project_root(),
                       env={**os.environ}, timeout=60)
    assert r.returncode == 2
    assert "carries a credential" in r.stderr and "--broker-password-env" in r.stderr
    assert "hunter22" not in r.stderr + r.stdout


def test_a_token_guards_the_receiver_and_is_required_when_a_template_may_apply(private_redis, registry, tmp_path,
                                                                                monkeypatch):
    folder = tmp_path / "apply"
    folder.mkdir()
    (folder / "api.yaml").write_text("service: api\nbase: parameters/lab.yaml\nremediation: {apply: true, "
                                     "approved_by: sre-oncall, change_ticket: CHG-20417}\n")
    applying = load_templates(folder)
    cfg = AutomationConfig(broker=private_redis.url, token_env="RUNBOOK_SECRET_RECEIVER_TOKEN")
    with pytest.raises(TemplateError, match="may apply changes and the receiver has no token"):
        Dispatcher(replace(cfg, token_env=None), registry, Queue(), applying)
    monkeypatch.setenv("RUNBOOK_SECRET_RECEIVER_TOKEN", "tok-0c5e11a9f3b2")
    queue = Queue()
    client = TestClient(create_app(Dispatcher(cfg, registry, queue, applying)))
    assert client.post("/alerts", json=notification("api")).status_code == 401
    assert client.post("/alerts", json=notification("api"), headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/jobs").status_code == 401 and queue.sent == []
    ok = client.post("/alerts", json=notification("api"), headers={"Authorization": "Bearer tok-0c5e11a9f3b2"})
    assert ok.status_code == 200 and ok.json()["actions"][0]["action"] == "enqueued"
    assert registry.get(queue.sent[0][1])["apply"] is True
