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
