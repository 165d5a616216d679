"""CacheWarm (kind ``cache.warm``): fill the most requested keys before traffic asks for them.

Inputs: ``{"top_n": N}`` (what the impact plan emits) plus, optionally, ``concurrency``, ``ttl_s``,
``source_url`` (the app's base URL whose pages fill the keys),
``keys`` (warm exactly these instead of ranking a sample), ``sample_size``, ``prometheus_url`` (route
request counts break ties in the ranking), ``lock_ttl_ms``, ``config_file`` (the app's knobs file: its
``cache_ttl_s`` is the TTL when ``ttl_s`` is not given). The step fills ``source_url`` and ``config_file``
from the parameters' ``app`` section.

Keys are chosen by ``plan.cache_warming`` (logical keys ranked by sampled versions) and filled here
(``warm``): at most ``concurrency`` fills at a time. Per key:

1. present already -> skipped (a warm never overwrites what the app cached);
2. ``SET warm:lock:<key> <token> NX PX <lock_ttl_ms>``: one filler per key across every warmer and
   replica; a key whose lock is held is skipped (someone else is filling it). The lock expires on its own
   if a warmer dies;
3. the value comes from ``loader(key)`` (GET the app URL the key caches), then
   ``SET <key> <value> EX <ttl minus up to 50% jitter> NX`` (the app may have filled it meanwhile; NX
   keeps its value; the jitter keeps keys warmed together from expiring together, see TTL_JITTER);
4. the lock is released only by its owner (compare-and-delete in one Lua script).

A loader failure fails that key and warming goes on. Progress is a tqdm bar. Warming only adds ordinary cache entries
that expire with their TTL, so there is nothing to roll back: the rollback says so and changes nothing.
A Redis failure mid-warm stops it with CacheWarmError (audited ``failed`` with what was done so far).
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

import redis
from pydantic import Field
from tqdm import tqdm  # text bar: tqdm.auto would warn in notebooks (ipywidgets is not installed)

from runbook_lib.actions.action_errors import ActionInputError, CacheWarmError
from runbook_lib.actions.framework import Action, ApplyResult, Inputs, Plan, RollbackResult, VerifyResult
from runbook_lib.diagnose.cache_keys import logical_key
from runbook_lib.errors import RunbookError
from runbook_lib.model import cache_warm_action_id
from runbook_lib.plan.cache_warming import (
    TTL_JITTER,
    WarmItem,
    lab_path,
    lab_request_route,
    rank_keys,
    routed_path,
)
from runbook_lib.redaction import redact_text
from runbook_lib.settings import resolve_path
from runbook_lib.sources.app_config_file import read_app_config
from runbook_lib.sources.redis_snapshot import key_sample, route_requests_from_prometheus

# Verify: warmed keys still present right after the warm-up. Under a too-small maxmemory new keys are
# evicted at once; 90% leaves room for a few expiring or evicted in between.
VERIFY_PRESENT_SHARE = 0.9
# Without a TTL input or a readable app config: the seed's fixed TTL (fixtures/d2-latency remediation).
DEFAULT_TTL_S = 300.0
# Sample for ranking: 5000 keys holds a few versions of each popular logical key under the incident.
SAMPLE_SIZE = 5000


class CacheWarmInputs(Inputs):
    top_n: int = Field(ge=1, le=100_000)
    concurrency: int = Field(8, ge=1, le=64)
    ttl_s: float | None = Field(None, gt=0)
    source_url: str | None = None
    keys: list[str] | None = None
    sample_size: int = Field(SAMPLE_SIZE, ge=1, le=1_000_000)
    prometheus_url: str | None = None
    lock_ttl_ms: int = Field(30_000, ge=100, le=3_600_000)
    config_file: str | None = None
    routes: dict[str, str] | None = None  # key family -> path that fills it (app.warm_routes); None: the lab's


class CacheWarm(Action):
    kind = "cache.warm"
    family = "redis"
    Inputs = CacheWarmInputs
    effect_signal = "cache_hit_ratio"
    risk = "low"  # adds entries only; the fills go through the app at a bounded concurrency
    reversible = False  # nothing to undo: entries expire with their TTL

    inputs: CacheWarmInputs

    def __init__(self, inputs=None, **kwargs):
        super().__init__(inputs, **kwargs)
        self.summary: dict[str, Any] | None = None  # what the last apply warmed, skipped and failed

    @property
    def id(self) -> str:
        return cache_warm_action_id(self.inputs.top_n)

    @property
    def title(self) -> str:
        return f"Warm the {self.inputs.top_n} most requested cache keys"

    @property
    def target(self) -> str:
        return "redis cache entries (added only; they expire with their TTL)"

    def _source_desc(self) -> str:
        return self.inputs.source_url or "<app.base_url>"

    def _path_of(self):
        """Key -> the page that fills it: the parameters' routes, else the lab app's key scheme."""
        return routed_path(self.inputs.routes) if self.inputs.routes else lab_path

    def plan(self) -> Plan:
        i = self.inputs
        rank = (f"the {len(i.keys)} given keys" if i.keys else
                f"SCAN a sample of {i.sample_size} keys (read-only); rank logical keys by sampled versions"
                + (" and route requests from Prometheus" if i.prometheus_url else "") + f"; take the top {i.top_n}")
        ttl = f"{i.ttl_s:g}" if i.ttl_s else "<app cache_ttl_s>"
        return Plan(self.id, self.kind, self.title, self.target,
                    commands=[rank,
                              (f"per key, {i.concurrency} at a time: skip if EXISTS; SET warm:lock:<key> <token> NX "
                               f"PX {i.lock_ttl_ms}; GET {self._source_desc()}<path of key: "
                               + (", ".join(f"{k} -> {v}" for k, v in i.routes.items()) if i.routes
                                  else "the lab's key scheme") + f">; SET <key> <body> EX "
                               f"{ttl} (minus up to {TTL_JITTER:.0%} jitter) NX; release the lock "
                               "(compare-and-delete)")],
                    captures=["nothing: warming only adds entries that expire with their TTL"],
                    rollback_commands=[], reversible=self.reversible, risk=self.risk)

    def rollback_commands(self, prior: dict[str, Any]) -> list[str]:
        return []

    def capture(self, targets) -> dict[str, Any]:
        return {}

    def is_applied(self, state: dict[str, Any]) -> bool:
        return False  # warming leaves nothing to discover: its entries look like any other cache entry

    # --- doing it ---------------------------------------------------------------------------------

    def _ttl(self) -> float:
        if self.inputs.ttl_s:
            return float(self.inputs.ttl_s)
        if self.inputs.config_file:
            try:
                return float(read_app_config(resolve_path(self.inputs.config_file)).cache_ttl_s)
            except RunbookError:
                pass
        return DEFAULT_TTL_S

    def items(self, client) -> list:
        """The keys this warm-up would fill, best first (read-only)."""
        if self.inputs.keys:
            return list(self.inputs.keys)[: self.inputs.top_n]
        sample = key_sample(client, self.inputs.sample_size)
        if len(sample):
            path_of = self._path_of()
            sample = sample[sample["key"].map(lambda k: path_of(logical_key(k)) is not None)]
        rr = (route_requests_from_prometheus(self.inputs.prometheus_url, 300)
              if self.inputs.prometheus_url else None)
        return rank_keys(sample, self.inputs.top_n, rr, lab_request_route)

    def apply(self, targets) -> ApplyResult:
        source = self.inputs.source_url
        if not source:
            raise ActionInputError(f"{self.id}: no source_url to fill keys from",
                                   hint="set app.base_url in the parameters (or source_url in the action's inputs)")
        ttl = self._ttl()
        client = targets.redis()
        items = self.items(client)
        loader = HttpLoader(source, self._path_of())
        try:
            s = warm(client, items, loader, ttl, self.inputs.concurrency, self.inputs.lock_ttl_ms,
                       endpoint=targets.endpoint("redis"))
        except CacheWarmError as e:
            self.summary = e.summary
            raise
        finally:
            loader.close()
        self.summary = s.as_dict()
        return ApplyResult(bool(s.warmed), s.line(),
                           [f"SET <key> <body> EX {ttl:g} NX for {len(s.warmed)} keys from {urlsplit(source).netloc}"])

    def verify(self, targets) -> VerifyResult:
        s = self.summary or {}
        warmed = s.get("warmed_keys", [])
        if not warmed:
            ok = not s.get("failed")
            return VerifyResult(ok, "nothing needed warming" if ok else "no key could be warmed",
                                {k: s.get(k) for k in ("requested", "skipped", "failed")})
        client = targets.redis()
        pipe = client.pipeline(transaction=False)
        for k in warmed:
            pipe.exists(k)
        present = sum(int(x) for x in pipe.execute())
        share = present / len(warmed)
        observed = {"warmed": len(warmed), "present": present, "skipped": s.get("skipped"), "failed": s.get("failed")}
        if share >= VERIFY_PRESENT_SHARE:
            return VerifyResult(True, f"{present} of {len(warmed)} warmed keys are in the cache", observed)
        return VerifyResult(False, f"only {present} of {len(warmed)} warmed keys are still cached (evicted? "
                                   "raise maxmemory before warming)", observed)

    def rollback(self, targets, prior: dict[str, Any]) -> RollbackResult:
        return RollbackResult(False, "nothing to undo: warmed entries are ordinary cache entries and expire "
                                     "with their TTL")


# --- filling keys ------------------------------------------------------------------------------

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


# Redis failures that mean the server is gone, not that one key is odd: warming stops.
FATAL = (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError)


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
