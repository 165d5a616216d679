"""Is a recorded bundle the D2 incident the project exists for? The recorder's self-check (issue 18).

A bundle recorded from the lab is only worth bundling when it tells the whole story: a healthy baseline, the
incident with every symptom the write-up names (p95 up by an order of magnitude, cache hits under 10 %, heavy
database load, 5xx from pool exhaustion around 10 %, CPU and memory normal), the runbook's fixes applied, the
alerts firing and resolving, and a recovery long enough to be judged. ``problems`` lists, in one sentence each,
every way a bundle falls short; the recorder refuses to write one that has any (``runbook record --shape d2``),
so a recording on a loaded machine cannot quietly replace the bundled incident.

Phase medians are compared, never single samples: a 5 s sample is noisy and the lab's incident starts with the
deploy, not with the first slow request. The phases are the bundle's own (``Manifest.phases``, derived by the
recorder from the events).
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.diagnose.hypotheses import CPU_SATURATED
from runbook_lib.settings import Slo
from runbook_lib.sources.fixture_bundle import FixtureBundle
from runbook_lib.validate.before_after import SETTLE_AFTER_CHANGE

# The write-up: "API p95 from 40 ms to 800 ms" (20x); the issue asks for an order of magnitude or more.
P95_RISE_MIN = 10.0
# The write-up: "cache hit ratio under 10 %".
INCIDENT_HIT_RATIO_MAX = 0.10
# The write-up: "10 % 5xx"; issue 18 accepts 3-20 % (pool exhaustion on a 2-core lab is not exact).
INCIDENT_ERROR_RATIO = (0.03, 0.20)
# "Heavy database load": DB queries/s at least this multiple of the baseline's (the lab's N+1 and misses give
# ~40x; the write-up's 460 -> 4,900 queries/s is ~10x).
DB_LOAD_RISE_MIN = 3.0
# "Memory normal": the incident's median memory within this multiple of the baseline's.
MEMORY_RISE_MAX = 1.5
# A healthy baseline long enough for the window fit (diagnose.incident_window needs >= 10 samples a side) and
# for 05's matched windows: two minutes.
BASELINE_MIN = pd.Timedelta(minutes=2)
# The recovery after the last change: 05 judges from SETTLE_AFTER_CHANGE after it on, over a window as long as
# the incident's "before" one; five minutes leaves room for both at the lab's 5 s step.
RECOVERY_MIN = pd.Timedelta(minutes=5)
# The evidence the recovery is judged on: p95 back within the SLO and the 5xx under it.
D2 = "d2"
SHAPES = (D2,)


def phase_median(df: pd.DataFrame, name: str, span: tuple) -> float | None:
    """The median of signal ``name`` over [start, end) of ``span``; None without data."""
    if name not in df.columns:
        return None
    seg = df[name].loc[(df.index >= span[0]) & (df.index < span[1])].dropna()
    return float(seg.median()) if len(seg) else None


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "no data"
    return f"{x:.1%}" if pct else f"{x:.3g}"


def problems(bundle: FixtureBundle, slo: Slo) -> list[str]:
    """Every way ``bundle`` falls short of the D2 incident's shape; [] when it has it."""
    m = bundle.manifest
    out: list[str] = []
    phases = {k: (pd.Timestamp(v[0]), pd.Timestamp(v[1])) for k, v in m.phases.items() if len(v) == 2}
    missing = [p for p in ("baseline", "incident", "recovery") if p not in phases]
    if missing:
        return [f"no {', '.join(missing)} phase in bundle.yaml (the recorder derives them from the deploy and "
                "remediation events)"]
    df = bundle.signals
    base, inc, rec = phases["baseline"], phases["incident"], phases["recovery"]

    if base[1] - base[0] < BASELINE_MIN:
        out.append(f"the healthy baseline lasts {(base[1] - base[0]).total_seconds():.0f} s, "
                   f"less than {BASELINE_MIN.total_seconds():.0f} s")
    p95 = {k: phase_median(df, "latency_p95_ms", span) for k, span in (("b", base), ("i", inc), ("r", rec))}
    err = {k: phase_median(df, "error_ratio", span) for k, span in (("b", base), ("i", inc), ("r", rec))}
    if p95["b"] is None or p95["b"] > slo.latency_p95_ms or (err["b"] or 0.0) > slo.error_ratio:
        out.append(f"the baseline is not healthy: p95 {_fmt(p95['b'])} ms (SLO {slo.latency_p95_ms:g}), "
                   f"5xx {_fmt(err['b'], True)} (SLO {slo.error_ratio:.0%})")
    if p95["b"] and p95["i"] is not None and p95["i"] < P95_RISE_MIN * p95["b"]:
        out.append(f"p95 rose {p95['i'] / p95['b']:.1f}x ({_fmt(p95['b'])} -> {_fmt(p95['i'])} ms), "
                   f"less than {P95_RISE_MIN:g}x")
    hits = phase_median(df, "cache_hit_ratio", inc)
    if hits is None or hits >= INCIDENT_HIT_RATIO_MAX:
        out.append(f"the cache hit ratio in the incident is {_fmt(hits, True)}, not under "
                   f"{INCIDENT_HIT_RATIO_MAX:.0%}")
    lo, hi = INCIDENT_ERROR_RATIO
    if err["i"] is None or not lo <= err["i"] <= hi:
        out.append(f"5xx in the incident {_fmt(err['i'], True)}, outside {lo:.0%}-{hi:.0%} (pool exhaustion)")
    db_b, db_i = phase_median(df, "db_query_rate", base), phase_median(df, "db_query_rate", inc)
    if not db_b or db_i is None or db_i < DB_LOAD_RISE_MIN * db_b:
        out.append(f"DB queries/s {_fmt(db_b)} -> {_fmt(db_i)}: not {DB_LOAD_RISE_MIN:g}x heavier in the incident")
    cpu = phase_median(df, "cpu_utilization", inc)
    if cpu is not None and cpu >= CPU_SATURATED:
        out.append(f"CPU {cpu:.0%} in the incident: saturated (the D2 incident's CPU is normal)")
    mem_b, mem_i = phase_median(df, "memory_utilization", base), phase_median(df, "memory_utilization", inc)
    if mem_b and mem_i is not None and mem_i > MEMORY_RISE_MAX * mem_b:
        out.append(f"memory rose {mem_i / mem_b:.1f}x in the incident (the D2 incident's memory is normal)")

    changes = sorted(pd.Timestamp(e.time) for e in m.events if e.kind == "remediation")
    if not changes:
        out.append("no remediation event: the runbook's applied changes are not in the bundle")
    else:
        recovered = df.index.max() - changes[-1]
        if recovered < RECOVERY_MIN:
            out.append(f"{recovered.total_seconds():.0f} s of recovery after the last change, less than "
                       f"{RECOVERY_MIN.total_seconds():.0f} s")
        settled = (changes[-1] + SETTLE_AFTER_CHANGE, df.index.max() + pd.Timedelta(seconds=1))
        p95_after, err_after = phase_median(df, "latency_p95_ms", settled), phase_median(df, "error_ratio", settled)
        if p95_after is None or p95_after > slo.latency_p95_ms or (err_after or 0.0) > slo.error_ratio:
            out.append(f"not recovered after the fixes: p95 {_fmt(p95_after)} ms, 5xx {_fmt(err_after, True)} "
                       f"(SLO {slo.latency_p95_ms:g} ms, {slo.error_ratio:.0%})")
    alerts = [e for e in m.events if e.kind == "alert"]
    fired = [e for e in alerts if e.label.endswith(" firing") and inc[0] <= pd.Timestamp(e.time) <= inc[1]]
    fixed_from = changes[0] if changes else inc[1]
    resolved = [e for e in alerts if e.label.endswith(" resolved") and pd.Timestamp(e.time) > fixed_from]
    if not fired or not resolved:
        out.append(f"alerts: {len(fired)} firing in the incident, {len(resolved)} resolved after the fix "
                   "(load the generated rules into the recorded Prometheus; `runbook lab up` does)")
    return out
