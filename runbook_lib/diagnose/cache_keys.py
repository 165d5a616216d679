"""Cache evidence from Redis INFO snapshots and a key sample (pure functions, no I/O)."""

from __future__ import annotations

import re

import pandas as pd

# A TTL under a minute on response caches means most entries die before their second reader at
# the lab's traffic (~200 req/s spread over thousands of keys).
SHORT_TTL_S = 60
# Memory is "full" when used_memory is within 5% of maxmemory.
MEMORY_FULL_SHARE = 0.95
# Key design: a pattern whose keys carry a volatile part is single-use.
# (name, regex, replacement)
VOLATILE_PARTS = [
    ("uuid", re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE), "{uuid}"),
    ("cache-buster", re.compile(r"(?<=[?&:])_=[0-9a-z]+", re.IGNORECASE), "_={cache-buster}"),
    ("timestamp", re.compile(r"(?<![0-9])1[0-9]{9}(?:[0-9]{3})?(?![0-9])"), "{timestamp}"),  # epoch s or ms
]
_NUMBER = re.compile(r"(?<=[:=])[0-9]+(?=$|[:&])")
_PARAM_VALUE = re.compile(r"(?<==)(?!\{)[^:&{}]+")


def info_deltas(start: dict, end: dict) -> dict:
    """Hit ratio, evictions and expirations over the window between two INFO snapshots."""
    hits = end["keyspace_hits"] - start["keyspace_hits"]
    misses = end["keyspace_misses"] - start["keyspace_misses"]
    secs = max(end.get("uptime_in_seconds", 0) - start.get("uptime_in_seconds", 0), 1)
    lookups = hits + misses
    return {
        "seconds": secs,
        "hits": hits,
        "misses": misses,
        "hit_ratio": hits / lookups if lookups else float("nan"),
        "evicted_per_s": (end["evicted_keys"] - start["evicted_keys"]) / secs,
        "expired_per_s": (end["expired_keys"] - start["expired_keys"]) / secs,
        "used_memory": end["used_memory"],
        "maxmemory": end["maxmemory"],
        "memory_used_share": end["used_memory"] / end["maxmemory"] if end["maxmemory"] else float("nan"),
        "maxmemory_policy": end["maxmemory_policy"],
    }


def ttl_summary(keys: pd.DataFrame) -> dict:
    ttl = keys.loc[keys["ttl_s"] >= 0, "ttl_s"]
    return {"sampled": len(keys), "with_ttl": len(ttl), "no_ttl": int((keys["ttl_s"] < 0).sum()),
            "median_ttl_s": float(ttl.median()) if len(ttl) else float("nan"),
            "short_ttl_share": float((ttl < SHORT_TTL_S).mean()) if len(ttl) else 0.0}


def key_pattern(key: str) -> tuple[str, list[str]]:
    """A key with its variable parts replaced by placeholders, and the volatile parts found."""
    found = []
    pattern = key
    for name, rx, placeholder in VOLATILE_PARTS:
        if rx.search(pattern):
            found.append(name)
            pattern = rx.sub(placeholder, pattern)
    pattern = _PARAM_VALUE.sub("{v}", _NUMBER.sub("{n}", pattern))
    return pattern, found


def key_patterns(keys: pd.DataFrame) -> pd.DataFrame:
    """Sampled keys grouped by pattern: share of keys, memory, TTL, and whether the key is single-use."""
    pats = keys["key"].map(key_pattern)
    df = keys.assign(pattern=[p for p, _ in pats], volatile=[", ".join(v) for _, v in pats])
    g = df.groupby(["pattern", "volatile"]).agg(keys=("key", "size"), memory_bytes=("memory_bytes", "sum"),
                                                median_ttl_s=("ttl_s", "median")).reset_index()
    g["key_share"] = g["keys"] / len(df)
    g["memory_share"] = g["memory_bytes"] / g["memory_bytes"].sum()
    return g.sort_values("keys", ascending=False).reset_index(drop=True)


# --- additions (issue 6): live diagnosis. The functions above keep their results unchanged. -------------

