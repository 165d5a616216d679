"""``runbook diagnose cache``: text and JSON reports from a real Redis; bad input ends in one line + hint."""

from __future__ import annotations

import json

import pytest
import redis

from runbook_lib.cli.commands import main
from tests.support.cache_support import PAGES, TOTAL, FakeApp, build_keyspace

pytestmark = pytest.mark.slow

PLANTED = "planted-cache-s3cret"


def test_json_report_with_window_deltas_and_app_metrics(private_redis, capsys, tmp_path):
    build_keyspace(private_redis.url)
    cfg = tmp_path / "app.json"
    cfg.write_text(json.dumps({"cache_ttl_s": 5, "cache_key_scheme": "volatile"}))
    # the app's counters: first scrape (start of window) then second (end): users 30 hits / 10 misses
    steps = [{"users": (100, 50)}, {"users": (130, 60)}]
    with FakeApp(metrics_steps=steps) as app:
        rc = main(["diagnose", "cache", "--redis", private_redis.url, "--window", "0.2", "--json",
                   "--app-metrics", f"{app.url}/metrics", "--app-config", str(cfg), "--sample", "5000"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    r = json.loads(out.out)
    assert 0.2 <= r["window"]["seconds"] < 5  # measured by the server clock (TIME)
    assert r["redis"]["dbsize"] == TOTAL and r["sample"]["keys"] == TOTAL
    assert r["app"]["hits"] == 30 and r["app"]["misses"] == 10 and r["app"]["hit_ratio"] == 0.75
    users = next(p for p in r["key_design"] if p["pattern"].startswith("api:users"))
    assert users["miss_share_source"] == "app metrics by route" and users["logical_keys"] == PAGES
    assert r["recommendations"]["ttl"]["current_s"] == 5
    assert {"kind": "app.config", "inputs": {"cache_key_scheme": "normalized"}} in r["recommendations"]["actions"]


def test_text_report_and_password_from_env(private_redis, capsys, monkeypatch):
    build_keyspace(private_redis.url)
    with redis.Redis.from_url(private_redis.url) as r:
        r.config_set("requirepass", PLANTED)
    monkeypatch.setenv("RUNBOOK_SECRET_CACHE", PLANTED)
    rc = main(["diagnose", "cache", "--redis", private_redis.url, "--window", "0", "--password-env",
               "RUNBOOK_SECRET_CACHE"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "cache diagnosis of redis://127.0.0.1:" in out.out and "hit ratio n/a (0 hits / 0 misses)" in out.out
    assert "! expiry clustering" in out.out and "recommendations" in out.out
    assert PLANTED not in out.out + out.err


@pytest.mark.parametrize("argv,message", [
    (["--redis", "redis://:hunter2-secret@127.0.0.1:6390/0"], "carries a password"),
    (["--redis", "redis://127.0.0.1:{closed}/0"], "cannot reach redis://127.0.0.1:"),
    (["--redis", "redis://127.0.0.1:{closed}/0", "--window", "-1"], "--window must be in"),
    (["--redis", "redis://127.0.0.1:{closed}/0", "--password-env", "RUNBOOK_SECRET_NOT_SET"], "is not set"),
])
def test_bad_input_is_one_line_with_a_hint(argv, message, capsys):
    from runbook_lib.lab.servers import free_port

    argv = [a.replace("{closed}", str(free_port())) for a in argv]
    assert main(["diagnose", "cache", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "\nhint: " in err
    assert "hunter2-secret" not in err


def test_app_ratio_and_route_requests_from_prometheus():
    from urllib.parse import parse_qs, urlsplit

    from runbook_lib.sources.redis_snapshot import app_cache_from_prometheus, route_requests_from_prometheus

    queries = []

    def prom(path):
        q = parse_qs(urlsplit(path).query)["query"][0]
        queries.append(q)
        value = {"cache_hits": "90", "cache_misses": "10", "http_request": "300"}[
            next(k for k in ("cache_hits", "cache_misses", "http_request") if k in q)]
        return {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"route": "users"}, "value": [0, value]}]}}

    with FakeApp(answer=prom) as app:
        d = app_cache_from_prometheus(app.url, 30, '{job="lab"}')
        rr = route_requests_from_prometheus(app.url, 30)
    assert d["hit_ratio"] == 0.9 and d["by_route"]["users"]["misses"] == 10
    assert rr == {"users": 300.0}
    assert queries[0] == 'sum by (route) (increase(cache_hits_total{job="lab"}[30s]))'
