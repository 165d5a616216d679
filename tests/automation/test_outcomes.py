"""What a worker makes of a run (retry only failed infrastructure, never a run that began a change), where the
run lands (a folder, an S3 bucket on a moto server) and what the notification says (and never says)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest

from runbook_lib.automation import notify
from runbook_lib.automation.automation_errors import NotifyError, StoreError
from runbook_lib.automation.execution import judge
from runbook_lib.automation.store import LocalStore, S3Store, open_store
from runbook_lib.redaction import register_secret
from runbook_lib.settings import project_root
from tests.support.automation_support import Capture
from tests.support.moto_support import start_moto, stop_moto

FIXTURE_PARAMS = project_root() / "parameters" / "fixtures.yaml"


def run_folder(tmp_path: Path, status: str, audit: list[str] = (), **fields) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"status": status, "pid": 1, "host": "elsewhere", **fields}))
    if audit:
        (d / "audit.jsonl").write_text("".join(json.dumps({"step": s, "action_id": "a"}) + "\n" for s in audit))
    return d


def outcome(tmp_path, rc, run_dir, timed_out=False, log=""):
    (tmp_path / "runbook.log").write_text(log)
    return judge(rc, run_dir, FIXTURE_PARAMS, tmp_path / "runbook.log", 60, timed_out)


@pytest.mark.parametrize("status, error, state", [
    ("failed", "TargetUnreachable: redis://cache:6379/0 did not answer", "retry"),
    ("failed", "DeadKernelError: Kernel died", "retry"),
    ("failed", "ValueError: a bug in a cell", "failed"),
    ("failed", "NoIncidentFound: widen the window", "failed"),
])
def test_a_failed_run_is_retried_only_for_infrastructure(tmp_path, status, error, state):
    d = run_folder(tmp_path, status, failure={"notebook": "02_root_cause", "cell": "cell 'x' (#4)", "error": error})
    o = outcome(tmp_path, 2, d)
    assert o.state == state
    assert "02_root_cause cell 'x' (#4)" in o.reason and error.split(":")[0] in o.reason


def test_a_run_stopped_from_outside_is_retried_unless_it_began_a_change(tmp_path):
    stopped = {"interruption": {"signal": "SIGTERM", "notebook": "04_remediation", "cell": "cell 'apply' (#7)"}}
    d = run_folder(tmp_path, "interrupted", audit=["planned"], **stopped)
    assert outcome(tmp_path, 130, d).state == "retry"
    (d / "audit.jsonl").write_text(json.dumps({"step": "applying", "action_id": "a"}) + "\n")
    o = outcome(tmp_path, 130, d)
    assert o.state == "failed" and o.changed and "not run again" in o.reason
    assert "04_remediation cell 'apply' (#7)" in o.reason


def test_finished_runs_the_time_limit_and_bad_parameters(tmp_path):
    assert outcome(tmp_path, 0, run_folder(tmp_path, "complete")).state == "done"
    t = outcome(tmp_path, 130, tmp_path / "run", timed_out=True)
    assert t.state == "failed" and "time limit of 60 s" in t.reason
    healthy = tmp_path / "h"
    healthy.mkdir()
    (healthy / "run.json").write_text(json.dumps({"status": "healthy"}))
    assert judge(3, healthy, FIXTURE_PARAMS, tmp_path / "runbook.log", 60, False).state == "done"
    # no run.json: the product's preflight says what is wrong, by its typed error
    bad = tmp_path / "bad.yaml"
    bad.write_text(FIXTURE_PARAMS.read_text().replace("fixtures/d2-latency", "fixtures/nope"))
    o = judge(2, tmp_path / "none", bad, tmp_path / "runbook.log", 60, False)
    assert o.state == "failed" and o.status is None and "did not start" in o.reason
    unreachable = tmp_path / "prom.yaml"
    unreachable.write_text(
        "incident: {id: x, title: t}\nmode: live\nsource: {kind: prometheus, url: 'http://127.0.0.1:9', timeout_s: 2,"
        " queries: {latency_p95_ms: up, request_rate: up}}\nsignals: [latency_p95_ms, request_rate]\n"
        "window: {last: 1h}\n")
    o = judge(2, tmp_path / "none", unreachable, tmp_path / "runbook.log", 60, False)
    assert o.state == "retry", o.reason


def stored_run(tmp_path: Path) -> Path:
    d = tmp_path / "done"
    (d / "figures").mkdir(parents=True)
    (d / "run.json").write_text('{"status": "complete"}')
    (d / "figures" / "a.json").write_text("{}")
    (d / "postmortem.html").write_text("<h1>pm</h1>")
    (d / ".run.lock").write_text("")
    return d


def test_local_store_keeps_the_folder_and_links_the_postmortem(tmp_path):
    store = open_store("stored", tmp_path)
    assert isinstance(store, LocalStore) and store.root == tmp_path / "stored"
    store.check()
    s = store.put_run(stored_run(tmp_path), "inc-1/job1")
    assert s.uri == str(tmp_path / "stored" / "inc-1" / "job1")
    assert s.link == (tmp_path / "stored/inc-1/job1/postmortem.html").as_uri()
    assert (tmp_path / "stored/inc-1/job1/figures/a.json").is_file()
    assert not (tmp_path / "stored/inc-1/job1/.run.lock").exists()
    store.put_run(stored_run(tmp_path / "again"), "inc-1/job1")  # idempotent: a redelivered job stores again
    store.put_file("inc-1/job1", "automation.json", b"{}")
    assert store.get_file("inc-1/job1", "automation.json") == b"{}"
    with pytest.raises(StoreError):
        store.put_file("inc-1/nope", "automation.json", b"{}")
    linked = LocalStore(tmp_path / "stored", link_base="https://runs.example/automated/")
    assert linked.link("inc-1/job1", "postmortem.html") == "https://runs.example/automated/inc-1/job1/postmortem.html"


@pytest.mark.slow
def test_s3_store_on_a_moto_server(tmp_path, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    proc, url = start_moto(tmp_path)
    try:
        store = open_store("s3://runbook-runs/automated", tmp_path, endpoint_url=url)
        assert isinstance(store, S3Store)
        with pytest.raises(StoreError, match="runbook-runs"):
            store.check()
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="runbook-runs")
        store.check()
        s = store.put_run(stored_run(tmp_path), "inc-1/job1")
        assert s.uri == "s3://runbook-runs/automated/inc-1/job1/"
        assert s.link == "s3://runbook-runs/automated/inc-1/job1/postmortem.html"
        listed = boto3.client("s3", endpoint_url=url).list_objects_v2(Bucket="runbook-runs")["Contents"]
        assert sorted(o["Key"] for o in listed) == ["automated/inc-1/job1/figures/a.json",
                                                    "automated/inc-1/job1/postmortem.html",
                                                    "automated/inc-1/job1/run.json"]
        head = boto3.client("s3", endpoint_url=url).head_object(Bucket="runbook-runs",
                                                                 Key="automated/inc-1/job1/postmortem.html")
        assert head["ContentType"] == "text/html"
        store.put_file("inc-1/job1", "automation.json", b'{"resolved_at": "x"}')
        assert json.loads(store.get_file("inc-1/job1", "automation.json")) == {"resolved_at": "x"}
        assert store.get_file("inc-1/job1", "nope.json") is None
    finally:
        stop_moto(proc)


FACTS_JOB = {"incident_id": "api-highlatency-20261201t100000z", "apply": False, "attempt": 1,
             "resolved_at": "2026-12-01T10:20:00.000Z",
             "parameters": {"mode": "fixture", "incident": {"title": "api p95 above its SLO"}},
             "alert": {"service": "api", "alertname": "HighLatency", "starts_at": "2026-12-01T10:00:00+00:00",
                       "generator_url": "http://prom:9090/graph?g0.expr=x&token=s3cr3t-gen-token"}}


def test_the_message_states_the_top_root_cause_and_the_link_and_no_secret(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "findings.json").write_text(json.dumps({"hypotheses": [
        {"title": "Hosts are short of CPU", "statement": "no", "disproved": True, "confidence": 0.9},
        {"title": "The database does more work per request", "statement": "Missing index on orders.",
         "disproved": False, "confidence": 1.0, "confidence_label": "high"}]}))
    register_secret("hunter22-pg-password")
    facts = notify.summary(FACTS_JOB, {"mode": "fixture"}, d, "s3://b/api/job/postmortem.html",
                           {"state": "done", "status": "complete", "reason": "run complete",
                            "where": {"error": "hunter22-pg-password"}})
    msg = notify.message(facts)
    text = msg["text"]
    assert msg["blocks"][0]["text"]["text"] == text
    assert "OK: `api-highlatency-20261201t100000z` (api, alert HighLatency since 2026-12-01T10:00:00+00:00)" in text
    assert "run complete, dry run, nothing changed" in text
    assert "Top root cause: *The database does more work per request*: Missing index on orders. " \
           "(confidence high, 100%)" in text
    assert "Hosts are short of CPU" not in text
    assert "Postmortem: s3://b/api/job/postmortem.html" in text and "resolved at 2026-12-01T10:20:00" in text
    assert "s3cr3t-gen-token" not in json.dumps(msg) and "hunter22" not in json.dumps(msg)
    failed = notify.message(notify.summary(FACTS_JOB, {}, tmp_path / "none", None, {
        "state": "failed", "status": "interrupted", "reason": "run interrupted in 02_root_cause cell 'x' (#3)"}))
    assert "FAILED" in failed["text"] and "Why: run interrupted in 02_root_cause" in failed["text"]
    assert "none found" in failed["text"] and "(not exported)" in failed["text"]


def test_post_retries_a_5xx_refuses_a_4xx_and_never_names_the_url():
    for status, attempts in ((503, 3), (404, 1)):
        cap = Capture(status=status)
        url = cap.url("/hooks/T0/B0/xoxb-secret-path-token")
        try:
            with pytest.raises(NotifyError) as err:
                notify.post(url, {"text": "hi"}, attempts=3, timeout=5)
            assert len(cap.bodies) == attempts and cap.bodies[0] == {"text": "hi"}
            assert "xoxb" not in str(err.value) and str(cap.port) not in str(err.value)
        finally:
            cap.close()
    ok = Capture()
    try:
        notify.post(ok.url(), {"text": "hi"})
        assert ok.bodies == [{"text": "hi"}]
    finally:
        ok.close()
    assert os.environ.get("RUNBOOK_SECRET_NOTIFY_URL") is None