# A number of 10 to 19 digits is a timestamp when, read as epoch seconds at some resolution (s, ds, cs,
# ms, ..., ns), it falls between these dates (2000-01-01 and 2100-01-01). This catches the lab's
# deciseconds (11 digits), which the 10/13-digit regex in VOLATILE_PARTS does not.
EPOCH_RANGE_S = (946_684_800, 4_102_444_800)
_DIGITS = re.compile(r"(?<![0-9A-Za-z])[0-9]{10,19}(?![0-9A-Za-z])")
# Session ids and opaque tokens: a session-ish name followed by a long token, or a long hex run.
_SESSION = re.compile(r"(?i)(?<=sess)(?:ion)?(?:[_-]?id)?[:=_-][0-9a-z_-]{12,}")
_HEX_TOKEN = re.compile(r"(?i)(?<![0-9a-z])[0-9a-f]{24,}(?![0-9a-z])")
# Query strings: "?a=1&b=2" or, as the lab writes them, a ":"-delimited segment "a=1&b=2".
_GONE = "\x00"  # marks a removed volatile part while a key is normalized
_QUERY = re.compile(r"(?:(?<=\?)|(?<=:)|^)((?:[^:?&=]+=[^:&]*)(?:&[^:?&=]+=[^:&]*)+)")
# Expiry clustering: a second is a cluster when at least CLUSTER_MIN_KEYS sampled keys expire in it and
# CLUSTER_FACTOR times the median of the non-empty seconds within CLUSTER_WINDOW_S around it (the two
# adjacent seconds left out: a burst written across a second boundary falls into both). Keys
# written at a steady rate with one TTL expire evenly (no cluster); keys written in bulk with the same
# TTL (a warm-up, a batch job) expire together and their misses arrive together at the database.
# Redis docs (EXPIRE) and the usual remedy: add random jitter to the TTL.
CLUSTER_MIN_KEYS = 20
CLUSTER_FACTOR = 5.0
CLUSTER_WINDOW_S = 10
# maxmemory is "far below" the working set when the working set is at least this many times larger.
FAR_BELOW_FACTOR = 2.0


def _is_epoch(digits: str) -> bool:
    v = int(digits) / 10 ** (len(digits) - 10)
    return EPOCH_RANGE_S[0] <= v < EPOCH_RANGE_S[1]


def volatile_parts(key: str) -> list[str]:
    """Every volatile part found in ``key``: uuid, cache-buster, timestamp (any resolution), session id,
    token (long hex), unordered-query (parameters not in sorted order). A superset of ``key_pattern``'s."""
    found, rest = [], key
    for name, rx, _ in VOLATILE_PARTS:  # in order, each found part removed, as key_pattern does
        if rx.search(rest):
            found.append(name)
            rest = rx.sub(_GONE, rest)
    if "timestamp" not in found and any(_is_epoch(m.group(0)) for m in _DIGITS.finditer(rest)
                                        if not rest[:m.start()].endswith("_=")):
        found.append("timestamp")
    if "uuid" not in found and _SESSION.search(rest):
        found.append("session-id")
    if "uuid" not in found and _HEX_TOKEN.search(rest):
        found.append("token")
    for m in _QUERY.finditer(rest):
        names = [p.split("=", 1)[0] for p in m.group(1).split("&")]
        names = [n for n in names if n != "_"]  # the cache-buster is reported as such
        if names != sorted(names):
            found.append("unordered-query")
            break
    return found


def logical_key(key: str) -> str:
    """The key a normalized scheme would use: volatile parts dropped, query parameters sorted.

    Two requests for the same content map to the same logical key; counting the versions of a logical
    key in a sample shows how often it was re-requested (and missed, when the stored key is single-use).
    """
    k = key
    for _, rx, _ in VOLATILE_PARTS:
        k = rx.sub(_GONE, k)
    k = _DIGITS.sub(lambda m: _GONE if _is_epoch(m.group(0)) else m.group(0), k)
    k = _SESSION.sub(_GONE, k)
    k = _HEX_TOKEN.sub(_GONE, k)
    k = re.sub(rf"[^:?&={_GONE}]+={_GONE}", _GONE, k)  # a parameter whose value is volatile goes entirely

    def _sorted(m: re.Match) -> str:
        return "&".join(sorted(p for p in m.group(1).split("&") if p and p != _GONE))

    k = _QUERY.sub(_sorted, k)
    k = re.sub(rf"[?&:]?{_GONE}", "", k)
    k = re.sub(r"&{2,}", "&", k)
    k = re.sub(r"([?:])&", r"\1", k)
    return re.sub(r"[?&]+$", "", k)


