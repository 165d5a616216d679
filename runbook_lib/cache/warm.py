"""Cache warming: rank the keys real traffic asks for, fill them with a concurrency limit, stampede-safe.

Ranking (``rank_keys``): the key sample's logical keys (``diagnose.cache.logical_key``) by how many
versions of each the sample holds. Under a single-use key scheme every request wrote a new version, so
versions count requests; ties are broken by the route's request count from Prometheus when given
(``collect.route_requests_from_prometheus``), then by name.

Warming (``warm``): at most ``concurrency`` keys at a time. Per key:

1. present already -> skipped (a warm never overwrites what the app cached);
2. ``SET warm:lock:<key> <token> NX PX <lock_ttl_ms>``: one filler per key across every warmer and
   replica; a key whose lock is held is skipped (someone else is filling it). The lock expires on its own
   if a warmer dies;
3. the value comes from ``loader(key)`` (the lab: GET the backend URL the key caches), then
   ``SET <key> <value> EX <ttl minus up to 50% jitter> NX`` (the app may have filled it meanwhile; NX
   keeps its value; the jitter keeps keys warmed together from expiring together, see TTL_JITTER);
4. the lock is released only by its owner (compare-and-delete in one Lua script).

A loader failure fails that key and warming goes on; Redis failing (connection lost) stops everything at
once with ``CacheWarmError`` carrying the summary so far. Progress is a tqdm bar.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import redis
from tqdm import tqdm  # text bar: tqdm.auto would warn in notebooks (ipywidgets is not installed)

from ..diagnose.cache import logical_key
from ..redact import redact_text
from .errors import CacheWarmError

LOCK_PREFIX = "warm:lock:"
# A lock outlives the slowest fill it protects: the lab's slowest page takes ~1 s under the incident;
# 30 s leaves room and still frees the key soon after a warmer crashed.
LOCK_TTL_MS = 30_000
# Default parallel fills: 8 keeps the database (the lab's pool of 4-10 connections) from being flooded
# by the warm-up itself.
CONCURRENCY = 8
MAX_CONCURRENCY = 64
HTTP_TIMEOUT_S = 10.0
# Compare-and-delete: release a lock only when it still holds our token (Redis docs, SET: "a simple
# locking pattern"; the unlock script).
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# TTL jitter: each warmed key lives between (1 - TTL_JITTER) x TTL and TTL. Keys warmed together would
# otherwise expire together and send their misses to the database at once (the expiry clustering the
# diagnosis flags). It lasts: a popular key is asked for again right after it expires, the app rewrites it
# at once, so its expiry keeps that phase TTL after TTL and the cluster comes back a TTL later. Spreading
# the first expiry over half the TTL spreads those phases for good: simulated on the lab's load (18 req/s,
# every key seen over 5 min warmed, 30 min TTL; ``cache.simulate``, tests/test_cache_simulate.py), 10% left
# a dip of ~5 points in the hit ratio for ~3 minutes at 27-30 min and a smaller one at 57-60 min, 50% none.
# It costs each warmed key at most one extra miss. Never longer than the TTL, which is the staleness bound.
TTL_JITTER = 0.5
# Redis failures that mean the server is gone, not that one key is odd: warming stops.
FATAL = (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError)


@dataclass(frozen=True)
class WarmItem:
    key: str
    score: float  # sampled versions (requests seen)
    route_requests: float = 0.0


def rank_keys(keys: pd.DataFrame, top_n: int, route_requests: dict[str, float] | None = None,
              route_of: Callable[[str], str | None] | None = None) -> list[WarmItem]:
    """The ``top_n`` logical keys by sampled versions, ties by the route's requests, then by name."""
    if keys is None or not len(keys):
        return []
    counts = keys["key"].map(logical_key).value_counts()
    rr = route_requests or {}
    route_of = route_of or (lambda k: None)
    items = [WarmItem(k, float(n), float(rr.get(route_of(k) or "", 0.0))) for k, n in counts.items()]
    items.sort(key=lambda i: (-i.score, -i.route_requests, i.key))
    return items[:top_n]


@dataclass
class WarmSummary:
    requested: int = 0
    warmed: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=lambda: {"present": [], "locked": [], "no value": []})
    failed: list[dict[str, str]] = field(default_factory=list)
    not_attempted: int = 0
    concurrency: int = 0
    max_in_flight: int = 0
    seconds: float = 0.0
    ttl_s: float = 0.0
    error: str | None = None

    def counts(self) -> dict[str, Any]:
        return {"requested": self.requested, "warmed": len(self.warmed),
                "skipped": {k: len(v) for k, v in self.skipped.items()}, "failed": len(self.failed),
                "not_attempted": self.not_attempted, "concurrency": self.concurrency,
                "max_in_flight": self.max_in_flight, "seconds": round(self.seconds, 3), "ttl_s": self.ttl_s,
                "error": self.error}

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts(), "warmed_keys": list(self.warmed),
                "skipped_keys": {k: list(v) for k, v in self.skipped.items()}, "failures": list(self.failed)}

    def line(self) -> str:
        c = self.counts()
        sk = ", ".join(f"{n} {why}" for why, n in c["skipped"].items() if n) or "none"
        return (f"warmed {c['warmed']} of {c['requested']} keys in {c['seconds']:.1f} s (skipped: {sk}; failed "
                f"{c['failed']}; not attempted {c['not_attempted']}; at most {c['max_in_flight']} in flight, "
                f"limit {c['concurrency']})")


class _Abort(Exception):
    pass


