"""Read-only collection from a live Redis and the app's own cache metrics.

Nothing here writes to Redis. Commands used: PING, INFO, TIME, DBSIZE, SCAN, TYPE, PTTL,
MEMORY USAGE, OBJECT IDLETIME (none of them modifies a key; OBJECT and MEMORY do not touch the LRU
clock). TYPE and PTTL do count as keyspace hits or misses in INFO, so ``collect`` takes the second
INFO snapshot *before* sampling keys: the window's hit ratio never includes the sampler's own lookups.
(On a Redis over its maxmemory, Redis evicts before running any command, INFO included: that is the
server making room, not a write by the sampler.)

Shapes are the fixture bundle's (fixtures/README.md), so the pure functions in
``runbook_lib.diagnose.cache_keys`` run on live and recorded data alike:

* ``info_snapshot`` -> the ``redis_info.*`` mapping (plus ``server_time`` from TIME, ``dbsize`` and a
  few memory fields);
* ``key_sample`` -> the ``redis_keys`` table ``key, type, ttl_s, memory_bytes`` (plus ``expires_at``,
  absolute epoch seconds by the local clock, and ``idle_s``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import redis

from runbook_lib.diagnosis_defaults import SAMPLE_SIZE, WATCH_EVERY_S
from runbook_lib.errors import AppMetricsError, CacheError, TargetUnreachable
from runbook_lib.model import CacheSnapshot  # noqa: F401 - collect() returns it; callers import it from here too
from runbook_lib.redaction import redact_text, redis_endpoint

# INFO fields kept in a snapshot: the fixture's redis_info fields first, then what the report adds.
INFO_FIELDS = ("keyspace_hits", "keyspace_misses", "evicted_keys", "expired_keys", "used_memory", "maxmemory",
               "maxmemory_policy", "connected_clients", "uptime_in_seconds", "used_memory_dataset",
               "used_memory_overhead", "maxmemory_samples", "redis_version")
# SCAN COUNT per call. Redis docs (SCAN): COUNT is a hint of work per call, default 10; 100 keeps each
# call well under a millisecond while needing few round trips.
SCAN_COUNT = 100
# Throttle: pause between SCAN batches so a sample of a busy server never runs back to back.
# 2 ms per batch of 100 keys bounds the sampler at ~50k keys/s, a small share of one Redis core.
SCAN_PAUSE_S = 0.002
# At most this many SCAN calls per sample: on a huge, sparse keyspace (MATCH filtering) the sampler stops.
MAX_SCAN_CALLS = 10_000
# Names kept from the watch passes (a bound on memory; 50k names is a few MB).
MAX_WATCHED_NAMES = 50_000
# Bounded waits on the network.
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
HTTP_TIMEOUT_S = 10.0
# The lab app's metric names (runbook_lib/lab/backend.py): counters labelled by route.
APP_HITS_METRIC = "cache_hits"
APP_MISSES_METRIC = "cache_misses"
APP_ROUTE_LABEL = "route"
KEY_COLUMNS = ["key", "type", "ttl_s", "memory_bytes", "expires_at", "idle_s"]


def app_cache_deltas(start: dict[str, dict[str, float]], end: dict[str, dict[str, float]]) -> dict:
    """The app's own hit ratio from its counters at both ends of the window.

    ``start``/``end``: {"hits": {route: count}, "misses": {route: count}} (cumulative counters).
    A counter that went down (a process restarted) counts from zero, as Prometheus's increase() does.
    """
    def inc(kind: str) -> dict[str, float]:
        out = {}
        for route, v in end.get(kind, {}).items():
            before = start.get(kind, {}).get(route, 0.0)
            out[route] = v - before if v >= before else v
        return out

    hits, misses = inc("hits"), inc("misses")
    routes = sorted(set(hits) | set(misses))
    by_route = {r: {"hits": hits.get(r, 0.0), "misses": misses.get(r, 0.0),
                    "hit_ratio": (hits.get(r, 0.0) / (hits.get(r, 0.0) + misses.get(r, 0.0))
                                  if hits.get(r, 0.0) + misses.get(r, 0.0) else float("nan"))} for r in routes}
    h, m = sum(hits.values()), sum(misses.values())
    return {"hits": h, "misses": m, "hit_ratio": h / (h + m) if h + m else float("nan"), "by_route": by_route}


def connect(url: str, password: str | None = None, timeout_s: float = SOCKET_TIMEOUT_S) -> redis.Redis:
    """A client for ``url`` (bytes replies: keys need not be UTF-8), checked with PING."""
    try:
        client = redis.Redis.from_url(url, password=password, socket_timeout=timeout_s,
                                      socket_connect_timeout=CONNECT_TIMEOUT_S)
    except ValueError as e:
        raise CacheError(f"not a Redis URL: {redact_text(url)} ({e})") from None
    try:
        client.ping()
    except redis.RedisError as e:
        client.close()
        raise TargetUnreachable(redis_endpoint(url), f"cannot reach {redis_endpoint(url)}: {redact_text(str(e))}") from None
    return client


def connect_settings(cfg) -> redis.Redis:
    """A client from the parameters' ``redis`` section (``Redis{url, password: SecretRef}``)."""
    password = cfg.password.reveal().get_secret_value() if cfg.password is not None else None
    return connect(cfg.url, password)


