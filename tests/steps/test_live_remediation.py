"""Live mode end to end for 04's plan: parameters in ``live`` mode (approvals given) pointing at servers the
test starts (PostgreSQL, Redis, an HTTP admin endpoint), the plan rows 03 writes, built into executors from the
parameters alone, applied for real, then rolled back exactly. A live dry run shows only real commands."""

from __future__ import annotations

import json

import psycopg
import redis
import yaml

from runbook_lib.actions import execute, rollback_run
from runbook_lib.settings import load_settings
from runbook_lib.steps import remediation
from tests.support import actions_support
from tests.support.actions_support import AdminApp, assert_no_secret, pg_indexes

pg_dsn = actions_support.pg_dsn  # the fixture: a fresh database per test

TOKEN = "live-admin-token-5d1e"
PLAN = {"actions": [
    {"id": "app-config-cache_key_scheme-cache_ttl_s", "phase": "immediate", "title": "keys and TTL",
     "kind": "app.config", "inputs": {"cache_key_scheme": "normalized", "cache_ttl_s": 300}, "reason": "r"},
    {"id": "redis-config-maxmemory", "phase": "immediate", "title": "memory", "kind": "redis.config_set",
     "inputs": {"maxmemory": "64mb"}, "reason": "r"},
    {"id": "pg-index-orders-user_id", "phase": "short-term", "title": "index", "kind": "postgres.create_index",
     "inputs": {"table": "orders", "columns": ["user_id"]}, "reason": "r"},
]}


def _parameters(tmp_path, dsn: str, redis_url: str, admin_url: str, apply: bool):
    p = tmp_path / f"live-{apply}.yaml"
    p.write_text(yaml.safe_dump({
        "incident": {"id": "live-test", "title": "live mode against servers the test started"},
        "mode": "live",
        # not read here (04's executors only): the live parameters' shape, as parameters/live.example.yaml
        "source": {"kind": "prometheus", "url": "http://127.0.0.1:9",
                   "queries": {"latency_p95_ms": "p95", "request_rate": "rate"}},
        "signals": ["latency_p95_ms", "request_rate"],
        "postgres": {"dsn": dsn}, "redis": {"url": redis_url},
        "app": {"admin_url": admin_url, "admin_token": {"env": "RUNBOOK_TEST_LIVE_TOKEN"}},
        "remediation": {"apply": apply, **({"approved_by": "Dana Ortiz (SRE on call)", "change_ticket": "CHG-20462"}
                                           if apply else {})},
    }))
    return load_settings(p)


def test_live_plan_applies_for_real_and_rolls_back_exactly(tmp_path, pg_dsn, private_redis, monkeypatch):
    monkeypatch.setenv("RUNBOOK_TEST_LIVE_TOKEN", TOKEN)
    r = redis.Redis.from_url(private_redis.url, decode_responses=True)
    before_redis = r.config_get("maxmemory")
    before_index = pg_indexes(pg_dsn)
    knobs = {"cache_ttl_s": 5, "cache_key_scheme": "volatile", "db_pool_max": 20}
    with AdminApp(knobs, TOKEN) as app:
        # the dry run first: real commands only, nothing about the lab
        dry = remediation.build(PLAN, _parameters(tmp_path, pg_dsn, private_redis.url, app.url, apply=False))
        commands = remediation.plan_frame(dry)["commands"].str.cat(sep="\n")
        assert "runbook lab" not in commands and "/tmp/runbook-lab" not in commands
        assert "curl -fsS -X PATCH" in commands and app.url in commands
        assert "CONFIG SET maxmemory 64mb" in commands and "CREATE INDEX CONCURRENTLY" in commands
        settings = _parameters(tmp_path, pg_dsn, private_redis.url, app.url, apply=True)
        entries = remediation.build(PLAN, settings)
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        outcomes = execute([e.executor for e in entries], settings, run_dir)
        assert [o.status for o in outcomes] == ["applied"] * 3, [o.message for o in outcomes]
        assert app.knobs["cache_ttl_s"] == 300 and app.knobs["cache_key_scheme"] == "normalized"
        assert r.config_get("maxmemory") == {"maxmemory": str(64 * 2**20)}
        assert len(pg_indexes(pg_dsn)) == len(before_index) + 1
        undone = rollback_run(run_dir, apply=True, settings=settings)
        assert sorted(o.status for o in undone) == ["rolled back"] * 3
        assert app.knobs == knobs
    assert r.config_get("maxmemory") == before_redis and pg_indexes(pg_dsn) == before_index
    r.close()
    assert_no_secret(run_dir, TOKEN)
    with psycopg.connect(pg_dsn) as c:  # the database is whole: the rollback dropped only the new index
        assert c.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
    audit = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert {a["action_id"] for a in audit} == {a["id"] for a in PLAN["actions"]}  # one id, plan to audit