def warm(client: redis.Redis, items: Iterable[WarmItem | str], loader: Callable[[str], Any], ttl_s: float,
         concurrency: int = CONCURRENCY, lock_ttl_ms: int = LOCK_TTL_MS, progress: bool = True,
         endpoint: str = "redis", jitter: float = TTL_JITTER) -> WarmSummary:
    """Fill the given keys (see the module doc). Raises CacheWarmError when Redis fails."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise CacheWarmError(f"concurrency must be in 1..{MAX_CONCURRENCY}, got {concurrency}")
    if ttl_s <= 0:
        raise CacheWarmError(f"ttl_s must be > 0, got {ttl_s}")
    keys = [i.key if isinstance(i, WarmItem) else str(i) for i in items]
    s = WarmSummary(requested=len(keys), concurrency=concurrency, ttl_s=float(ttl_s))
    unlock = client.register_script(_UNLOCK)
    lock = threading.Lock()
    stop = threading.Event()
    in_flight = 0
    t0 = time.monotonic()

    def one(key: str) -> tuple[str, str, str | None]:
        nonlocal in_flight
        if stop.is_set():
            raise _Abort()
        with lock:
            in_flight += 1
            s.max_in_flight = max(s.max_in_flight, in_flight)
        try:
            return fill(key)
        except FATAL:
            raise
        except redis.RedisError as e:  # a per-key Redis error (e.g. OOM under noeviction)
            return key, "failed", redact_text(f"{type(e).__name__}: {e}")
        finally:
            with lock:
                in_flight -= 1

    def fill(key: str) -> tuple[str, str, str | None]:
        if client.exists(key):
            return key, "present", None
        token = uuid.uuid4().hex
        lock_key = LOCK_PREFIX + key
        if not client.set(lock_key, token, nx=True, px=lock_ttl_ms):
            return key, "locked", None
        try:
            try:
                value = loader(key)
            except FATAL:
                raise
            except Exception as e:  # noqa: BLE001 - one key's loader failing fails that key only
                return key, "failed", redact_text(f"{type(e).__name__}: {e}")
            if value is None:
                return key, "no value", None
            client.set(key, value, ex=max(1, round(ttl_s * (1 - random.uniform(0, jitter)))), nx=True)
            return key, "warmed", None
        finally:
            unlock(keys=[lock_key], args=[token])

    bar = tqdm(total=len(keys), desc="warming", unit="key", disable=not progress, leave=False, mininterval=0.5)
    fatal: BaseException | None = None
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="warm") as pool:
            futures = [pool.submit(one, k) for k in keys]
            for fut in as_completed(futures):
                try:
                    key, outcome, err = fut.result()
                except _Abort:
                    s.not_attempted += 1
                    continue
                except FATAL as e:
                    if fatal is None:
                        fatal = e
                        stop.set()
                    s.not_attempted += 1
                    continue
                if outcome == "warmed":
                    s.warmed.append(key)
                elif outcome == "failed":
                    s.failed.append({"key": key, "error": err or ""})
                else:
                    s.skipped[outcome].append(key)
                bar.update(1)
                bar.set_postfix(warmed=len(s.warmed), failed=len(s.failed), refresh=False)
    finally:
        bar.close()
        s.seconds = time.monotonic() - t0
    if fatal is not None:
        s.error = redact_text(f"{type(fatal).__name__}: {fatal}")
        raise CacheWarmError(f"Redis at {endpoint} stopped answering during warming ({s.error}); "
                             f"{s.line()}", summary=s.as_dict())
    return s


# --- the lab backend: which URL fills which key ------------------------------------------------------

# The lab's normalized keys are ``api:<route>:<user id>:<sorted query>`` (runbook_lib/lab/app.py).
LAB_ROUTES = {"users": "/api/users", "user_orders": "/api/users/{id}/orders", "products": "/api/products",
              "dashboard": "/api/dashboard/stats"}
# Prometheus labels requests by path template: key route -> request route label.
LAB_REQUEST_ROUTES = {"users": "/api/users", "user_orders": "/api/users/{id}/orders",
                      "products": "/api/products", "dashboard": "/api/dashboard/stats"}


def lab_route(key: str) -> str | None:
    parts = key.split(":")
    return parts[1] if len(parts) >= 3 and parts[0] == "api" and parts[1] in LAB_ROUTES else None


def lab_request_route(key: str) -> str | None:
    r = lab_route(key)
    return LAB_REQUEST_ROUTES.get(r) if r else None


def lab_path(key: str) -> str | None:
    """The request path that makes the lab backend cache ``key`` (None for keys that are not its)."""
    parts = key.split(":", 3)
    route = lab_route(key)
    if route is None or len(parts) < 4:
        return None
    user, query = parts[2], parts[3]
    if route == "user_orders" and not user.isdigit():
        return None
    path = LAB_ROUTES[route].replace("{id}", user)
    return path + (f"?{query}" if query else "")


class HttpLoader:
    """A loader that GETs the URL caching the key: None (skipped) for keys it cannot map, RuntimeError on a
    non-200 answer. One HTTP client per warming thread; ``close()`` closes them all."""

    def __init__(self, base_url: str, path_of: Callable[[str], str | None] = lab_path,
                 timeout_s: float = HTTP_TIMEOUT_S):
        self.base = base_url.rstrip("/")
        self.host = urlsplit(self.base).netloc or "?"
        self.path_of, self.timeout_s = path_of, timeout_s
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()

    def __call__(self, key: str) -> bytes | None:
        import httpx

        path = self.path_of(key)
        if path is None:
            return None
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(timeout=self.timeout_s)
            with self._lock:
                self._clients.append(client)
        r = client.get(self.base + path)
        if r.status_code != 200:
            raise RuntimeError(f"GET {self.host}{path} answered {r.status_code}")
        return r.content

    def close(self) -> None:
        with self._lock:
            for c in self._clients:
                c.close()
            self._clients.clear()
