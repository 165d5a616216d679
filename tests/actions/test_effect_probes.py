"""The verify loop by direct measurement, on real servers with real traffic: a helpful index is measured on
its target statement, a harmful Redis change is measured worse and undone by the runbook itself, and the
verdict never rests on pre-change data or on too little of it."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime

import psycopg
import pytest
import redis

from runbook_lib.actions import CreateIndex, RedisConfigSet, execute
from runbook_lib.actions.effect_verdict import Measurement, verdict, wilson
from tests.support import actions_support
from tests.support.actions_support import audit_lines, make_settings, redis_config

pg_dsn = actions_support.pg_dsn  # the fixture: a fresh database with an orders table per test

WINDOW_S = 3.0


def _m(value, low, high, events=1000, enough=True) -> Measurement:
    return Measurement("x", value, low, high, events, "2026-12-01T00:00:00", "2026-12-01T00:00:03", 5, enough)


def test_verdict_needs_enough_data_and_a_difference_larger_than_the_noise():
    assert verdict(_m(0.9, 0.88, 0.92), _m(0.5, 0.47, 0.53), higher_is_worse=False) == "worse"
    assert verdict(_m(10.0, 9, 11), _m(1.0, 0.8, 1.2), higher_is_worse=True) == "helped"
    assert verdict(_m(10.0, 6, 14), _m(8.0, 5, 11), higher_is_worse=True) == "no effect"  # within the noise
    assert verdict(_m(10.0, 9.9, 10.1), _m(9.5, 9.4, 9.6), higher_is_worse=True) == "no effect"  # 5 %: too small
    assert verdict(_m(10.0, 9, 11, 5, False), _m(1.0, 0.8, 1.2), higher_is_worse=True) == "inconclusive"
    assert verdict(None, _m(1.0, 0.8, 1.2), higher_is_worse=True) == "inconclusive"
    low, high = wilson(900, 1000)
    assert 0.87 < low < 0.9 < high < 0.92


class Traffic:
    """A background client until stopped: ``step(conn_or_client, rng)`` once per iteration."""

    def __init__(self, make, step):
        self.make, self.step, self.stop = make, step, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.errors: list[str] = []

    def _loop(self):
        rng = random.Random(11)
        with self.make() as c:
            while not self.stop.is_set():
                try:
                    self.step(c, rng)
                except Exception as e:  # noqa: BLE001 - the change under test may break a request or two
                    self.errors.append(type(e).__name__)
                    time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)


def test_a_harmful_redis_change_is_measured_worse_and_rolled_back_by_the_runbook(private_redis, tmp_path):
    url = private_redis.url
    with redis.Redis.from_url(url) as r:
        pipe = r.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"page:{i}", "x" * 2000)
        pipe.execute()
    prior = redis_config(url)

    def step(c, rng):  # cache-aside reads over the whole working set (~6 MB)
        k = f"page:{rng.randrange(3000)}"
        if c.get(k) is None:
            c.set(k, "x" * 2000)

    harmful = RedisConfigSet({"maxmemory": "1mb", "maxmemory-policy": "allkeys-lru"})
    settings = make_settings(redis_url=url, apply=True, auto_rollback=True)
    with Traffic(lambda: redis.Redis.from_url(url), step):
        [o] = execute([harmful], settings, tmp_path, probe_window_s=WINDOW_S)
    assert o.effect == "worse" and o.rolled_back and o.status == "rolled back", o.message
    assert redis_config(url) == prior  # the server is back to its setting
    lines = audit_lines(tmp_path)
    steps = [ln["step"] for ln in lines]
    assert steps[steps.index("applied"):] == ["applied", "verified", "assessed", "rolling_back", "rolled_back",
                                               "reassessed"]
    applied = next(ln for ln in lines if ln["step"] == "applied")
    assessed = next(ln for ln in lines if ln["step"] == "assessed")
    assert assessed["result"] == "worse" and assessed["auto_rollback"] is True
    # the "after" window holds only post-change data, and both windows say how much data they rest on
    assert datetime.fromisoformat(assessed["after"]["window_start"]) >= datetime.fromisoformat(applied["ts"])
    assert assessed["before"]["enough"] and assessed["after"]["events"] >= 100
    assert assessed["after"]["value"] < assessed["before"]["low"]
    assert next(ln for ln in lines if ln["step"] == "reassessed")["after_rollback"]["events"] > 0


def test_an_index_is_judged_on_its_target_statement(pg_dsn, tmp_path):
    query = "SELECT id, status FROM orders WHERE user_id = %s AND created_at > now() - interval '30 days'"
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        c.execute("INSERT INTO orders (user_id, status) SELECT g % 5000, 'paid' FROM generate_series(1, 200000) g")
        c.execute("ANALYZE orders")
        c.execute(query, (1,))
        text = c.execute("SELECT query FROM pg_stat_statements WHERE query LIKE 'SELECT id, status FROM orders%' "
                         "ORDER BY calls DESC LIMIT 1").fetchone()[0]

    def step(c, rng):
        c.execute(query, (rng.randrange(5000),)).fetchall()

    index = CreateIndex(table="orders", columns=["user_id"], verify_statements=[text])
    settings = make_settings(pg_dsn=pg_dsn, apply=True, auto_rollback=True)
    with Traffic(lambda: psycopg.connect(pg_dsn, autocommit=True), step):
        [o] = execute([index], settings, tmp_path, probe_window_s=WINDOW_S)
    assert o.effect == "helped" and not o.rolled_back, o.message
    assessed = next(ln for ln in audit_lines(tmp_path) if ln["step"] == "assessed")
    assert assessed["measured"].startswith("mean ms per call of 1 target statement")
    assert assessed["after"]["value"] * 2 < assessed["before"]["value"]
    assert assessed["after"]["detail"]["buffers_per_call"] < assessed["before"]["detail"]["buffers_per_call"]
    json.dumps(assessed)  # the audit line is plain JSON


@pytest.mark.parametrize("window_s", [0.5])
def test_a_quiet_window_is_inconclusive_not_a_guess(private_redis, tmp_path, window_s):
    # no traffic at all: nothing to judge the change by
    settings = make_settings(redis_url=private_redis.url, apply=True, auto_rollback=True)
    [o] = execute([RedisConfigSet({"maxmemory": "64mb"})], settings, tmp_path, probe_window_s=window_s)
    assert o.effect == "inconclusive" and not o.rolled_back
    assert redis_config(private_redis.url)["maxmemory"] == str(64 * 2**20)
