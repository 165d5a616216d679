"""The lab backend's resilience knobs against a real PostgreSQL and Redis: one replica in-process (its Starlette
app over httpx's ASGI transport), a pool of one connection, and a "slow database": the test holds an ACCESS
EXCLUSIVE lock on products, so the request that got the connection waits on the lock and every other cache miss
queues on the pool. Without the breaker they answer 503 after the pool timeout; with it open they fail fast or
get the stale copy. The rate limit runs on an injected clock: 429 beyond the rate, none at it."""

from __future__ import annotations

import asyncio
import json
from time import perf_counter

import httpx
import psycopg
import pytest
import redis
from prometheus_client import REGISTRY

from runbook_lib.lab import backend as lab_backend
from runbook_lib.lab.config import write_config
from runbook_lib.lab.seed import admin_dsn, seed
from runbook_lib.model import AppKnobs

pytestmark = pytest.mark.slow

DB = "resilience_test"
POOL_TIMEOUT_S = 1.0
WAIT_S = 10.0  # bound on every wait below
KNOBS = dict(cache_ttl_s=300.0, db_pool_max=1, db_pool_timeout_s=POOL_TIMEOUT_S)


@pytest.fixture(scope="module")
def dsn(private_postgres):
    with psycopg.connect(admin_dsn(private_postgres.dsn()), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")
    url = private_postgres.dsn(DB)
    seed(url, scale=0.01)  # 1k users, 10k orders, 500 products: well under a second
    return url


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _until(cond, what: str) -> None:
    """Poll ``cond`` every 10 ms for at most WAIT_S."""
    deadline = perf_counter() + WAIT_S
    while not cond():
        if perf_counter() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _with_backend(dsn, redis_url, tmp_path, knobs: dict, body, clock=None):
    """Run ``body(client, backend)`` against a started replica with these knobs; always stopped."""
    cfg = tmp_path / "config.json"
    write_config(cfg, AppKnobs(**{**KNOBS, **knobs}))
    b = lab_backend.Backend(dsn, redis_url, str(cfg), 0, **({"clock": clock} if clock else {}))
    await b.start()
    try:
        transport = httpx.ASGITransport(app=lab_backend.build_app(b))
        async with httpx.AsyncClient(transport=transport, base_url="http://lab", timeout=WAIT_S) as client:
            return await body(client, b)
    finally:
        await b.stop()


async def _timed(client, path):
    t0 = perf_counter()
    r = await client.get(path)
    return r, perf_counter() - t0


async def _holding_the_pool(dsn, b, client, run):
    """Lock products, let one request take the only pool connection and block on the lock, run ``run()``,
    release the lock; returns run's result and the blocked request's response."""
    lock = await psycopg.AsyncConnection.connect(dsn)
    try:
        await lock.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")  # opens a transaction: held until rollback
        blocked = asyncio.create_task(client.get("/api/products?category=cat-01"))
        await _until(lambda: b.pool.get_stats().get("pool_available", 0) == 0 and
                     b.pool.get_stats().get("requests_waiting", 0) == 0 and not blocked.done(),
                     "the first request to hold the pool's only connection")
        out = await run()
    finally:
        await lock.rollback()
        await lock.close()
    first = await asyncio.wait_for(blocked, WAIT_S)
    return out, first


def test_without_the_breaker_misses_queue_on_the_pool_and_fail_after_its_timeout(dsn, private_redis, tmp_path):
    async def body(client, b):
        async def misses():
            return await asyncio.gather(*(_timed(client, f"/api/products?category=cat-{i:02d}") for i in (2, 3, 4)))

        out, first = await _holding_the_pool(dsn, b, client, misses)
        assert first.status_code == 200  # the lock released: the blocked request finishes normally
        return out

    out = asyncio.run(_with_backend(dsn, private_redis.url, tmp_path, {}, body))
    for r, seconds in out:
        assert r.status_code == 503 and "X-Breaker" not in r.headers
        assert seconds >= POOL_TIMEOUT_S * 0.9  # each waited the whole pool timeout
    # the breaker is off: no stale copies are written (the cache holds what it always did)
    assert redis.Redis.from_url(private_redis.url).keys("stale:*") == []
    assert metric("lab_breaker_state", state="off") == 1


def test_with_the_breaker_open_misses_fail_fast_or_serve_the_stale_copy(dsn, private_redis, tmp_path):
    knobs = dict(breaker_error_ratio=0.5, breaker_window_s=60.0, breaker_min_requests=2, breaker_open_s=300.0)
    r_cache = redis.Redis.from_url(private_redis.url)
    opens, stale0 = metric("lab_breaker_opens_total"), metric("lab_stale_serves_total", route="products")
    fast0 = metric("lab_breaker_fail_fast_total", route="products")

    async def body(client, b):
        warm = await client.get("/api/products?category=cat-09")
        assert warm.status_code == 200 and r_cache.ttl("stale:api:products::category=cat-09") > 300
        r_cache.delete("api:products::category=cat-09")  # its fresh copy expires; the stale one stays

        async def trip_then_retry():
            tripped = await asyncio.gather(*(_timed(client, f"/api/products?category=cat-{i:02d}") for i in (2, 3)))
            assert b.breaker.state == "open"
            fast = [await _timed(client, f"/api/products?category=cat-{i:02d}") for i in (4, 5, 6)]
            return tripped, fast, await _timed(client, "/api/products?category=cat-09")

        (tripped, fast, stale), first = await _holding_the_pool(dsn, b, client, trip_then_retry)
        # the request that held the connection was let through before the breaker opened: it finishes
        assert first.status_code == 200
        return warm, tripped, fast, stale

    warm, tripped, fast, (stale, stale_s) = asyncio.run(_with_backend(dsn, private_redis.url, tmp_path, knobs, body))
    for r, seconds in tripped:  # what opened it: two pool timeouts
        assert r.status_code == 503 and seconds >= POOL_TIMEOUT_S * 0.9
    for r, seconds in fast:  # open, no stale copy: 503 at once instead of a second in the pool's queue
        assert r.status_code == 503 and r.headers["X-Breaker"] == "open"
        assert seconds < POOL_TIMEOUT_S / 5
    assert stale.status_code == 200 and stale.headers["X-Cache"] == "stale" and stale_s < POOL_TIMEOUT_S / 5
    assert json.loads(stale.content) == json.loads(warm.content)
    assert metric("lab_breaker_opens_total") == opens + 1
    assert metric("lab_stale_serves_total", route="products") == stale0 + 1
    assert metric("lab_breaker_fail_fast_total", route="products") == fast0 + 3
    assert metric("lab_breaker_state", state="open") == 1 and metric("lab_breaker_state", state="closed") == 0


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_rate_limit_answers_429_beyond_the_rate_and_none_under_it(dsn, private_redis, tmp_path):
    clock = Clock()
    rate, burst = 5.0, 3
    route = "/api/products"

    def count(status: str) -> float:
        return metric("http_request_duration_seconds_count", method="GET", route=route, status=status)

    before = {s: count(s) for s in ("200", "429")}

    async def body(client, b):
        under = []
        for _ in range(20):  # one request every 0.25 s of the clock: under 5/s
            under.append((await client.get(f"{route}?category=cat-01")).status_code)
            clock.t += 0.25
        clock.t += 10  # the bucket refills to its burst
        over = [await client.get(f"{route}?category=cat-01") for _ in range(burst + 4)]  # all at one instant
        return under, over

    under, over = asyncio.run(_with_backend(dsn, private_redis.url, tmp_path,
                                            dict(rate_limit_rps=rate, rate_limit_burst=burst), body, clock))
    assert under == [200] * 20
    assert [r.status_code for r in over] == [200] * burst + [429] * 4
    assert all(r.headers["Retry-After"] == "1" for r in over[burst:])  # 1/5 s to the next token, rounded up
    # 429 is its own status in the request histogram: outside the error ratio's status=~"5.."
    assert count("429") == before["429"] + 4 and count("200") == before["200"] + 20 + burst
    assert metric("lab_rate_limited_total", route=route) >= 4
