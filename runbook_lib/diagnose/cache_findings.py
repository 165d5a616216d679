"""The cache diagnosis core: every finding judged by its share of what hurts (the misses).

Notebook 02 (the cache hypothesis) and ``runbook diagnose cache`` both read :func:`judge`, so they cannot
disagree. A finding is a dict ``{check, observed, problem, hint, share, weight, families}``:

* ``share``: the share of what hurts the finding accounts for, ``share_of`` says of what: the window's misses
  for key families, the keys that left (expired or evicted) for evictions; None when it is not a share;
* ``problem``: the cache misses its target *and* the cause behind the finding carries at least
  ``MISS_SHARE_MATTERS`` of the misses. A healthy cache (hit ratio at target) has no problem, however its
  keys look: a single-use family that causes few misses of a cache at 95 % is not what hurts;
* ``weight``: how much the finding counts as evidence for the cache hypothesis (0: shown, not evidence);
* ``families``: the key families (patterns) behind it, each with its miss share, TTL and what was seen.

Miss attribution per family comes from ``cache_keys.key_design``: the app's own per-route miss counters when
given, else writes estimated from the sample (Little's law over TTLs) and from names seen during the window
that were gone at its end (a family whose keys expire before any SCAN of the sample sees them still shows
there). Pure: no I/O.
"""

from __future__ import annotations

import math

import pandas as pd

from runbook_lib.diagnose import cache_keys as dx

# A family (or a kind of cause) matters when it carries at least a fifth of the misses: fixing it moves the
# miss rate by at least 20 %, the same order as the 5-point margin the sizing adds to the SLO at a 75-85 %
# hit ratio. Below that, it is shown with its share but not flagged.
MISS_SHARE_MATTERS = 0.2
# Families listed in a finding's "observed" text (the JSON has them all).
FAMILIES_SHOWN = 3


def _families(design: pd.DataFrame, mask: pd.Series) -> list[dict]:
    rows = design.loc[mask].sort_values("miss_share", ascending=False)
    return [
        {
            "pattern": r.pattern,
            "miss_share": _num(r.miss_share),
            "keys": int(r.keys),
            "median_ttl_s": _num(r.median_ttl_s),
            "seen": int(r.seen),
            "gone": int(r.gone),
            "volatile": r.volatile,
        }
        for r in rows.itertuples()
    ]


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _share(fams: list[dict]) -> float:
    return float(sum(f["miss_share"] or 0.0 for f in fams))


def _listed(fams: list[dict], what) -> str:
    shown = [
        f"{f['pattern'][:48]} {f['miss_share'] or 0:.0%} of misses ({what(f)})" for f in fams[:FAMILIES_SHOWN]
    ]
    more = len(fams) - FAMILIES_SHOWN
    return "; ".join(shown) + (f"; {more} more" if more > 0 else "")


def _ttl_text(f: dict) -> str:
    if f["median_ttl_s"] is not None:
        return f"median TTL {f['median_ttl_s']:.0f} s"
    return f"{f['gone']} of {f['seen']} names seen expired in the window, none alive in the sample"


