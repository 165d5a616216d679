"""A cache TTL, a maxmemory and an eviction policy computed from measured figures, with the reasoning.

Pure: takes the window deltas (``diagnose.cache.window_deltas``), the key sample and the app's current
settings; every recommendation carries ``reasoning`` lines a reader can check by hand.

TTL. A key re-requested every ``i`` seconds and kept ``T`` seconds is missed once per ``T`` and hit
``T/i - 1`` times, so its hit ratio is ``1 - i/T``. To reach the target hit ratio ``H`` the TTL must be
``T >= i / (1 - H)``. ``i`` is measured from the sample: single-use keys of the same logical key carry
the time they were written (each write follows a miss), so consecutive versions give the re-request
intervals; and replaying the seen requests against a TTL cache gives the hit ratio each round TTL
would have had: the shortest reaching the target is recommended, capped by how stale a response may be
(``max_staleness_s``, a product decision).

Memory. Under the new TTL the cache holds about (distinct keys requested per second) x TTL entries.
Distinct keys per second is at most the miss rate (every miss writes a key) times the share of distinct
logical keys among sampled versions. Entries x mean MEMORY USAGE per entry is the working set; maxmemory
adds headroom for fragmentation and Redis's own overhead, rounded up to a power of two.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..diagnose.cache import key_timestamp_s, logical_key, volatile_parts

# The hit ratio the TTL is sized for: the runbook's SLO default (settings.Slo.cache_hit_ratio).
TARGET_HIT_RATIO = 0.80
# How stale a cached response may be; the seed incident's fix chose 300 s (fixtures/d2-latency).
MAX_STALENESS_S = 300.0
# The re-request interval the TTL must cover: the median over requests, i.e. the TTL reaches the target
# for the half of the requests that come soonest after the previous request for the same key.
INTERVAL_QUANTILE = 0.5
# TTLs are rounded up to one of these (seconds): operators read and set round numbers.
NICE_TTLS_S = (5, 10, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
# maxmemory headroom over the working set: allocator fragmentation (INFO mem_fragmentation_ratio is
# typically 1.1-1.5) plus growth. Redis docs ("Key eviction"): leave room beyond the data itself.
MEMORY_HEADROOM = 1.5
# Never recommend less than this (a cache this small is not worth running).
MIN_MAXMEMORY_BYTES = 16 * 2**20
# Policies: for a power-law (Zipf) popularity, Redis docs recommend allkeys-lru ("when you expect a
# subset of elements to be accessed far more often than the rest"); allkeys-lfu is the alternative.
RECOMMENDED_POLICY = "allkeys-lru"
# Key scheme: normalize when at least this share of sampled keys is single-use.
SINGLE_USE_SHARE = 0.5


def _nice_ttl(seconds: float) -> float:
    seconds = round(seconds, 6)  # 3.0 / 0.2 is 15.000000000000002: still 15
    return float(next((t for t in NICE_TTLS_S if t >= seconds), math.ceil(seconds)))


def _pow2_mb(nbytes: float) -> int:
    mb = max(1, math.ceil(nbytes / 2**20))
    return 2 ** math.ceil(math.log2(mb))


def reuse_intervals(keys: pd.DataFrame) -> pd.DataFrame:
    """Re-request intervals between consecutive versions of the same logical key (keys with a timestamp).

    Columns: logical_key, versions, median_interval_s (one row per logical key with >= 2 versions)."""
    rows = []
    if keys is not None and len(keys):
        ts = pd.DataFrame({"logical": [logical_key(k) for k in keys["key"]],
                           "t": [key_timestamp_s(k) for k in keys["key"]]}).dropna()
        for lk, g in ts.groupby("logical"):
            t = g["t"].sort_values().diff().dropna()
            t = t[t > 0]
            if len(t):
                rows.append({"logical_key": lk, "versions": len(g), "median_interval_s": float(t.median())})
    return pd.DataFrame(rows, columns=["logical_key", "versions", "median_interval_s"])


def key_lifetime_s(deltas: dict, dbsize: int | None) -> float | None:
    """Mean time a key stays in Redis (Little's law): keys alive / keys leaving per second."""
    leaving = (deltas.get("expired_per_s") or 0.0) + (deltas.get("evicted_per_s") or 0.0)
    if not dbsize or leaving <= 0:
        return None
    return dbsize / leaving


def replay_hit_ratio(requests: pd.DataFrame, ttl_s: float) -> float:
    """The hit ratio a cache-aside cache with a fixed TTL would have had on these requests.

    ``requests``: columns logical, t (seconds), one row per request. A request hits when its logical key
    was written (on an earlier miss) less than ``ttl_s`` before; the first request of every key misses.
    """
    hits = 0
    expires: dict[str, float] = {}
    for lk, t in requests.sort_values("t")[["logical", "t"]].itertuples(index=False):
        if expires.get(lk, float("-inf")) > t:
            hits += 1
        else:
            expires[lk] = t + ttl_s
    return hits / len(requests) if len(requests) else float("nan")


def recommend_ttl(keys: pd.DataFrame, current_ttl_s: float | None, target: float = TARGET_HIT_RATIO,
                  max_staleness_s: float = MAX_STALENESS_S, names: list[str] | None = None) -> dict[str, Any]:
    """The shortest round TTL that reaches ``target`` on the requests seen, capped by the staleness bound.

    Every sampled version of a logical key (``names``: every name seen over the window, else the sample)
    is one request at the time its key carries. Two measurements:

    * the median re-request interval ``i`` (the first request of each key has an unseen, longer interval;
      when the median request is among those, ``i`` is not measurable) and the TTL ``i / (1 - target)``
      that gives a key re-requested every ``i`` seconds the target hit ratio;
    * a replay of the requests against a TTL cache for each round TTL up to the staleness bound: the
      smallest TTL whose replayed hit ratio reaches the target is recommended. The first request of each
      key always misses in a replay, so a short window under-states what a TTL reaches: when no TTL
      reaches the target, the staleness bound is recommended.
    """
    why: list[str] = []
    seen = pd.DataFrame({"key": list(names)}) if names else keys
    current = float(current_ttl_s) if current_ttl_s is not None else None
    req = pd.DataFrame({"logical": [logical_key(k) for k in seen["key"]],
                        "t": [key_timestamp_s(k) for k in seen["key"]]}).dropna() if seen is not None and len(seen) \
        else pd.DataFrame(columns=["logical", "t"])
    interval: float | None = None
    needed = float(max_staleness_s)
    replay: dict[str, float] = {}
    if len(req) and req["logical"].duplicated().any():
        observed = sorted(float(x) for _, g in req.groupby("logical")
                          for x in g["t"].sort_values().diff().dropna() if x > 0)
        distinct = int(req["logical"].nunique())
        total = len(req)
        why.append(f"{total} requests (timestamped key versions) for {distinct} logical keys; {len(observed)} have "
                   f"a measured re-request interval, the first request of each key does not (unseen, longer)")
        pos = int(INTERVAL_QUANTILE * total)
        if pos < len(observed):
            interval = observed[pos]
            why.append(f"median re-request interval {interval:.2f} s: a key re-requested that often needs TTL >= "
                       f"{interval:.2f} / (1 - {target:.2f}) = {interval / (1 - target):.1f} s for a {target:.0%} "
                       "hit ratio")
        else:
            why.append("over half of the requests have no measured interval: the median re-request interval is "
                       "not measurable here (longer than the window)")
        candidates = [t for t in NICE_TTLS_S if t <= max_staleness_s] or [max_staleness_s]
        if candidates[-1] != max_staleness_s:
            candidates.append(max_staleness_s)
        replay = {f"{t:g}": round(replay_hit_ratio(req, t), 4) for t in candidates}
        why.append("replaying these requests against a TTL cache: "
                   + ", ".join(f"{t} s -> {v:.0%}" for t, v in replay.items())
                   + f" (at most {1 - distinct / total:.0%} in this window: first requests always miss)")
        reach = next((float(t) for t, v in replay.items() if v >= target), None)
        if reach is not None:
            needed = reach
            why.append(f"{reach:g} s is the shortest round TTL reaching {target:.0%}")
        else:
            why.append(f"no TTL up to the staleness bound reaches {target:.0%} in this window: the bound")
    else:
        why.append("no logical key appears twice with a timestamp: re-requests are not measurable from keys, so "
                   "the TTL is the staleness bound")
    ttl = _nice_ttl(needed) if needed < max_staleness_s else float(max_staleness_s)
    if ttl > max_staleness_s:
        ttl = float(max_staleness_s)
    if current is not None and ttl < current:
        why.append(f"the current TTL ({current:g} s) is already longer: kept")
        ttl = current
    else:
        why.append(f"recommended {ttl:g} s (staleness bound {max_staleness_s:g} s"
                   + (f", current {current:g} s)" if current is not None else ")"))
    return {"recommended_s": ttl, "current_s": current, "reuse_interval_s": interval, "needed_s": needed,
            "replay_hit_ratio": replay, "target_hit_ratio": target, "reasoning": why}


def recommend_memory(info: dict, deltas: dict, keys: pd.DataFrame, ttl_s: float) -> dict[str, Any]:
    why: list[str] = []
    maxmem, used = int(info.get("maxmemory") or 0), int(info.get("used_memory") or 0)
    overhead = int(info.get("used_memory_overhead") or 0)
    mem = keys["memory_bytes"].dropna() if keys is not None and len(keys) else pd.Series(dtype=float)
    mean_bytes = float(mem.mean()) if len(mem) else 0.0
    logical = keys["key"].map(logical_key).nunique() if keys is not None and len(keys) else 0
    distinct = logical / len(keys) if keys is not None and len(keys) else 1.0
    misses_per_s = deltas["misses"] / deltas["seconds"] if deltas.get("seconds") else 0.0
    entries = misses_per_s * distinct * ttl_s
    ws = entries * mean_bytes
    why.append(f"the window saw {misses_per_s:.1f} misses/s; {distinct:.0%} of sampled keys are distinct logical "
               f"keys ({logical} of {len(keys) if keys is not None else 0})")
    why.append(f"at a {ttl_s:.0f} s TTL about {misses_per_s:.1f} x {distinct:.2f} x {ttl_s:.0f} = {entries:,.0f} "
               f"entries stay cached; at {mean_bytes:,.0f} bytes each (mean MEMORY USAGE) that is "
               f"{ws / 2**20:.1f} MiB")
    lifetime = key_lifetime_s(deltas, info.get("dbsize"))
    if lifetime is not None:
        why.append(f"measured mean key lifetime (Little's law: {info.get('dbsize')} keys / "
                   f"{deltas.get('expired_per_s', 0) + deltas.get('evicted_per_s', 0):.1f} leaving per s) = "
                   f"{lifetime:.1f} s")
    need = ws * MEMORY_HEADROOM + overhead
    if deltas.get("evicted_per_s", 0) > 0 and used:
        why.append(f"Redis is evicting ({deltas['evicted_per_s']:.1f}/s), so the keyspace under-counts demand; "
                   f"not recommending less than twice the used memory ({2 * used / 2**20:.1f} MiB)")
        need = max(need, 2 * used)
    need = max(need, MIN_MAXMEMORY_BYTES)
    mb = _pow2_mb(need)
    why.append(f"x {MEMORY_HEADROOM} headroom + {overhead / 2**20:.1f} MiB Redis overhead, rounded up to a power "
               f"of two: {mb} MiB")
    if maxmem and mb * 2**20 <= maxmem:
        why.append(f"the current maxmemory ({maxmem / 2**20:.0f} MiB) is already enough: kept")
        mb = max(1, maxmem // 2**20)
        rec = str(maxmem)
    else:
        rec = f"{mb}mb"
    return {"recommended": rec, "recommended_bytes": mb * 2**20 if rec.endswith("mb") else maxmem,
            "current_bytes": maxmem, "working_set_bytes": ws, "entries": entries, "mean_entry_bytes": mean_bytes,
            "key_lifetime_s": lifetime, "reasoning": why}


def recommend_policy(info: dict, keys: pd.DataFrame | None) -> dict[str, Any]:
    policy = str(info.get("maxmemory_policy", ""))
    no_ttl = float((keys["ttl_s"] < 0).mean()) if keys is not None and len(keys) else 0.0
    if policy == "noeviction":
        why = "noeviction refuses writes when full; a cache should evict"
    elif policy.startswith("volatile-") and no_ttl > 0:
        why = f"{no_ttl:.0%} of sampled keys have no TTL and can never be evicted under {policy}"
    else:
        return {"recommended": policy, "current": policy, "reasoning": [f"{policy} suits a cache: kept"]}
    return {"recommended": RECOMMENDED_POLICY, "current": policy,
            "reasoning": [why, f"{RECOMMENDED_POLICY}: popularity is skewed (a few keys take most reads)"]}


def recommend_key_scheme(keys: pd.DataFrame | None, current: str | None) -> dict[str, Any]:
    if keys is None or not len(keys):
        return {"recommended": current, "current": current, "reasoning": ["no keys sampled"]}
    single = float(keys["key"].map(lambda k: bool(volatile_parts(k))).mean())
    if single >= SINGLE_USE_SHARE:
        return {"recommended": "normalized", "current": current, "single_use_share": single,
                "reasoning": [(f"{single:.0%} of sampled keys carry a volatile part and are never read twice; "
                               "normalized keys (no timestamp, sorted parameters) are shared between requests")]}
    return {"recommended": current, "current": current, "single_use_share": single,
            "reasoning": [f"only {single:.0%} of sampled keys are single-use: the scheme is kept"]}


def recommend(info: dict, deltas: dict, keys: pd.DataFrame, app_config: dict | None = None,
              target: float = TARGET_HIT_RATIO, max_staleness_s: float = MAX_STALENESS_S,
              names: list[str] | None = None) -> dict[str, Any]:
    """TTL, memory, policy and key scheme, plus the action inputs that would apply them."""
    cfg = app_config or {}
    ttl = recommend_ttl(keys, cfg.get("cache_ttl_s"), target, max_staleness_s, names)
    memory = recommend_memory(info, deltas, keys, ttl["recommended_s"])
    policy = recommend_policy(info, keys)
    scheme = recommend_key_scheme(keys, cfg.get("cache_key_scheme"))
    actions: list[dict[str, Any]] = []
    if scheme["recommended"] and scheme["recommended"] != scheme["current"]:
        actions.append({"kind": "app.config", "inputs": {"cache_key_scheme": scheme["recommended"]}})
    if ttl["current_s"] is not None and ttl["recommended_s"] != ttl["current_s"]:  # the app's TTL known
        actions.append({"kind": "app.config", "inputs": {"cache_ttl_s": ttl["recommended_s"]}})
    redis_change = {}
    if memory["recommended_bytes"] != memory["current_bytes"]:
        redis_change["maxmemory"] = memory["recommended"]
    if policy["recommended"] != policy["current"]:
        redis_change["maxmemory-policy"] = policy["recommended"]
    if redis_change:
        actions.append({"kind": "redis.config_set", "inputs": redis_change})
    return {"ttl": ttl, "memory": memory, "policy": policy, "key_scheme": scheme, "actions": actions}