def key_timestamp_s(key: str) -> float | None:
    """The first epoch timestamp in the key, in seconds (any resolution), or None."""
    key = VOLATILE_PARTS[0][1].sub(_GONE, key)  # digits inside a UUID are not a time
    for m in _DIGITS.finditer(key):
        d = m.group(0)
        if _is_epoch(d):
            return int(d) / 10 ** (len(d) - 10)
    for _, rx, _ in VOLATILE_PARTS[2:3]:
        m = rx.search(key)
        if m and not key[:m.start()].endswith("_="):
            d = m.group(0)
            return int(d) / 10 ** (len(d) - 10)
    return None


def key_design(keys: pd.DataFrame, misses_by_route: dict[str, float] | None = None, *,
               seen_keys: list[str] | None = None, gone_keys: list[str] | None = None,
               new_keys: list[str] | None = None, window_s: float | None = None) -> pd.DataFrame:
    """Key names grouped into families (patterns), with what makes them single-use and their share of misses.

    Columns: pattern, volatile (every volatile part, ``volatile_parts``), keys (in the sample), key_share,
    logical_keys (distinct keys once volatile parts are dropped), versions_per_logical_key, memory_bytes,
    memory_share, median_ttl_s, single_use, seen (names seen during the window, sample included), gone
    (seen names no longer there at the end: expired or evicted), new (names written during the window),
    short_ttl, miss_share, miss_share_source.

    Miss share: with ``misses_by_route`` (the app's own counters, route -> misses over the window), a
    pattern ``api:<route>:...`` gets its route's misses split by key count. Without it, misses are estimated
    from writes: in a cache-aside cache every stored key was written after a miss. A family's write rate is
    the larger of (keys alive) / (mean lifetime), the lifetime being about twice the mean remaining TTL
    (Little's law; keys without a TTL are left out), ``new / window_s`` (names written during the window,
    seen by the watch passes) and ``gone / window_s`` (names that left within the window: this is how a family
    whose keys all expire before the sample is taken still counts). The watch passes see at most the sample
    size per pass, so on a keyspace larger than that the observed rates are lower bounds.
    """
    cols = ["pattern", "volatile", "keys", "key_share", "logical_keys", "versions_per_logical_key",
            "memory_bytes", "memory_share", "median_ttl_s", "single_use", "seen", "gone", "new", "short_ttl",
            "miss_share", "miss_share_source"]
    sampled = keys if keys is not None and len(keys) else pd.DataFrame(columns=["key", "ttl_s", "memory_bytes"])
    in_sample = set(sampled["key"])
    extra = [k for k in dict.fromkeys(seen_keys or []) if k not in in_sample]
    df = pd.concat([sampled.assign(sampled=True),
                    pd.DataFrame({"key": extra, "ttl_s": float("nan"), "memory_bytes": float("nan"),
                                  "sampled": False})], ignore_index=True) if extra else sampled.assign(sampled=True)
    if not len(df):
        return pd.DataFrame(columns=cols)
    seen = set(seen_keys or []) | in_sample
    gone = set(gone_keys or [])
    new = set(new_keys or [])
    df["pattern"] = [key_pattern(k)[0] for k in df["key"]]
    df["vparts"] = [volatile_parts(k) for k in df["key"]]
    df["logical"] = [logical_key(k) for k in df["key"]]
    df["is_seen"] = df["key"].isin(seen)
    df["is_gone"] = df["key"].isin(gone)
    df["is_new"] = df["key"].isin(new)
    n_sampled = int(df["sampled"].sum())
    rows = []
    for pattern, g in df.groupby("pattern", sort=False):
        parts = sorted({p for ps in g["vparts"] for p in ps})
        smp = g.loc[g["sampled"]]
        n, logical = len(smp), smp["logical"].nunique()
        ttl = smp.loc[smp["ttl_s"] >= 0, "ttl_s"]
        n_gone, n_new = int(g["is_gone"].sum()), int(g["is_new"].sum())
        little = float((1.0 / (2.0 * ttl.clip(lower=0.5))).sum()) if len(ttl) else 0.0
        turnover = max(n_gone, n_new) / window_s if window_s else 0.0
        median_ttl = float(ttl.median()) if len(ttl) else float("nan")
        rows.append({"pattern": pattern, "volatile": ", ".join(parts), "keys": n,
                     "key_share": n / n_sampled if n_sampled else 0.0,
                     "logical_keys": logical, "versions_per_logical_key": n / logical if logical else float("nan"),
                     "memory_bytes": float(smp["memory_bytes"].fillna(0).sum()),
                     "median_ttl_s": median_ttl, "single_use": bool(parts),
                     "seen": int(g["is_seen"].sum()), "gone": n_gone, "new": n_new,
                     "short_ttl": bool(median_ttl < SHORT_TTL_S) or (n == 0 and n_gone > 0),
                     "_write_rate": max(little, turnover), "_route": _route_of(pattern)})
    out = pd.DataFrame(rows)
    total_mem = out["memory_bytes"].sum()
    out["memory_share"] = out["memory_bytes"] / total_mem if total_mem else 0.0
    if misses_by_route:
        per_route_keys = out.groupby("_route")["keys"].transform("sum")
        route_miss = out["_route"].map(lambda r: float(misses_by_route.get(r, 0.0)))
        total = float(sum(misses_by_route.values()))
        out["miss_share"] = (route_miss * out["keys"] / per_route_keys / total).fillna(0.0) if total else 0.0
        out["miss_share_source"] = "app metrics by route"
    else:
        w = out["_write_rate"].sum()
        out["miss_share"] = out["_write_rate"] / w if w else float("nan")
        out["miss_share_source"] = ("estimated from writes (TTLs of the sample, names written and gone in the "
                                    "window)" if gone or new else "estimated (Little's law over TTLs)")
    out = out.sort_values(["keys", "pattern"], ascending=[False, True]).reset_index(drop=True)
    return out[cols]


