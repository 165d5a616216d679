"""The cache diagnosis as one JSON-able dict, and a readable text rendering of it.

``build_report(snapshot)`` runs every pure analysis of ``runbook_lib.diagnose.cache_keys`` and the
recommendations on one ``collect.CacheSnapshot``; ``render_text`` turns the dict into the terminal
report. ``hypothesis_snapshots`` gives the ``Snapshots`` fields the root-cause step reads.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from runbook_lib.diagnose import cache_findings as cf
from runbook_lib.diagnose import cache_keys as dx
from runbook_lib.model import CacheSnapshot
from runbook_lib.plan.cache_sizing import MAX_STALENESS_S, TARGET_HIT_RATIO, recommend
from runbook_lib.plan.cache_warming import rank_keys

# The report lists this many patterns and expiry clusters; the JSON has them all.
TOP_PATTERNS = 8
# The JSON lists this many warm candidates (logical keys by versions seen over the window).
WARM_CANDIDATES = 50


def analyse(snap: CacheSnapshot, target: float = TARGET_HIT_RATIO, max_staleness_s: float = MAX_STALENESS_S,
            sizing_target: float | None = None) -> dict[str, Any]:
    """Every pure analysis of one snapshot: deltas, key families, findings (``diagnose.cache_findings``, judged
    against ``target``), the recommendation (sized for ``sizing_target``, default ``target``). Notebook 02 and
    ``runbook diagnose cache`` both start here."""
    deltas = dx.window_deltas(snap.info_start, snap.info_end)
    keys = snap.keys
    misses_by_route = {r: v["misses"] for r, v in snap.app["by_route"].items()} if snap.app else None
    design = dx.key_design(keys, misses_by_route, seen_keys=snap.seen_keys or None,
                           gone_keys=snap.gone_keys or None, new_keys=snap.new_keys or None,
                           window_s=deltas["seconds"])
    ttl = dx.ttl_summary(keys) if len(keys) else None
    clusters = dx.expiry_clusters(keys)
    unordered = dx.unordered_params(keys["key"]) if len(keys) else dx.unordered_params([])
    rec = recommend(snap.info_end, deltas, keys, snap.app_config, sizing_target or target, max_staleness_s,
                    snap.seen_keys or None)
    ws = rec["memory"]["working_set_bytes"] or None
    found = cf.judge(deltas, design, snap.info_end, target, keys=keys, app=snap.app, clusters=clusters,
                     unordered=unordered, working_set=ws)
    rec["per_family"] = cf.per_family_recommendations(found, rec["ttl"].get("recommended_s"))
    return {"deltas": deltas, "design": design, "ttl": ttl, "clusters": clusters, "unordered": unordered,
            "recommendations": rec, "findings": found}


def hypothesis_snapshots(snap: CacheSnapshot, target: float = TARGET_HIT_RATIO,
                         sizing_target: float | None = None) -> dict[str, Any]:
    """The cache fields of ``model.Snapshots`` from a live snapshot: ``Snapshots(**hypothesis_snapshots(snap))``
    (the findings and the plan are the ones ``runbook diagnose cache`` reports on the same data)."""
    a = analyse(snap, target, sizing_target=sizing_target)
    return {"redis": a["deltas"], "ttl": a["ttl"], "key_patterns": a["design"], "keys": snap.keys,
            "app_config": snap.app_config, "cache_findings": a["findings"], "cache_plan": a["recommendations"]}


def build_report(snap: CacheSnapshot, target: float = TARGET_HIT_RATIO,
                 max_staleness_s: float = MAX_STALENESS_S) -> dict[str, Any]:
    a = analyse(snap, target, max_staleness_s)
    deltas, keys, design, ttl = a["deltas"], snap.keys, a["design"], a["ttl"]
    seen = pd.DataFrame({"key": snap.seen_keys}) if snap.seen_keys else keys
    popular = [{"key": i.key, "versions_seen": int(i.score)} for i in rank_keys(seen, WARM_CANDIDATES)]
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
        "unordered_params": a["unordered"].to_dict("records"),
        "expiry": a["clusters"],
        "warm_candidates": popular,
        "names_seen": len(snap.seen_keys),
        "names_gone": len(snap.gone_keys),
        "names_new": len(snap.new_keys),
        "recommendations": a["recommendations"],
        "findings": a["findings"],
    }
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
    if r.get("problems"):
        lines.append(f"  (! = a problem: the cache misses its target and the cause carries >= "
                     f"{cf.MISS_SHARE_MATTERS:.0%} of the misses)")
    if r["key_design"]:
        lines.append("")
        lines.append("key families (by miss share)        keys  share  logical  mem share  miss share   TTL  gone  "
                     "volatile")
        fams = sorted(r["key_design"], key=lambda p: -(p["miss_share"] or 0.0))
        for p in fams[:TOP_PATTERNS]:
            ms = "   ?" if p["miss_share"] is None else f"{p['miss_share']:>6.0%}"
            ttl = "   -" if p["median_ttl_s"] is None else f"{p['median_ttl_s']:>4.0f}"
            lines.append(f"  {p['pattern'][:34]:<34} {p['keys']:>5} {p['key_share']:>6.0%} {p['logical_keys']:>8} "
                         f"{p['memory_share']:>10.0%} {ms:>11} {ttl:>5} {p['gone']:>5}  {p['volatile'] or '-'}")
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
    for fam in rec.get("per_family", []):
        lines.append(f"  family {fam['pattern']}: {fam['do']}; removes up to {fam['removes_up_to']:.0%} of misses "
                     f"({fam['why']})")
    if rec["actions"]:
        lines.append("  actions: " + "; ".join(f"{a['kind']} {a['inputs']}" for a in rec["actions"]))
    return "\n".join(lines)