def _call(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except redis.RedisError as e:
        raise CacheError(f"Redis failed during {what}: {type(e).__name__}: {redact_text(str(e))}") from None


def info_snapshot(client: redis.Redis) -> dict[str, Any]:
    """INFO counters and memory settings, with the server clock (TIME) and DBSIZE."""
    info = _call("INFO", client.info)
    sec, usec = _call("TIME", client.time)
    snap: dict[str, Any] = {k: _plain(info[k]) for k in INFO_FIELDS if k in info}
    snap["server_time"] = sec + usec / 1e6
    snap["dbsize"] = int(_call("DBSIZE", client.dbsize))
    snap["taken_at"] = datetime.fromtimestamp(snap["server_time"], UTC).isoformat(timespec="milliseconds")
    return snap


def _plain(v: Any) -> Any:
    return v.decode() if isinstance(v, bytes) else v


def _text(key: bytes | str) -> str:
    return key.decode("utf-8", errors="backslashreplace") if isinstance(key, bytes) else key


def key_sample(client: redis.Redis, size: int = SAMPLE_SIZE, *, match: str | None = None,
               scan_count: int = SCAN_COUNT, pause_s: float = SCAN_PAUSE_S,
               max_calls: int = MAX_SCAN_CALLS) -> pd.DataFrame:
    """Up to ``size`` keys in SCAN order (hash-table order: unrelated to names, a fair sample), each
    with TYPE, TTL, MEMORY USAGE and idle time fetched in one pipeline per batch.

    ``ttl_s`` is -1 without a TTL (rounded like the TTL command); ``expires_at`` is absolute epoch seconds
    (local clock at the batch + PTTL); ``idle_s`` is None when the policy is LFU (idle time not tracked).
    Keys that expire between SCAN and the pipeline are dropped.
    """
    rows: list[dict[str, Any]] = []
    cursor, calls = 0, 0
    while len(rows) < size and calls < max_calls:
        cursor, batch = _call("SCAN", lambda c=cursor: client.scan(c, match=match, count=scan_count))
        calls += 1
        batch = batch[: size - len(rows)]
        if batch:
            pipe = client.pipeline(transaction=False)
            for k in batch:
                pipe.type(k)
                pipe.pttl(k)
                pipe.memory_usage(k)
                pipe.object("idletime", k)
            res = _call("the key sample pipeline", lambda p=pipe: p.execute(raise_on_error=False))
            # after the reply: PTTL was measured before this instant, so now + PTTL is never early and an
            # expiry on a whole second (EXPIREAT) stays in its second
            now = time.time()
            for i, k in enumerate(batch):
                typ, pttl, mem, idle = res[4 * i: 4 * i + 4]
                typ = _plain(typ)
                if isinstance(typ, Exception) or typ == "none" or pttl == -2:
                    continue
                pttl = int(pttl) if not isinstance(pttl, Exception) else -1
                rows.append({"key": _text(k), "type": typ,
                             "ttl_s": -1 if pttl < 0 else (pttl + 500) // 1000,
                             "memory_bytes": None if isinstance(mem, Exception) or mem is None else int(mem),
                             "expires_at": None if pttl < 0 else round(now + pttl / 1000, 3),
                             "idle_s": None if isinstance(idle, Exception) or idle is None else int(idle)})
        if cursor == 0:
            break
        if pause_s:
            time.sleep(pause_s)
    df = pd.DataFrame(rows, columns=KEY_COLUMNS)
    return df.astype({"ttl_s": "int64"}) if len(df) else df


def scan_names(client: redis.Redis, limit: int, *, match: str | None = None, scan_count: int = SCAN_COUNT,
               pause_s: float = SCAN_PAUSE_S, max_calls: int = MAX_SCAN_CALLS) -> list[str]:
    """Up to ``limit`` key names in SCAN order, nothing else asked of the server (throttled like the sample)."""
    names: list[str] = []
    cursor, calls = 0, 0
    while len(names) < limit and calls < max_calls:
        cursor, batch = _call("SCAN", lambda c=cursor: client.scan(c, match=match, count=scan_count))
        calls += 1
        names += [_text(k) for k in batch[: limit - len(names)]]
        if cursor == 0:
            break
        if pause_s:
            time.sleep(pause_s)
    return names


def gone_names(client: redis.Redis, names: list[str], batch: int = SCAN_COUNT * 10,
               pause_s: float = SCAN_PAUSE_S) -> list[str]:
    """The names that no longer exist (expired or evicted since they were seen): EXISTS, pipelined in
    batches without a transaction, throttled like the sample. Read-only."""
    gone: list[str] = []
    for i in range(0, len(names), batch):
        chunk = names[i:i + batch]
        pipe = client.pipeline(transaction=False)
        for n in chunk:
            pipe.exists(n)
        found = _call("EXISTS", pipe.execute)
        gone += [n for n, there in zip(chunk, found, strict=True) if not there]
        if pause_s:
            time.sleep(pause_s)
    return gone


# --- the app's own cache metrics ------------------------------------------------------------------


def app_counters_from_metrics(urls: Iterable[str], hits: str = APP_HITS_METRIC, misses: str = APP_MISSES_METRIC,
                              label: str = APP_ROUTE_LABEL) -> dict[str, dict[str, float]]:
    """Cumulative hit and miss counters by route, summed over every replica's /metrics URL."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {"hits": {}, "misses": {}}
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError) as e:
            raise AppMetricsError(f"cannot read app metrics at {redact_text(url)}: {e}") from None
        names = {hits: "hits", hits + "_total": "hits", misses: "misses", misses + "_total": "misses"}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:  # counters: "<name>_total" (prometheus_client) or plain "<name>"
                kind = names.get(s.name)
                if kind is not None:
                    route = s.labels.get(label, "")
                    out[kind][route] = out[kind].get(route, 0.0) + float(s.value)
    return out


def prometheus_query(prom_url: str, promql: str, timeout_s: float = HTTP_TIMEOUT_S) -> list[dict]:
    q = urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(f"{prom_url.rstrip('/')}/api/v1/query?{q}", timeout=timeout_s) as r:
            body = json.load(r)
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
        raise AppMetricsError(f"Prometheus query at {redact_text(prom_url)} failed: {e}") from None
    if body.get("status") != "success":
        raise AppMetricsError(f"Prometheus query failed: {body.get('error', body)}")
    return body["data"]["result"]


def _by_label(result: list[dict], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def app_cache_from_prometheus(prom_url: str, window_s: float, selector: str = "",
                              label: str = APP_ROUTE_LABEL) -> dict:
    """The app's hits and misses by route over the last ``window_s`` (``increase()``), as app_cache_deltas."""
    w = f"{max(round(window_s), 1)}s"
    end = {kind: _by_label(prometheus_query(prom_url, f"sum by ({label}) (increase({metric}_total{selector}[{w}]))"),
                           label)
           for kind, metric in (("hits", APP_HITS_METRIC), ("misses", APP_MISSES_METRIC))}
    return app_cache_deltas({}, end)


def route_requests_from_prometheus(prom_url: str, window_s: float, selector: str = '{job="lab"}',
                                   metric: str = "http_request_duration_seconds_count",
                                   label: str = "route") -> dict[str, float]:
    """Requests by route over the last ``window_s`` seconds: which endpoints real traffic asks for most."""
    w = f"{max(round(window_s), 1)}s"
    return _by_label(prometheus_query(prom_url, f"sum by ({label}) (increase({metric}{selector}[{w}]))"), label)


# --- one collection (a model.CacheSnapshot) ---------------------------------------------------------------------------------


def collect(client: redis.Redis, endpoint: str, window_s: float = 10.0, sample_size: int = SAMPLE_SIZE, *,
            app_metrics_urls: list[str] | None = None, prometheus_url: str | None = None,
            prometheus_selector: str = "", app_config: dict | None = None, watch_every_s: float | None = WATCH_EVERY_S,
            wait: Callable[[float], None] = time.sleep) -> CacheSnapshot:
    """INFO at the start, the window (names-only SCAN passes every ``watch_every_s``; None: just wait), INFO
    at the end, then the key sample. Read-only throughout."""
    if window_s < 0:
        raise CacheError(f"window must be >= 0 seconds, got {window_s}")
    app_start = app_counters_from_metrics(app_metrics_urls) if app_metrics_urls else None
    start = info_snapshot(client)
    seen: dict[str, None] = {}
    first_pass: set[str] | None = None  # names there when the window opened: the later ones were written in it
    deadline = time.monotonic() + window_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if watch_every_s:
            if len(seen) < MAX_WATCHED_NAMES:
                names = scan_names(client, min(sample_size, MAX_WATCHED_NAMES - len(seen)))
                if first_pass is None:
                    first_pass = set(names)
                seen.update(dict.fromkeys(names))
            left = deadline - time.monotonic()
            if left > 0:
                wait(min(watch_every_s, left))
        else:
            wait(left)
    end = info_snapshot(client)
    gone = gone_names(client, list(seen)) if seen else []
    app = None
    if app_metrics_urls:
        app = app_cache_deltas(app_start or {}, app_counters_from_metrics(app_metrics_urls))
    elif prometheus_url:
        app = app_cache_from_prometheus(prometheus_url, end["server_time"] - start["server_time"],
                                        prometheus_selector)
    t0 = time.monotonic()
    keys = key_sample(client, sample_size)
    seen.update(dict.fromkeys(keys["key"]) if len(keys) else {})
    new = [n for n in seen if first_pass is not None and n not in first_pass]
    return CacheSnapshot(endpoint, start, end, keys, app, app_config, round(time.monotonic() - t0, 3), list(seen),
                         gone, new)
