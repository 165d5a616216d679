"""The cache diagnosis as one JSON-able dict, and a readable text rendering of it.

``build_report(snapshot)`` runs every pure analysis of ``runbook_lib.diagnose.cache_keys`` and the
recommendations on one ``collect.CacheSnapshot``; ``render_text`` turns the dict into the terminal
report. ``hypothesis_snapshots`` gives the ``Snapshots`` fields the root-cause step reads.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from runbook_lib.diagnose import cache_keys as dx
from runbook_lib.plan.cache_sizing import MAX_STALENESS_S, TARGET_HIT_RATIO, recommend
from runbook_lib.plan.cache_warming import rank_keys
from runbook_lib.sources.redis_snapshot import CacheSnapshot

# The report lists this many patterns and expiry clusters; the JSON has them all.
TOP_PATTERNS = 8
# The JSON lists this many warm candidates (logical keys by versions seen over the window).
WARM_CANDIDATES = 50


def hypothesis_snapshots(snap: CacheSnapshot) -> dict[str, Any]:
    """The cache fields of ``diagnose.hypotheses.Snapshots`` from a live snapshot:
    ``Snapshots(**hypothesis_snapshots(snap), ...)``.

    ``key_patterns`` is ``key_design`` (the columns of ``key_patterns`` and more): its ``volatile`` column
    also recognises the lab's deciseconds timestamps, session ids and unordered parameters, which
    ``key_pattern`` (kept unchanged for the recorded bundle) does not; the cache hypothesis reads only
    ``volatile`` and ``keys``."""
    return {"redis": dx.window_deltas(snap.info_start, snap.info_end),
            "ttl": dx.ttl_summary(snap.keys) if len(snap.keys) else None,
            "key_patterns": dx.key_design(snap.keys) if len(snap.keys) else None,
            "app_config": snap.app_config}


def findings(deltas: dict, snap: CacheSnapshot, ttl: dict | None, design: pd.DataFrame, clusters: dict,
             unordered: pd.DataFrame, working_set: float | None, target: float) -> list[dict]:
    """Every check with what was observed and whether it is a problem (in the order a reader fixes them)."""
    out = []
    hr = deltas["hit_ratio"]
    out.append({"check": "Redis hit ratio over the window (INFO deltas)",
                "observed": (f"{hr:.1%} ({deltas['hits']} hits, {deltas['misses']} misses in "
                             f"{deltas['seconds']:.1f} s)") if deltas["lookups"] else "no lookups in the window",
                "problem": bool(deltas["lookups"]) and hr < target,
                "hint": f"target {target:.0%}; see key design, TTL and memory below"})
    if snap.app:
        a = snap.app
        out.append({"check": "app hit ratio over the window (its own counters)",
                    "observed": (f"{a['hit_ratio']:.1%} ({a['hits']:.0f} hits, {a['misses']:.0f} misses)"
                                 if a["hits"] + a["misses"] else "no lookups in the window"),
                    "problem": bool(a["hits"] + a["misses"]) and a["hit_ratio"] < target,
                    "hint": "the app's view includes lookups Redis never saw (timeouts count as misses)"})
    out.append({"check": "evictions", "observed": f"{deltas['evicted_per_s']:.1f} keys/s evicted",
                "problem": deltas["evicted_per_s"] > 0, "hint": "keys are pushed out before they expire: memory"})
    out.append({"check": "expirations", "observed": f"{deltas['expired_per_s']:.1f} keys/s expired",
                "problem": False, "hint": "read together with the TTL distribution"})
    out += dx.memory_findings(snap.info_end, snap.keys, working_set, deltas["evicted_per_s"])
    if ttl and ttl["with_ttl"]:
        out.append({"check": f"TTLs under {dx.SHORT_TTL_S} s",
                    "observed": f"median TTL {ttl['median_ttl_s']:.0f} s; {ttl['short_ttl_share']:.0%} of "
                                f"{ttl['with_ttl']} keys with a TTL are under {dx.SHORT_TTL_S} s; "
                                f"{ttl['no_ttl']} without a TTL",
                    "problem": ttl["short_ttl_share"] >= 0.5, "hint": "see the TTL recommendation"})
    if len(design):
        single = design.loc[design["single_use"]]
        share = float(single["keys"].sum() / design["keys"].sum())
        parts = sorted({p for v in single["volatile"] for p in v.split(", ") if p})
        out.append({"check": "single-use keys (volatile key parts)",
                    "observed": f"{share:.0%} of sampled keys" + (f" ({', '.join(parts)})" if parts else ""),
                    "problem": share >= 0.5, "hint": "normalize keys: drop timestamps/ids, sort parameters"})
    out.append({"check": "same parameters in different orders",
                "observed": f"{len(unordered)} logical keys stored under several parameter orders",
                "problem": bool(len(unordered)), "hint": "sort query parameters when building the key"})
    out.append({"check": "expiry clustering",
                "observed": (f"{clusters['clustered_keys']} sampled keys expire in {len(clusters['clusters'])} "
                             f"crowded second(s); peak {clusters['peak_keys']} keys in one second")
                if clusters["keys_with_ttl"] else "no keys with a TTL",
                "problem": clusters["clustered"], "hint": "add random jitter to TTLs of keys written in bulk"})
    return out


def build_report(snap: CacheSnapshot, target: float = TARGET_HIT_RATIO,
                 max_staleness_s: float = MAX_STALENESS_S) -> dict[str, Any]:
    deltas = dx.window_deltas(snap.info_start, snap.info_end)
    keys = snap.keys
    misses_by_route = {r: v["misses"] for r, v in snap.app["by_route"].items()} if snap.app else None
    design = dx.key_design(keys, misses_by_route)
    ttl = dx.ttl_summary(keys) if len(keys) else None
    clusters = dx.expiry_clusters(keys)
    unordered = dx.unordered_params(keys["key"]) if len(keys) else dx.unordered_params([])
    rec = recommend(snap.info_end, deltas, keys, snap.app_config, target, max_staleness_s, snap.seen_keys or None)
    seen = pd.DataFrame({"key": snap.seen_keys}) if snap.seen_keys else keys
    popular = [{"key": i.key, "versions_seen": int(i.score)} for i in rank_keys(seen, WARM_CANDIDATES)]
    ws = rec["memory"]["working_set_bytes"] or None
    ttl_hist = (keys.loc[keys["ttl_s"] >= 0, "ttl_s"].describe(percentiles=[0.1, 0.5, 0.9]).to_dict()
                if ttl and ttl["with_ttl"] else {})
    report = {
        "endpoint": snap.endpoint,
        "window": {"seconds": deltas["seconds"], "start": snap.info_start.get("taken_at"),
                   "end": snap.info_end.get("taken_at")},
        "redis": {**deltas, "dbsize": snap.info_end.get("dbsize"),
                  "redis_version": snap.info_end.get("redis_version")},
        "app": snap.app,
        "app_config": snap.app_config,
        "sample": {"keys": len(keys), "of_dbsize": snap.info_end.get("dbsize"), "seconds": snap.sample_seconds,
                   "memory_bytes": float(keys["memory_bytes"].fillna(0).sum()) if len(keys) else 0.0},
        "ttl": {**(ttl or {}), "distribution": ttl_hist},
        "key_design": design.to_dict("records"),
        "unordered_params": unordered.to_dict("records"),
        "expiry": clusters,
        "warm_candidates": popular,
        "names_seen": len(snap.seen_keys),
        "recommendations": rec,
    }
    report["findings"] = findings(deltas, snap, ttl, design, clusters, unordered, ws, target)
    report["problems"] = [f["check"] for f in report["findings"] if f["problem"]]
    return clean(report)


def clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _mib(n: float | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def render_text(r: dict[str, Any]) -> str:
    """The terminal report: headline figures, findings (problems first marked !), patterns, recommendations."""
    d, lines = r["redis"], []
    w = r["window"]["seconds"]
    lines.append(f"cache diagnosis of {r['endpoint']} over {w:.1f} s (Redis {d.get('redis_version') or '?'})")
    hr = "n/a" if d["hit_ratio"] is None else f"{d['hit_ratio']:.1%}"
    lines.append(f"  hit ratio {hr} ({d['hits']} hits / {d['misses']} misses), "
                 f"evicted {d['evicted_per_s']:.1f}/s, expired {d['expired_per_s']:.1f}/s")
    if r.get("app"):
        a = r["app"]
        ahr = "n/a" if a["hit_ratio"] is None else f"{a['hit_ratio']:.1%}"
        lines.append(f"  app hit ratio {ahr}: " + ", ".join(
            f"{route} {v['hit_ratio']:.0%}" if v["hit_ratio"] is not None else f"{route} n/a"
            for route, v in a["by_route"].items()))
    lines.append(f"  memory {_mib(d['used_memory'])} of maxmemory "
                 f"{'no limit' if not d['maxmemory'] else _mib(d['maxmemory'])}, policy {d['maxmemory_policy']}, "
                 f"{d['dbsize']} keys; sampled {r['sample']['keys']} in {r['sample']['seconds']:.2f} s, "
                 f"{r['names_seen']} names seen over the window")
    lines.append("")
    lines.append("findings")
    for f in r["findings"]:
        lines.append(f"  {'!' if f['problem'] else ' '} {f['check']}: {f['observed']}")
    if r["key_design"]:
        lines.append("")
        lines.append("key patterns (sampled)              keys  share  logical  mem share  miss share  volatile")
        for p in r["key_design"][:TOP_PATTERNS]:
            ms = "   ?" if p["miss_share"] is None else f"{p['miss_share']:>6.0%}"
            lines.append(f"  {p['pattern'][:34]:<34} {p['keys']:>5} {p['key_share']:>6.0%} {p['logical_keys']:>8} "
                         f"{p['memory_share']:>10.0%} {ms:>11}  {p['volatile'] or '-'}")
        if len(r["key_design"]) > TOP_PATTERNS:
            lines.append(f"  ... {len(r['key_design']) - TOP_PATTERNS} more patterns (--json has them all)")
    rec = r["recommendations"]
    lines.append("")
    lines.append("recommendations")
    for name, label in (("key_scheme", "key scheme"), ("ttl", "TTL"), ("memory", "maxmemory"), ("policy", "policy")):
        x = rec[name]
        value = x.get("recommended_s", x.get("recommended"))
        now = x.get("current_s", x.get("current"))
        lines.append(f"  {label}: {value if value is not None else 'unknown (kept)'}"
                     + (f" (now {now})" if now is not None and now != value else ""))
        lines += [f"      - {why}" for why in x["reasoning"]]
    if rec["actions"]:
        lines.append("  actions: " + "; ".join(f"{a['kind']} {a['inputs']}" for a in rec["actions"]))
    return "\n".join(lines)