def _route_of(pattern: str) -> str | None:
    """``api:<route>:...`` -> route (the lab's scheme); the app's metrics label misses by route."""
    parts = pattern.split(":")
    return parts[1] if len(parts) > 2 and parts[0] == "api" else None


def unordered_params(keys: pd.Series | list[str]) -> pd.DataFrame:
    """Logical keys stored under more than one parameter order (``a=1&b=2`` and ``b=2&a=1``):
    columns logical_key, orders (distinct orderings seen), keys."""
    rows: dict[str, dict] = {}
    for k in keys:
        for m in _QUERY.finditer(k):
            lk = logical_key(k)
            r = rows.setdefault(lk, {"logical_key": lk, "_orders": set(), "keys": 0})
            r["_orders"].add(tuple(p.split("=", 1)[0] for p in m.group(1).split("&")))
            r["keys"] += 1
            break
    out = [{"logical_key": r["logical_key"], "orders": len(r["_orders"]), "keys": r["keys"]}
           for r in rows.values() if len(r["_orders"]) > 1]
    return pd.DataFrame(out, columns=["logical_key", "orders", "keys"]).sort_values(
        "keys", ascending=False, ignore_index=True) if out else pd.DataFrame(columns=["logical_key", "orders", "keys"])


def expiry_clusters(keys: pd.DataFrame) -> dict:
    """Seconds in which many sampled keys expire together (see CLUSTER_* above).

    Uses ``expires_at`` (absolute epoch seconds, from the live sampler) when present, else ``ttl_s``.
    Returns {keys_with_ttl, peak_second, peak_keys, peak_share, clustered, clustered_keys,
    clusters: [{second, keys, share, neighbours_median}]}; ``second`` is epoch seconds with
    ``expires_at``, else seconds from the sample.
    """
    empty = {"keys_with_ttl": 0, "peak_second": None, "peak_keys": 0, "peak_share": 0.0, "clustered": False,
             "clustered_keys": 0, "clusters": []}
    if keys is None or not len(keys):
        return empty
    with_ttl = keys.loc[keys["ttl_s"] >= 0]
    if "expires_at" in with_ttl.columns and with_ttl["expires_at"].notna().all():
        sec = with_ttl["expires_at"].astype(float).floordiv(1).astype("int64")
    else:
        sec = with_ttl["ttl_s"].astype(float).floordiv(1).astype("int64")
    n = len(sec)
    if not n:
        return empty
    counts = sec.value_counts()
    by_sec = counts.to_dict()
    clusters = []
    for s_, c in counts.items():
        if c < CLUSTER_MIN_KEYS:
            break  # value_counts is sorted, the rest are smaller
        near = [by_sec[t] for t in range(s_ - CLUSTER_WINDOW_S, s_ + CLUSTER_WINDOW_S + 1)
                if abs(t - s_) > 1 and t in by_sec]  # a burst may straddle a second boundary: skip s +- 1
        base = float(pd.Series(near).median()) if near else 0.0
        if c >= CLUSTER_FACTOR * max(base, 1.0):
            clusters.append({"second": int(s_), "keys": int(c), "share": c / n, "neighbours_median": base})
    return {"keys_with_ttl": n, "peak_second": int(counts.index[0]), "peak_keys": int(counts.iloc[0]),
            "peak_share": float(counts.iloc[0] / n), "clustered": bool(clusters),
            "clustered_keys": sum(c["keys"] for c in clusters), "clusters": clusters}


