"""Cache warming on a real Redis: the ranked keys are filled, the concurrency limit holds, a held lock
is respected, and Redis stopping mid-warm ends in a clear error with a consistent audit log."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import redis

from runbook_lib.actions import ActionFailed, execute
from runbook_lib.actions import cache_warm as w
from runbook_lib.actions.action_errors import CacheWarmError
from runbook_lib.actions.cache_warm import CacheWarm
from tests.support.actions_support import audit_lines, make_settings, steps
from tests.support.cache_support import FakeApp

pytestmark = pytest.mark.slow


def _volatile_keyspace(url: str, pages: int) -> list[str]:
    """Lab-style single-use keys: page p has pages - p + 1 versions (page 1 is the most requested)."""
    r = redis.Redis.from_url(url, socket_timeout=10)
    logical = []
    for p in range(1, pages + 1):
        logical.append(f"api:users::limit=25&page={p}")
        for v in range(pages - p + 1):
            r.set(f"api:users::limit=25&page={p}:{17_900_000_000 + v * 13}", "old", ex=600)
    r.close()
    return logical


def test_rank_keys_and_lab_paths():
    keys = pd.DataFrame({"key": ["api:users::page=2:17900000001", "api:users::page=2:17900000002",
                                 "api:users::page=1:17900000003", "api:products::category=a&limit=20:17900000004"]})
    ranked = w.rank_keys(keys, 2, {"/api/products": 50.0}, w.lab_request_route)
    assert [i.key for i in ranked] == ["api:users::page=2", "api:products::category=a&limit=20"]
    assert w.lab_path("api:users::limit=25&page=1") == "/api/users?limit=25&page=1"
    assert w.lab_path("api:user_orders:42:limit=20") == "/api/users/42/orders?limit=20"
    assert w.lab_path("api:dashboard::") == "/api/dashboard/stats"
    assert w.lab_path("session:abc") is None and w.lab_path("api:user_orders:x:") is None


def test_warm_fills_the_ranked_keys_within_the_concurrency_limit(private_redis):
    logical = _volatile_keyspace(private_redis.url, 10)
    r = redis.Redis.from_url(private_redis.url, socket_timeout=10, decode_responses=True)
    r.set(logical[1], "cached by the app", ex=100)          # page 2: present -> skipped, never overwritten
    r.set(w.LOCK_PREFIX + logical[2], "someone-else", px=60_000)  # page 3: being filled elsewhere
    limit, in_flight, seen = 3, [0], []
    lock = threading.Lock()
    barrier = threading.Barrier(limit, timeout=10)  # the loaders run exactly `limit` at a time

    def loader(key):
        with lock:
            in_flight[0] += 1
            seen.append(in_flight[0])
        try:
            barrier.wait()
            return f"fresh:{key}"
        finally:
            with lock:
                in_flight[0] -= 1

    from runbook_lib.sources.redis_snapshot import key_sample

    items = w.rank_keys(key_sample(r, 1000), 8)
    assert [i.key for i in items] == logical[:8]
    s = w.warm(r, items, loader, ttl_s=120, concurrency=limit, progress=False)
    assert sorted(s.warmed) == sorted([logical[0], *logical[3:8]])
    assert s.skipped["present"] == [logical[1]] and s.skipped["locked"] == [logical[2]]
    assert not s.failed and s.not_attempted == 0
    assert max(seen) == limit and s.max_in_flight <= limit
    for k in s.warmed:
        assert r.get(k) == f"fresh:{k}" and 120 * (1 - w.TTL_JITTER) - 1 <= r.ttl(k) <= 120
    assert r.get(logical[1]) == "cached by the app"
    assert sorted(r.scan_iter(w.LOCK_PREFIX + "*")) == [w.LOCK_PREFIX + logical[2]]  # ours released
    assert "warmed 6 of 8 keys" in s.line()
    # a second run warms nothing: every key is there
    again = w.warm(r, items, loader, ttl_s=120, concurrency=limit, progress=False)
    assert not again.warmed and len(again.skipped["present"]) == 7
    r.close()


def test_loader_failures_fail_their_keys_only(private_redis):
    r = redis.Redis.from_url(private_redis.url, socket_timeout=10)

    def loader(key):
        if key.endswith("3"):
            raise RuntimeError("GET /x answered 500")
        return None if key.endswith("4") else b"v"

    s = w.warm(r, [f"k{i}" for i in range(6)], loader, ttl_s=10, concurrency=2, progress=False)
    assert len(s.warmed) == 4 and s.skipped["no value"] == ["k4"]
    assert s.failed == [{"key": "k3", "error": "RuntimeError: GET /x answered 500"}]
    with pytest.raises(CacheWarmError, match="concurrency must be"):
        w.warm(r, ["a"], loader, ttl_s=10, concurrency=0)
    r.close()


def test_cache_warm_action_fills_keys_from_the_app(private_redis, tmp_path):
    logical = _volatile_keyspace(private_redis.url, 12)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with FakeApp() as app:
        action = CacheWarm(top_n=10, concurrency=4, ttl_s=60, source_url=app.url)
        [o] = execute([action], make_settings(redis_url=private_redis.url, apply=True), run_dir)
    assert o.status == "applied" and o.verified
    assert sorted(app.requests) == sorted(w.lab_path(k) for k in logical[:10])
    assert app.max_in_flight <= 4
    r = redis.Redis.from_url(private_redis.url, decode_responses=True)
    assert r.get(logical[0]) == '{"path": "/api/users?limit=25&page=1"}' and r.get(logical[10]) is None
    r.close()
    assert action.summary["warmed"] == 10
    assert steps(run_dir) == ["planned", "approved", "applying", "applied", "verified"]


def test_redis_stopping_mid_warm_is_a_clear_error_and_the_audit_log_stays_consistent(private_redis, tmp_path):
    _volatile_keyspace(private_redis.url, 30)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stopped = threading.Event()

    def stop_redis_at_tenth(n, path):
        if n == 10:
            private_redis.stop()  # by PID, waits until it exited
            stopped.set()
        elif n > 10:  # later fills wait for the stop (the fake app answers faster than Redis shuts down)
            assert stopped.wait(30)

    with FakeApp(on_request=stop_redis_at_tenth) as app:
        action = CacheWarm(top_n=30, concurrency=3, ttl_s=60, source_url=app.url)
        with pytest.raises(ActionFailed, match="stopped answering during warming") as err:
            execute([action], make_settings(redis_url=private_redis.url, apply=True), run_dir)
    assert stopped.is_set() and len(app.requests) <= 10 + 3 - 1  # the 10th and those in flight with it
    msg = str(err.value)
    assert "cache-warm-top-30 failed at apply" in msg and "warmed " in msg and "not attempted" in msg
    lines = audit_lines(run_dir)  # strict: every line parses
    assert [x["step"] for x in lines] == ["planned", "approved", "applying", "failed"]
    failed = lines[-1]
    assert failed["phase"] == "apply" and "stopped answering" in failed["error"]
    s = action.summary
    assert s["error"] and s["warmed"] + s["failed"] + s["not_attempted"] + sum(s["skipped"].values()) <= 30
    assert s["warmed"] < 30 and s["not_attempted"] > 0


def test_warmed_keys_get_ttl_jitter_so_they_do_not_expire_together(private_redis):
    from runbook_lib.diagnose.cache_keys import expiry_clusters
    from runbook_lib.sources.redis_snapshot import key_sample

    r = redis.Redis.from_url(private_redis.url, socket_timeout=10)
    s = w.warm(r, [f"k{i}" for i in range(200)], lambda k: b"v", ttl_s=1000, concurrency=8, progress=False)
    assert len(s.warmed) == 200
    keys = key_sample(r, 1000)
    assert keys["ttl_s"].between(1000 * (1 - w.TTL_JITTER) - 2, 1000).all() and keys["ttl_s"].nunique() > 20
    assert keys["ttl_s"].min() < 700 and keys["ttl_s"].max() > 900  # spread over half the TTL, not a tenth
    assert not expiry_clusters(keys)["clustered"]
    no_jitter = w.warm(r, [f"j{i}" for i in range(200)], lambda k: b"v", ttl_s=2000, progress=False, jitter=0)
    assert len(no_jitter.warmed) == 200 and expiry_clusters(key_sample(r, 1000))["clustered"]
    r.close()


def test_a_service_that_is_not_the_lab_is_warmed_through_the_routes_in_its_parameters(private_redis, tmp_path):
    """Keys of another scheme (shop:user:<id>:<request time>) are filled by calling the service's own
    endpoints, mapped by ``app.warm_routes``; keys no route maps are left alone."""
    r = redis.Redis.from_url(private_redis.url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for uid, versions in ((7, 6), (42, 4), (99, 2)):  # hot users have more single-use versions in the sample
        for v in range(versions):
            pipe.set(f"shop:user:{uid}:{1764500000 + v}", "old", ex=600)
    pipe.set("shop:cart:7:1764500000", "old", ex=600)  # a family with no route: never fetched
    pipe.execute()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    routes = {"shop:user:{id}": "/v2/users/{id}/profile"}
    with FakeApp() as app:
        settings = make_settings(redis_url=private_redis.url, apply=True)
        action = CacheWarm(top_n=2, concurrency=2, ttl_s=60, source_url=app.url, routes=routes)
        assert "shop:user:{id} -> /v2/users/{id}/profile" in action.plan().commands[1]
        [o] = execute([action], settings, run_dir)
    assert o.status == "applied" and o.verified, o.message
    assert sorted(app.requests) == ["/v2/users/42/profile", "/v2/users/7/profile"]
    assert r.get("shop:user:7") == '{"path": "/v2/users/7/profile"}' and r.get("shop:user:99") is None
    assert r.get("shop:cart:7") is None
    r.close()


def test_routed_path_maps_whole_keys_only():
    path_of = w.routed_path({"shop:user:{id}": "/users/{id}", "shop:item:{sku}:{lang}": "/items/{sku}?lang={lang}"})
    assert path_of("shop:user:42") == "/users/42"
    assert path_of("shop:item:A 1:de") == "/items/A%201?lang=de"
    assert path_of("shop:user:42:extra") is None and path_of("other:user:1") is None
