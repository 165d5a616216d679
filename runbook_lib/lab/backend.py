"""One replica of the lab backend: a Starlette app served by uvicorn on a socket shared by all replicas.

Endpoints (the seed's backend)::

    GET /api/users?page=&limit=          users with their recent orders (N+1 or one query: orders_query)
    GET /api/users/{id}/orders?limit=    one user's orders of the last 30 days
    GET /api/products?category=&limit=   active products of a category, most popular first
    GET /api/dashboard/stats             orders and revenue of the last day, top categories
    GET /healthz                         liveness (no database)
    GET /metrics                         this replica's metrics (Prometheus scrapes --metrics-port instead)

Every /api response goes through Redis: the key follows ``cache_key_scheme`` ("normalized": route and
sorted query; "volatile": plus the request timestamp, so it is rarely reused) with ``cache_ttl_s``.
A request holds one pool connection for all its queries; when none frees up within
``db_pool_timeout_s`` the request fails with 503 (the pool exhaustion of the seed incident).
Knobs come from the config file, re-read when its mtime changes (``config.ConfigWatcher``).

Resilience knobs (both off by default, ``runbook_lib.lab.resilience``): with ``rate_limit_rps`` > 0 each
replica admits that many /api requests per second (bursts of ``rate_limit_burst``) and answers the rest 429
with Retry-After (status "429" in the request histogram: not a 5xx, outside the error ratio). With
``breaker_error_ratio`` > 0 a circuit breaker guards the pool: cache misses that fail on the pool or the
database open it; while open, a miss does not queue on the pool: it gets the stale copy (``stale:`` + the key
without its volatile part, kept ``STALE_GRACE_S`` longer than the fresh one, written only while a breaker is
configured) with ``X-Cache: stale``, or fails fast with 503 and ``X-Breaker: open``.

Run by the supervisor: ``python -m runbook_lib.lab.backend --fd N --metrics-port P --index I ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import signal
import socket
import time
from collections import defaultdict
from time import perf_counter

import psycopg
import redis.asyncio as aioredis
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runbook_lib.lab.config import POLL_INTERVAL_S, ConfigWatcher, LabConfig
from runbook_lib.lab.resilience import CLOSED, OPEN, STATES, CircuitBreaker, TokenBucket

# Latency buckets from 1 ms to 10 s: the healthy p95 is a few ms, the degraded one hundreds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25,
                   0.4, 0.6, 0.8, 1.0, 1.5, 2.5, 4.0, 6.0, 10.0)
# /api/users shows each user's orders of the last 28 days. Under N+1 without the (user_id, created_at) index
# each listed user walks that slice of orders_created_at_idx (~75k rows). Calibrated on a quiet 2-core machine
# at 18 req/s (session 2, full-size lab, 90 s of degraded load each): 7 days gave p95 ~160 ms and no 5xx,
# 14 days 225 ms / 0%, 21 days 466 ms / 4.1%, 30 days 677 ms / 18.6%; benchmarks/lab_shape.py at 25 days
# 468 ms / 1.9%, at 28 days 580 ms / 8.4% 5xx (the seed's ~10%). The shape depends on what else loads the
# machine: session 1's 7 days gave 10% 5xx only because other test suites were running.
LIST_WINDOW_DAYS = 28
ORDERS_WINDOW_DAYS = 30    # /api/users/{id}/orders: the last 30 days
ORDERS_PER_LISTED_USER = 5
DEFAULT_PAGE_SIZE = 25     # 25 users per page: 26 queries per page under N+1
MAX_LIMIT = 100
VOLATILE_BUCKET_MS = 100   # the "request timestamp" in the volatile key, to 100 ms (deploy v2.14.0)
REDIS_TIMEOUT_S = 1.0      # a slow cache counts as a miss, it never fails the request
POOL_WAIT_THRESHOLD_S = 0.001  # an acquisition slower than this had to wait for a connection
POOL_CLOSE_TIMEOUT_S = 30.0  # an old pool waits this long for its in-flight requests after a resize
PR_SET_PDEATHSIG = 1       # linux/prctl.h: signal this process when its parent dies
# How long past its freshness (cache_ttl_s) a response may still be served stale while the breaker is open.
STALE_GRACE_S = 600
STALE_PREFIX = "stale:"
# Each replica's resources, as a pod's limits would declare them (what kube-state-metrics exports as
# kube_pod_container_resource_limits): lab.yaml's cpu_utilization and memory_utilization are the replicas' own
# usage against these, the app's CPU and memory the write-up calls "normal", not the machine the database shares.
# One core and 512 MiB: a replica uses ~0.1 core and ~100 MB in the incident (benchmarks/lab_shape.py).
REPLICA_CPU_LIMIT_CORES = 1.0
REPLICA_MEMORY_LIMIT_BYTES = 512 * 2**20

REQUESTS = Histogram("http_request_duration_seconds", "HTTP request duration", ["method", "route", "status"],
                     buckets=LATENCY_BUCKETS)
CACHE_HITS = Counter("cache_hits", "cache lookups answered from Redis", ["route"])
CACHE_MISSES = Counter("cache_misses", "cache lookups that went to the database", ["route"])
CACHE_ERRORS = Counter("cache_errors", "Redis errors (counted as misses)", ["op"])
DB_QUERIES = Histogram("db_query_duration_seconds", "SQL statement duration", ["query"], buckets=LATENCY_BUCKETS)
POOL_IN_USE = Gauge("db_pool_in_use", "pool connections checked out")
POOL_MAX = Gauge("db_pool_max", "configured pool maximum")
POOL_WAITING = Gauge("db_pool_waiting", "requests waiting for a pool connection")
POOL_WAITS = Counter("db_pool_waits", "acquisitions that had to wait for a connection")
POOL_TIMEOUTS = Counter("db_pool_timeouts", "acquisitions that timed out (answered 503)")
CACHE_TTL = Gauge("lab_cache_ttl_seconds", "configured cache TTL")
REPLICAS = Gauge("lab_replicas_configured", "configured number of replicas")
CONFIG_INFO = Gauge("lab_config_info", "current knobs as labels", ["cache_key_scheme", "orders_query"])
CONFIG_RELOADS = Counter("lab_config_reloads", "config changes applied without restart")
RATE_LIMIT_RPS = Gauge("lab_rate_limit_rps", "configured rate limit per replica (0 = off)")
RATE_LIMITED = Counter("lab_rate_limited", "requests refused with 429 by the replica's rate limit", ["route"])
BREAKER_ERROR_RATIO = Gauge("lab_breaker_error_ratio", "configured breaker error ratio (0 = off)")
BREAKER_STATE = Gauge("lab_breaker_state", "circuit breaker state: 1 for the current one", ["state"])
BREAKER_OPENS = Counter("lab_breaker_opens", "times the circuit breaker opened")
STALE_SERVES = Counter("lab_stale_serves", "misses answered with the stale copy while the breaker was open",
                       ["route"])
BREAKER_FAIL_FAST = Counter("lab_breaker_fail_fast", "misses answered 503 at once while the breaker was open "
                            "(no stale copy)", ["route"])
BREAKER_STATES = ("off", *STATES)
CPU_LIMIT = Gauge("lab_replica_cpu_limit_cores", "this replica's CPU limit (cores), like a pod's limits.cpu")
MEMORY_LIMIT = Gauge("lab_replica_memory_limit_bytes", "this replica's memory limit, like a pod's limits.memory")
CPU_LIMIT.set(REPLICA_CPU_LIMIT_CORES)
MEMORY_LIMIT.set(REPLICA_MEMORY_LIMIT_BYTES)
CACHED_ROUTES = ("users", "user_orders", "products", "dashboard")
for _route in CACHED_ROUTES:  # export 0 from the start: a ratio over a missing series would be missing
    CACHE_HITS.labels(_route)
    CACHE_MISSES.labels(_route)

SQL = {
    "users_page": "SELECT id, name, email FROM users WHERE id > %s ORDER BY id LIMIT %s",
    "user_recent_orders": (
        "SELECT id, product_id, amount::float8, status, created_at::text FROM orders "
        "WHERE user_id = %s AND created_at >= now() - make_interval(days => %s) "
        "ORDER BY created_at DESC LIMIT %s"),
    "users_recent_orders": (
        "SELECT user_id, id, product_id, amount::float8, status, created_at::text FROM orders "
        "WHERE user_id = ANY(%s) AND created_at >= now() - make_interval(days => %s) "
        "ORDER BY user_id, created_at DESC"),
    "products_by_category": (
        "SELECT id, name, price::float8, popularity FROM products "
        "WHERE category = %s AND status = 'active' ORDER BY popularity DESC LIMIT %s"),
    "orders_last_day": ("SELECT count(*), coalesce(sum(amount), 0)::float8 FROM orders "
                        "WHERE created_at >= now() - interval '1 day'"),
    "users_count": "SELECT count(*) FROM users",
    "top_categories_last_day": (
        "SELECT p.category, sum(o.amount)::float8 AS revenue FROM orders o JOIN products p ON p.id = o.product_id "
        "WHERE o.created_at >= now() - interval '1 day' GROUP BY 1 ORDER BY 2 DESC LIMIT 5"),
}


class PoolExhausted(Exception):
    """No pool connection within db_pool_timeout_s."""


class BadRequest(Exception):
    pass


class BreakerOpen(Exception):
    """The breaker is open and there is no stale copy: fail fast instead of queueing on the pool."""


def _show_breaker_state(state: str) -> None:
    for s in BREAKER_STATES:
        BREAKER_STATE.labels(s).set(1 if s == state else 0)


def _breaker_changed(old: str, new: str) -> None:
    _show_breaker_state(new)
    if new == OPEN:
        BREAKER_OPENS.inc()


class Backend:
    """Pool, cache and knobs of one replica."""

    def __init__(self, dsn: str, redis_url: str, config_path: str, index: int, clock=time.monotonic):
        self.dsn, self.redis_url, self.index = dsn, redis_url, index
        self.watcher = ConfigWatcher(config_path)
        self.clock = clock
        self.limiter: TokenBucket | None = None
        self.breaker: CircuitBreaker | None = None
        self._limit_knobs: tuple | None = None
        self._breaker_knobs: tuple | None = None
        self._configure_resilience()
        self.pool: AsyncConnectionPool | None = None
        self.redis: aioredis.Redis | None = None
        self._task: asyncio.Task | None = None
        self._parent = os.getppid()
        self.server: uvicorn.Server | None = None
        self._closing: set[asyncio.Task] = set()

    @property
    def cfg(self) -> LabConfig:
        return self.watcher.config

    async def start(self) -> None:
        self.pool = await self._open_pool()
        self.redis = aioredis.Redis.from_url(self.redis_url, socket_timeout=REDIS_TIMEOUT_S)
        self._publish_config()
        self._task = asyncio.create_task(self._watch())

    async def _open_pool(self) -> AsyncConnectionPool:
        n = self.cfg.db_pool_max  # a fixed-size pool (min = max), like HikariCP's default
        pool = AsyncConnectionPool(self.dsn, min_size=n, max_size=n, timeout=self.cfg.db_pool_timeout_s,
                                   kwargs={"autocommit": True}, open=False, name=f"replica-{self.index}")
        await pool.open(wait=True, timeout=30)
        return pool

    async def _swap_pool(self) -> None:
        """A new pool of the new size; the old one closes once its in-flight requests return their
        connections. (psycopg_pool's resize() shrinks only after max_idle, 10 min: too late for a fix.)"""
        old, self.pool = self.pool, await self._open_pool()
        task = asyncio.create_task(old.close(timeout=POOL_CLOSE_TIMEOUT_S))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.redis:
            await self.redis.aclose()
        if self.pool:
            await self.pool.close(timeout=5)

    def _configure_resilience(self) -> None:
        """A new bucket / breaker when their knobs changed (0 = off); unchanged knobs keep their state."""
        cfg = self.cfg
        limit = (cfg.rate_limit_rps, cfg.rate_limit_burst)
        if limit != self._limit_knobs:
            self._limit_knobs = limit
            self.limiter = TokenBucket(*limit, clock=self.clock) if cfg.rate_limit_rps > 0 else None
        breaker = (cfg.breaker_error_ratio, cfg.breaker_window_s, cfg.breaker_min_requests, cfg.breaker_open_s)
        if breaker != self._breaker_knobs:
            self._breaker_knobs = breaker
            self.breaker = (CircuitBreaker(*breaker, clock=self.clock, on_change=_breaker_changed)
                            if cfg.breaker_error_ratio > 0 else None)
            _show_breaker_state(CLOSED if self.breaker else "off")

    def _publish_config(self) -> None:
        cfg = self.cfg
        RATE_LIMIT_RPS.set(cfg.rate_limit_rps)
        BREAKER_ERROR_RATIO.set(cfg.breaker_error_ratio)
        POOL_MAX.set(cfg.db_pool_max)
        CACHE_TTL.set(cfg.cache_ttl_s)
        REPLICAS.set(cfg.replicas)
        CONFIG_INFO.clear()
        CONFIG_INFO.labels(cfg.cache_key_scheme, cfg.orders_query).set(1)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            if os.getppid() != self._parent and self.server is not None:
                self.server.should_exit = True  # the supervisor is gone: do not outlive it
            old = self.cfg
            if self.watcher.poll():
                if self.cfg.db_pool_max != old.db_pool_max:
                    await self._swap_pool()
                self._configure_resilience()
                self._publish_config()
                CONFIG_RELOADS.inc()

    # --- cache ------------------------------------------------------------------------------------

    @staticmethod
    def stable_key(route: str, request: Request) -> str:
        """The request's key without any volatile part: route, path id and sorted query."""
        query = "&".join(f"{k}={v}" for k, v in sorted(request.query_params.items()))
        return f"api:{route}:{request.path_params.get('user_id', '')}:{query}"

    def cache_key(self, route: str, request: Request) -> str:
        key = self.stable_key(route, request)
        if self.cfg.cache_key_scheme == "volatile":
            key += f":{time.time_ns() // 1_000_000 // VOLATILE_BUCKET_MS}"
        return key

    async def cached(self, route: str, request: Request, produce) -> Response:
        key = self.cache_key(route, request)
        raw = await self._cache_get(key)
        if raw is not None:
            CACHE_HITS.labels(route).inc()
            return Response(raw, media_type="application/json")
        CACHE_MISSES.labels(route).inc()
        breaker = self.breaker
        stale_key = STALE_PREFIX + self.stable_key(route, request) if breaker else None
        if breaker and not breaker.allow():
            # open: do not queue on the pool; the last good answer if Redis still has it, else fail fast
            stale = await self._cache_get(stale_key)
            if stale is not None:
                STALE_SERVES.labels(route).inc()
                return Response(stale, media_type="application/json", headers={"X-Cache": "stale"})
            BREAKER_FAIL_FAST.labels(route).inc()
            raise BreakerOpen()
        try:
            body = json.dumps(await produce(), default=str)
        except (PoolExhausted, psycopg.Error):
            if breaker:
                breaker.record(failed=True)
            raise
        except BaseException:  # cancelled (client gone): no outcome, but a half-open trial must be given back
            if breaker:
                breaker.abandon()
            raise
        if breaker:
            breaker.record(failed=False)
        await self._cache_set(key, body, stale_key)
        return Response(body, media_type="application/json")

    async def _cache_get(self, key: str) -> bytes | None:
        try:
            return await self.redis.get(key)
        except Exception:  # noqa: BLE001 - any Redis failure is a miss
            CACHE_ERRORS.labels("get").inc()
            return None

    async def _cache_set(self, key: str, body: str, stale_key: str | None = None) -> None:
        """The fresh copy with cache_ttl_s; with a breaker configured also the stale copy, longer-lived."""
        ttl = max(1, round(self.cfg.cache_ttl_s))
        try:
            if stale_key is None:
                await self.redis.set(key, body, ex=ttl)
                return
            async with self.redis.pipeline(transaction=False) as pipe:  # one round trip for both
                pipe.set(key, body, ex=ttl)
                pipe.set(stale_key, body, ex=ttl + STALE_GRACE_S)
                await pipe.execute()
        except Exception:  # noqa: BLE001
            CACHE_ERRORS.labels("set").inc()

    # --- database ---------------------------------------------------------------------------------

    async def _acquire(self):
        """(context manager, connection) from the current pool; a pool swapped out meanwhile is retried."""
        while True:
            pool = self.pool
            cm = pool.connection(timeout=self.cfg.db_pool_timeout_s)
            try:
                return cm, await cm.__aenter__()
            except PoolClosed:
                if pool is self.pool:
                    raise

    @contextlib.asynccontextmanager
    async def connection(self):
        POOL_WAITING.inc()
        t0 = perf_counter()
        try:
            cm, conn = await self._acquire()
        except PoolTimeout:
            POOL_TIMEOUTS.inc()
            raise PoolExhausted() from None
        finally:
            POOL_WAITING.dec()
        if perf_counter() - t0 > POOL_WAIT_THRESHOLD_S:
            POOL_WAITS.inc()
        POOL_IN_USE.inc()
        try:
            yield conn
        except BaseException as e:
            POOL_IN_USE.dec()
            await cm.__aexit__(type(e), e, e.__traceback__)
            raise
        POOL_IN_USE.dec()
        await cm.__aexit__(None, None, None)


async def query(conn, name: str, *params) -> list[tuple]:
    t0 = perf_counter()
    cur = await conn.execute(SQL[name], params)
    rows = await cur.fetchall()
    DB_QUERIES.labels(name).observe(perf_counter() - t0)
    return rows


def _int_param(request: Request, name: str, default: int, lo: int = 1, hi: int = 10**9) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be in {lo}..{hi}")
    return value


def endpoint(route: str):
    """Time the handler into the histogram; refuse beyond the rate limit with 429; map pool exhaustion and an
    open breaker to 503, database errors to 500."""

    def deco(fn):
        async def handler(request: Request) -> Response:
            t0 = perf_counter()
            b = request.app.state.backend
            wait = b.limiter.take() if b.limiter else 0.0
            try:
                if wait:
                    RATE_LIMITED.labels(route).inc()
                    resp = JSONResponse({"error": "rate limited"}, status_code=429,
                                        headers={"Retry-After": str(max(1, math.ceil(wait)))})
                else:
                    resp = await fn(request, b)
            except BadRequest as e:
                resp = JSONResponse({"error": str(e)}, status_code=400)
            except PoolExhausted:
                resp = JSONResponse({"error": "database pool exhausted"}, status_code=503)
            except BreakerOpen:
                resp = JSONResponse({"error": "circuit breaker open: database pool unavailable"}, status_code=503,
                                    headers={"X-Breaker": "open"})
            except psycopg.Error as e:
                resp = JSONResponse({"error": f"database error: {type(e).__name__}"}, status_code=500)
            REQUESTS.labels(request.method, route, str(resp.status_code)).observe(perf_counter() - t0)
            return resp

        return handler

    return deco


@endpoint("/api/users")
async def users(request: Request, b: Backend) -> Response:
    page = _int_param(request, "page", 1)
    limit = _int_param(request, "limit", DEFAULT_PAGE_SIZE, hi=MAX_LIMIT)

    async def produce():
        async with b.connection() as conn:
            rows = await query(conn, "users_page", (page - 1) * limit, limit)
            ids = [r[0] for r in rows]
            orders = await (_orders_n_plus_one(conn, ids) if b.cfg.orders_query == "n_plus_one"
                            else _orders_one_query(conn, ids))
        return [{"id": r[0], "name": r[1], "email": r[2], "orders": orders.get(r[0], [])} for r in rows]

    return await b.cached("users", request, produce)


def _order(r) -> dict:
    return {"id": r[0], "product_id": r[1], "amount": r[2], "status": r[3], "created_at": r[4]}


async def _orders_n_plus_one(conn, ids: list[int]) -> dict[int, list[dict]]:
    out = {}
    for uid in ids:
        rows = await query(conn, "user_recent_orders", uid, LIST_WINDOW_DAYS, ORDERS_PER_LISTED_USER)
        out[uid] = [_order(r) for r in rows]
    return out


async def _orders_one_query(conn, ids: list[int]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for r in await query(conn, "users_recent_orders", ids, LIST_WINDOW_DAYS):
        if len(out[r[0]]) < ORDERS_PER_LISTED_USER:
            out[r[0]].append(_order(r[1:]))
    return out


@endpoint("/api/users/{id}/orders")
async def user_orders(request: Request, b: Backend) -> Response:
    try:
        uid = int(request.path_params["user_id"])
    except ValueError:
        raise BadRequest("user id must be an integer") from None
    limit = _int_param(request, "limit", 20, hi=MAX_LIMIT)

    async def produce():
        async with b.connection() as conn:
            rows = await query(conn, "user_recent_orders", uid, ORDERS_WINDOW_DAYS, limit)
        return {"user_id": uid, "orders": [_order(r) for r in rows]}

    return await b.cached("user_orders", request, produce)


@endpoint("/api/products")
async def products(request: Request, b: Backend) -> Response:
    category = request.query_params.get("category")
    if not category:
        raise BadRequest("category is required")
    limit = _int_param(request, "limit", 20, hi=MAX_LIMIT)

    async def produce():
        async with b.connection() as conn:
            rows = await query(conn, "products_by_category", category, limit)
        return [{"id": r[0], "name": r[1], "price": r[2], "popularity": r[3]} for r in rows]

    return await b.cached("products", request, produce)


@endpoint("/api/dashboard/stats")
async def dashboard(request: Request, b: Backend) -> Response:
    async def produce():
        async with b.connection() as conn:
            (n_orders, revenue), = await query(conn, "orders_last_day")
            (n_users,), = await query(conn, "users_count")
            top = await query(conn, "top_categories_last_day")
        return {"orders_last_day": n_orders, "revenue_last_day": revenue, "users": n_users,
                "top_categories": [{"category": c, "revenue": r} for c, r in top]}

    return await b.cached("dashboard", request, produce)


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True, "replica": request.app.state.backend.index, "pid": os.getpid()})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def build_app(backend: Backend) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        await backend.start()
        yield
        await backend.stop()

    app = Starlette(routes=[
        Route("/api/users", users), Route("/api/users/{user_id}/orders", user_orders),
        Route("/api/products", products), Route("/api/dashboard/stats", dashboard),
        Route("/healthz", healthz), Route("/metrics", metrics),
    ], lifespan=lifespan)
    app.state.backend = backend
    return app


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one lab backend replica (started by the lab supervisor)")
    p.add_argument("--fd", type=int, required=True, help="listening socket inherited from the supervisor")
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--dsn", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--state", required=True, help="the lab state folder (marks the process as the lab's)")
    args = p.parse_args(argv)
    _die_with_parent()
    sock = socket.socket(fileno=args.fd)
    start_http_server(args.metrics_port, addr="127.0.0.1")
    backend = Backend(args.dsn, args.redis_url, args.config, args.index)
    server = uvicorn.Server(uvicorn.Config(build_app(backend), log_level="warning", access_log=False,
                                           lifespan="on", timeout_graceful_shutdown=5))
    backend.server = server
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