def judge(
    deltas: dict,
    design: pd.DataFrame,
    info_end: dict,
    target: float,
    *,
    keys: pd.DataFrame | None = None,
    app: dict | None = None,
    clusters: dict | None = None,
    unordered: pd.DataFrame | None = None,
    working_set: float | None = None,
) -> list[dict]:
    """Every cache check with what was observed, its share of the misses and whether it is a problem, in the
    order a reader fixes them. ``deltas``: ``cache_keys.window_deltas``; ``design``: ``cache_keys.key_design``."""
    out: list[dict] = []
    hr, lookups = deltas.get("hit_ratio"), deltas.get("lookups", deltas["hits"] + deltas["misses"])
    missing_target = bool(lookups) and hr is not None and not math.isnan(hr) and hr < target
    if app and app.get("hits", 0) + app.get("misses", 0):
        missing_target = missing_target or (app["hit_ratio"] is not None and app["hit_ratio"] < target)
    out.append(
        {
            "check": "Redis hit ratio over the window (INFO deltas)",
            "observed": (
                f"{hr:.1%} ({deltas['hits']} hits, {deltas['misses']} misses in {deltas['seconds']:.1f} s)"
            )
            if lookups
            else "no lookups in the window",
            "problem": bool(lookups) and hr < target,
            "share": None,
            "weight": 2,
            "families": [],
            "hint": f"target {target:.0%}; the checks below say which keys cause the misses",
        }
    )
    if app:
        a = app
        out.append(
            {
                "check": "app hit ratio over the window (its own counters)",
                "observed": (
                    f"{a['hit_ratio']:.1%} ({a['hits']:.0f} hits, {a['misses']:.0f} misses)"
                    if a["hits"] + a["misses"]
                    else "no lookups in the window"
                ),
                "problem": bool(a["hits"] + a["misses"]) and a["hit_ratio"] < target,
                "share": None,
                "weight": 0,
                "families": [],
                "hint": "the app's view includes lookups Redis never saw (timeouts count as misses)",
            }
        )
    if len(design):
        source = str(design["miss_share_source"].iloc[0])
        single = _families(design, design["single_use"])
        share = _share(single)
        parts = sorted({p for f in single for p in f["volatile"].split(", ") if p})
        out.append(
            {
                "check": "single-use keys (volatile key parts)",
                "observed": (
                    f"{share:.0%} of misses ({source}) from {len(single)} famil"
                    f"{'y' if len(single) == 1 else 'ies'} with {', '.join(parts)}: "
                    + _listed(single, lambda f: f"{f['keys']} sampled keys")
                )
                if single
                else "no key family carries a volatile part",
                "problem": missing_target and share >= MISS_SHARE_MATTERS,
                "share": share,
                "share_of": "misses",
                "weight": 2,
                "families": single,
                "hint": "normalize keys: drop timestamps/ids, sort parameters",
            }
        )
        short = _families(design, design["short_ttl"] & ~design["single_use"])
        share = _share(short)
        out.append(
            {
                "check": f"key families with TTLs under {dx.SHORT_TTL_S} s",
                "observed": (
                    f"{share:.0%} of misses ({source}) from {len(short)} famil"
                    f"{'y' if len(short) == 1 else 'ies'}: " + _listed(short, _ttl_text)
                )
                if short
                else f"no reused key family lives under {dx.SHORT_TTL_S} s",
                "problem": missing_target and share >= MISS_SHARE_MATTERS,
                "share": share,
                "share_of": "misses",
                "weight": 1,
                "families": short,
                "hint": "raise the TTL of these families (see the TTL recommendation)",
            }
        )
    evicted = deltas.get("evicted_per_s", 0.0)
    expired = deltas.get("expired_per_s", 0.0)
    ev_share = evicted / (evicted + expired) if evicted + expired else 0.0
    out.append(
        {
            "check": "evictions",
            "observed": f"{evicted:.1f} keys/s evicted, {expired:.1f} keys/s expired "
            f"({ev_share:.0%} of the keys that left were evicted)",
            "problem": missing_target and evicted > 0 and ev_share >= MISS_SHARE_MATTERS,
            "share": ev_share,
            "share_of": "keys that left",
            "weight": 1,
            "families": [],
            "hint": "keys are pushed out before they expire: give Redis memory",
        }
    )
    for f in dx.memory_findings(info_end, keys, working_set, evicted):
        out.append({**f, "share": None, "weight": 0, "families": []})
    if unordered is not None:
        out.append(
            {
                "check": "same parameters in different orders",
                "observed": f"{len(unordered)} logical keys stored under several parameter orders",
                "problem": bool(len(unordered)) and missing_target,
                "share": None,
                "weight": 0,
                "families": [],
                "hint": "sort query parameters when building the key",
            }
        )
    if clusters is not None:
        out.append(
            {
                "check": "expiry clustering",
                "observed": (
                    f"{clusters['clustered_keys']} sampled keys expire in {len(clusters['clusters'])} "
                    f"crowded second(s); peak {clusters['peak_keys']} keys in one second"
                )
                if clusters["keys_with_ttl"]
                else "no keys with a TTL",
                # a latent stampede risk: a problem unless the window shows the cache meeting its target
                "problem": clusters["clustered"] and (missing_target or not lookups),
                "share": None,
                "weight": 0,
                "families": [],
                "hint": "add random jitter to TTLs of keys written in bulk (a stampede risk even when healthy)",
            }
        )
    return out


def per_family_recommendations(findings: list[dict], ttl_recommended_s: float | None) -> list[dict]:
    """What to do about each family that matters (at least ``MISS_SHARE_MATTERS`` of the misses, in a finding
    that is a problem), with the share of misses it should remove: a key fix for single-use families, a TTL for short-lived ones."""
    out = []
    for f in findings:
        if not f["problem"]:  # a healthy cache gets no recommendation, whatever its keys look like
            continue
        for fam in f["families"]:
            if (fam["miss_share"] or 0.0) < MISS_SHARE_MATTERS:
                continue
            if f["check"].startswith("single-use"):
                out.append(
                    {
                        "pattern": fam["pattern"],
                        "do": f"normalize the key (drop {fam['volatile']})",
                        "removes_up_to": fam["miss_share"],
                        "why": "each request writes a new name, so no stored value is ever read again",
                    }
                )
            elif f["check"].startswith("key families with TTLs"):
                ttl = f"{ttl_recommended_s:g} s" if ttl_recommended_s else "the recommended TTL"
                out.append(
                    {
                        "pattern": fam["pattern"],
                        "do": f"raise its TTL to {ttl} ({_ttl_text(fam)})",
                        "removes_up_to": fam["miss_share"],
                        "why": "its keys expire before the next request for them",
                    }
                )
    return out