def window_deltas(start: dict, end: dict) -> dict:
    """``info_deltas`` with the window measured by the server clock (``server_time``, from TIME) when both
    snapshots carry it: INFO's uptime_in_seconds is whole seconds, too coarse for a 10 s window."""
    out = info_deltas(start, end)
    if "server_time" in start and "server_time" in end:
        secs = float(end["server_time"]) - float(start["server_time"])
        if secs > 0:
            out["seconds"] = secs
            out["evicted_per_s"] = (end["evicted_keys"] - start["evicted_keys"]) / secs
            out["expired_per_s"] = (end["expired_keys"] - start["expired_keys"]) / secs
    out["lookups"] = out["hits"] + out["misses"]
    return out




def memory_findings(info: dict, keys: pd.DataFrame | None = None, working_set_bytes: float | None = None,
                    evicted_per_s: float | None = None) -> list[dict]:
    """maxmemory and maxmemory-policy judged against the data (Redis docs, "Key eviction").

    Each finding: {check, observed, problem (bool), hint}. Checks:

    * noeviction with a limit: writes fail with OOM once the limit is reached (no key is ever evicted);
    * a limit far below the working set, or below used memory;
    * memory full and evicting;
    * a volatile-* policy while sampled keys lack a TTL: those keys can never be evicted, and with no
      TTL at all the policy behaves like noeviction;
    * no limit at all (maxmemory 0): the cache grows until the host runs out of memory.
    """
    out = []
    maxmem, used, policy = int(info.get("maxmemory") or 0), int(info.get("used_memory") or 0), \
        str(info.get("maxmemory_policy", ""))
    mib = 2**20
    if maxmem == 0:
        out.append({"check": "memory limit set", "observed": f"maxmemory 0 (no limit), used {used / mib:.1f} MiB",
                    "problem": False, "hint": "set maxmemory so the cache cannot take the host's memory"})
    else:
        out.append({"check": "noeviction with a memory limit",
                    "observed": f"policy {policy}, maxmemory {maxmem / mib:.1f} MiB",
                    "problem": policy == "noeviction",
                    "hint": "with noeviction a full cache refuses writes (OOM errors); use allkeys-lru or allkeys-lfu"})
        share = used / maxmem
        out.append({"check": "memory full", "observed": f"used {used / mib:.1f} MiB = {share:.0%} of maxmemory"
                    + (f", {evicted_per_s:.1f} evictions/s" if evicted_per_s is not None else ""),
                    "problem": share >= MEMORY_FULL_SHARE or bool(evicted_per_s),
                    "hint": "raise maxmemory to hold the working set"})
        ws = working_set_bytes if working_set_bytes is not None else None
        if ws:
            out.append({"check": "limit far below the working set",
                        "observed": f"working set ~{ws / mib:.1f} MiB vs maxmemory {maxmem / mib:.1f} MiB "
                                    f"({ws / maxmem:.1f}x)",
                        "problem": ws >= FAR_BELOW_FACTOR * maxmem,
                        "hint": "size maxmemory from the working set (see the recommendation)"})
        if used > maxmem:
            out.append({"check": "limit below used memory",
                        "observed": f"used {used / mib:.1f} MiB > maxmemory {maxmem / mib:.1f} MiB",
                        "problem": True, "hint": "a limit below used memory makes Redis evict continuously"})
    if policy.startswith("volatile-") and keys is not None and len(keys):
        no_ttl = float((keys["ttl_s"] < 0).mean())
        out.append({"check": "volatile-* policy with keys lacking a TTL",
                    "observed": f"{policy}; {no_ttl:.0%} of sampled keys have no TTL",
                    "problem": no_ttl > 0,
                    "hint": "keys without a TTL are never evicted under volatile-*; give them a TTL or use "
                            "an allkeys-* policy"})
    return out
